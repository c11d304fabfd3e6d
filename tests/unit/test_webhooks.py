"""The webhooks consumer's pure logic: submitted, changed and retracted in any arrival order,
training examples by revision, addressing, the retry schedule and the signature."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook

from feedbackloop.contract import decode_message, load_output_samples
from services.webhooks.admin import check_event_types, check_secret, generate_secret
from services.webhooks.delivery import signed_headers
from services.webhooks.processing import (
    ALL_TENANTS,
    AlertNotice,
    CurrentSignal,
    Endpoint,
    ExampleNotice,
    FeedbackNotice,
    Notification,
    RetryPolicy,
    address,
    advance_examples,
    advance_feedback,
    alert_notifications,
    process_message,
)

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
SIGNAL = ("acme", "sig-1")


def _notice(minute: int, value: str | None, *, signal: str | None = "sig-1") -> FeedbackNotice:
    """A thumb (`value` up or down) or a retraction (None) of one identity at T0 + minute."""
    event_id = uuid.UUID(int=minute + 1)
    return FeedbackNotice(
        tenant_id="acme", event_id=event_id, response_id="r1", signal=signal,
        order=(T0 + timedelta(minutes=minute), event_id), retracted=value is None,
        value={"kind": "thumb"} if value is None else {"kind": "thumb", "thumb": value},
        meta={"occurred_at": (T0 + timedelta(minutes=minute)).isoformat(), "event_id": str(event_id)},
    )


def _replay(notifications: list[Notification]) -> str | None:
    """What a receiver that applies every notification believes the signal is now."""
    belief: str | None = None
    for n in notifications:
        if n.event_type == "feedback.retracted":
            belief = None
        else:
            belief = n.body["data"]["signal"]["thumb"]
    return belief


def test_a_flip_then_a_retraction_in_order() -> None:
    found, stored = advance_feedback({}, [_notice(0, "down"), _notice(1, "up"), _notice(2, None)])
    assert [n.event_type for n in found] == ["feedback.submitted", "feedback.changed",
                                             "feedback.retracted"]
    changed = found[1].body["data"]
    assert changed["signal"]["thumb"] == "up" and changed["previous"]["thumb"] == "down"
    assert found[2].body["data"]["previous"]["thumb"] == "up" and "signal" not in found[2].body["data"]
    assert found[1].body["data"]["signal_id"] == "sig-1"
    assert stored[SIGNAL].retracted and stored[SIGNAL].order[0] == T0 + timedelta(minutes=2)


def test_a_later_submission_after_a_retraction_is_new_again() -> None:
    found, _ = advance_feedback({}, [_notice(0, "up"), _notice(1, None), _notice(2, "down")])
    assert [n.event_type for n in found] == ["feedback.submitted", "feedback.retracted",
                                             "feedback.submitted"]


HISTORY = [_notice(0, "up"), _notice(1, "down"), _notice(2, None), _notice(3, "up")]


@pytest.mark.parametrize("arrival", list(itertools.permutations(range(len(HISTORY)))))
@pytest.mark.parametrize("one_batch", [True, False], ids=["one batch", "one per batch"])
def test_any_arrival_order_ends_in_the_current_state(arrival: tuple[int, ...], one_batch: bool) -> None:
    events = [HISTORY[i] for i in arrival]
    stored: dict[Any, CurrentSignal] = {}
    found: list[Notification] = []
    for batch in ([events] if one_batch else [[e] for e in events]):
        notes, changed = advance_feedback(stored, batch)
        stored |= changed
        found += notes
    latest = max(HISTORY, key=lambda n: n.order)
    assert stored[SIGNAL].order == latest.order and stored[SIGNAL].retracted == latest.retracted
    assert _replay(found) == (None if latest.retracted else latest.value["thumb"])
    # Notifications only ever move forward in the identity's order, and start with a new one.
    orders = [next(e.order for e in HISTORY if e.event_id == n.source_id) for n in found]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    assert found[0].event_type == "feedback.submitted"
    for before, after in itertools.pairwise(found):
        if before.event_type == "feedback.retracted":
            assert after.event_type == "feedback.submitted"
        else:
            assert after.event_type in ("feedback.changed", "feedback.retracted")


def test_an_older_event_arriving_late_is_silent_and_a_retraction_of_nothing_too() -> None:
    found, _ = advance_feedback({}, [_notice(5, "up"), _notice(1, "down")])
    assert [n.event_type for n in found] == ["feedback.submitted"]
    nothing, stored = advance_feedback({}, [_notice(2, None)])
    assert nothing == [] and stored[SIGNAL].retracted
    # ...and an older submission arriving after that retraction stays silent too.
    assert advance_feedback(stored, [_notice(1, "up")])[0] == []


def test_feedback_naming_nobody_is_always_new() -> None:
    found, stored = advance_feedback({}, [_notice(0, "up", signal=None), _notice(1, "up", signal=None)])
    assert [n.event_type for n in found] == ["feedback.submitted"] * 2 and stored == {}


def _example(revision: int | None) -> ExampleNotice:
    example_id = uuid.UUID(int=7)
    return ExampleNotice("acme", uuid.uuid4(), example_id, revision,
                         {"example_id": str(example_id), "revision": revision})


def test_training_examples_by_revision() -> None:
    found, stored = advance_examples({}, [
        _example(1), _example(2), _example(2), _example(1), _example(None), _example(None),
        _example(1),
    ])
    assert [n.event_type for n in found] == [
        "training_example.created", "training_example.revised", "training_example.retracted",
        "training_example.created",
    ]
    assert stored[("acme", uuid.UUID(int=7))].revision == 1


def test_every_output_sample_makes_a_notice() -> None:
    kinds = set()
    for docs in load_output_samples().values():
        for doc in docs:
            notice = process_message(decode_message(orjson.dumps(doc)))
            assert isinstance(notice, ExampleNotice | AlertNotice)
            kinds.add(type(notice))
    assert kinds == {ExampleNotice, AlertNotice}
    alert = process_message(decode_message(orjson.dumps(load_output_samples()["alert.state_changed"][0])))
    assert isinstance(alert, AlertNotice)
    [note] = alert_notifications([alert])
    assert note.body["type"] == "alert.state_changed" and note.body["data"]["rule"] == "approval_below"
    assert note.body["data"]["previous"] == "ok" and note.body["data"]["tenant_id"] == "acme"


def test_addressing_follows_tenants_and_subscriptions() -> None:
    mine = Endpoint(uuid.uuid4(), "acme", frozenset({"feedback.changed", "alert.state_changed"}))
    theirs = Endpoint(uuid.uuid4(), "other", frozenset({"feedback.changed"}))
    everyone = Endpoint(uuid.uuid4(), ALL_TENANTS, frozenset({"alert.state_changed"}))
    source = uuid.uuid4()
    notes = [
        Notification("acme", "feedback.changed", source, {}),
        Notification("acme", "feedback.submitted", uuid.uuid4(), {}),
        Notification("acme", "alert.state_changed", uuid.uuid4(), {}),
    ]
    deliveries = address(notes, [mine, theirs, everyone])
    assert sorted((d.event_type, d.tenant_id) for d in deliveries) == [
        ("alert.state_changed", ALL_TENANTS), ("alert.state_changed", "acme"),
        ("feedback.changed", "acme"),
    ]
    # The same message to the same endpoint is the same delivery, however often it is consumed.
    [again] = address(notes[:1], [mine])
    assert again.delivery_id == next(d.delivery_id for d in deliveries if d.event_type == "feedback.changed")


def test_retry_schedule_is_exponential_capped_and_ends_dead() -> None:
    policy = RetryPolicy(max_attempts=5, base_seconds=10, max_seconds=45)
    assert [policy.next_delay(n) for n in range(1, 6)] == [10, 20, 40, 45, None]


def test_signed_headers_verify_with_standard_webhooks() -> None:
    secret = generate_secret()
    body = orjson.dumps({"type": "feedback.submitted", "data": {"x": 1}}).decode()
    headers = signed_headers("d1", secret, body, datetime.now(UTC))
    assert Webhook(secret).verify(body, headers) == {"type": "feedback.submitted", "data": {"x": 1}}
    assert headers["webhook-id"] == "d1"
    with pytest.raises(Exception, match="signature"):
        Webhook(generate_secret()).verify(body, headers)


def test_endpoint_input_is_checked() -> None:
    assert check_event_types(["feedback.changed", "feedback.changed"]) == ["feedback.changed"]
    with pytest.raises(ValueError, match="unknown event types"):
        check_event_types(["feedback.nope"])
    with pytest.raises(ValueError):
        check_secret("not-a-secret")
    assert check_secret(generate_secret()).startswith("whsec_")
