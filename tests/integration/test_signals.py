"""People change their minds: every read model follows each signal's current state.

A signal's identity is (tenant, response, person, kind); of its events the latest by
(occurred_at, event_id) is current, a retraction removes it. These tests send flips, changed
ratings and retractions through the real consumer pipelines against a real PostgreSQL, in
random orders with duplicates and redeliveries, and compare what the read models hold with a
recount from the final state of the signals.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from feedbackloop.contract import Event, FeedbackSubmitted, encode_event
from feedbackloop.kafka import OutgoingMessage
from feedbackloop.observability import ConsumerMetrics
from feedbackloop.pipeline.consumer import BatchPipeline, ConsumerSpec
from feedbackloop.postgres import create_pool
from services.metrics.handlers import SPEC as METRICS
from services.profiles import reads as query
from services.profiles.handlers import SPEC as PROFILES
from services.trainer.handlers import SPEC as TRAINER
from services.trainer.jobs.relay import publish_pending_examples
from tests.infra import CollectedDeadLetters, Record, create_database, records_of
from tests.ops.events import feedback, response, retraction

pytestmark = pytest.mark.integration
T0 = datetime(2026, 5, 4, 23, 57, tzinfo=UTC)  # the minutes cross an hour and a day boundary
PERSONS = ({"user_id": "a" * 64}, {"user_id": "b" * 64}, {"feedback_key": "k" * 64}, {})
# Both differ materially from the logged output ("Added milk."): each gives a preference pair.
CORRECTIONS = ("Put oat milk on the shared groceries list for Saturday.",
               "Ordered two litres of milk from the corner shop for delivery.")
PROPERTY = settings(
    max_examples=100, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def database(postgres_url: str) -> str:
    return asyncio.run(create_database(postgres_url))


@pytest.fixture
async def pool(database: str) -> AsyncIterator[Any]:
    pool = await create_pool(database, min_size=1, max_size=2)
    yield pool
    await pool.close()


def _pipeline(spec: ConsumerSpec[Any], pool: Any) -> BatchPipeline[Any]:
    return BatchPipeline(spec, pool, CollectedDeadLetters(),
                         ConsumerMetrics(CollectorRegistry(), spec.name))


def _records(events: list[Event]) -> list[Record]:
    return records_of([encode_event(e) for e in events], topic="p.feedback")


async def _deliver(spec: ConsumerSpec[Any], pool: Any, batches: list[list[Event]]) -> None:
    for batch in batches:
        outcome = await _pipeline(spec, pool).process_batch(_records(batch))
        assert outcome.dead_lettered == 0


# --- the final state, recounted from the events alone ---------------------------------------


def _identity(event: Event) -> tuple[object, ...] | None:
    person = getattr(event, "person", None)
    if person is None:
        return None
    return (event.tenant_id, event.subject, person, event.kind)  # type: ignore[union-attr]


def current_signals(events: list[Event]) -> list[FeedbackSubmitted]:
    """The feedback that counts: per identity the latest by (occurred_at, event_id) unless it
    is a retraction; every event without identity. Duplicates are one event."""
    unique = {event.event_id: event for event in events
              if event.type in ("feedback.submitted", "feedback.retracted")}
    latest: dict[tuple[object, ...], Event] = {}
    current: list[FeedbackSubmitted] = []
    for event in unique.values():
        identity = _identity(event)
        if identity is None:
            assert isinstance(event, FeedbackSubmitted)
            current.append(event)
            continue
        held = latest.get(identity)
        if held is None or (event.occurred_at, event.event_id) > (held.occurred_at, held.event_id):
            latest[identity] = event
    current += [e for e in latest.values() if isinstance(e, FeedbackSubmitted)]
    return current


def recount_rollup(events: list[Event], unit: str) -> Counter[tuple[object, ...]]:
    """(bucket, action_type, model, counter) -> total of the current signals, in the minute of
    their winning event (truncated to `unit`)."""
    logged = {e.payload.response_id: (e.payload.action_type, e.payload.model)  # type: ignore[union-attr]
              for e in events if e.type == "response.logged"}
    totals: Counter[tuple[object, ...]] = Counter()
    for signal in current_signals(events):
        dims = logged.get(signal.payload.response_id, ("unknown", "unknown"))
        bucket = signal.occurred_at.replace(second=0, microsecond=0)
        if unit == "hour":
            bucket = bucket.replace(minute=0)
        if unit == "day":
            bucket = bucket.replace(hour=0, minute=0)
        p = signal.payload
        for counter, value in (("thumbs_up", int(p.thumb == "up")),
                               ("thumbs_down", int(p.thumb == "down")),
                               ("rating_sum", p.rating or 0),
                               ("rating_count", int(p.rating is not None)),
                               ("corrections", int(p.correction is not None))):
            if value:
                totals[(bucket, *dims, counter)] += value
    return totals


async def rollup(pool: Any, tenant: str, unit: str) -> Counter[tuple[object, ...]]:
    rows = await pool.fetch(
        f"SELECT bucket, action_type, model, thumbs_up, thumbs_down, rating_sum, rating_count, "
        f"corrections FROM metrics.feedback_{unit} WHERE tenant_id = $1", tenant)
    totals: Counter[tuple[object, ...]] = Counter()
    for row in rows:
        for counter in ("thumbs_up", "thumbs_down", "rating_sum", "rating_count", "corrections"):
            if row[counter]:
                totals[(row["bucket"], row["action_type"], row["model"], counter)] += row[counter]
    return totals


# --- generated histories ----------------------------------------------------------------------


@dataclass(frozen=True)
class Act:
    person: int
    response: int
    what: str  # up, down, rating-N, retract-thumb, retract-rating
    seconds: int
    event_id: uuid.UUID


acts = st.builds(
    Act,
    person=st.integers(0, len(PERSONS) - 1),
    response=st.integers(0, 1),
    what=st.sampled_from(["up", "down", "rating-1", "rating-5", "rating-4", "correct-0",
                          "correct-1", "retract-thumb", "retract-rating", "retract-correction"]),
    # Few distinct seconds, so equal occurred_at (ties broken by event id) happen often.
    seconds=st.sampled_from([0, 0, 30, 60, 61, 150, 3600 * 24]),
    event_id=st.uuids(),
)


def _event(tenant: str, act: Act) -> Event | None:
    person = PERSONS[act.person]
    at = T0 + timedelta(seconds=act.seconds)
    response_id = f"r{act.response}"
    if act.what.startswith("retract"):
        if not person:
            return None  # a retraction names a person
        return retraction(response_id, at, kind=act.what.removeprefix("retract-"),
                          event_id=act.event_id, tenant_id=tenant, **person)
    if act.what.startswith("correct"):
        text = CORRECTIONS[int(act.what[-1])]
        return feedback(response_id, at, correction={"text": text}, event_id=act.event_id,
                        tenant_id=tenant, **person)
    if act.what.startswith("rating"):
        return feedback(response_id, at, rating=int(act.what[-1]), event_id=act.event_id,
                        tenant_id=tenant, **person)
    return feedback(response_id, at, thumb=act.what, event_id=act.event_id, tenant_id=tenant,
                    **person)


@st.composite
def histories(draw: st.DrawFn) -> tuple[str, list[Event], list[list[Event]]]:
    """A tenant, its events, and a delivery of them: shuffled, with duplicates, in batches."""
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    events = [e for act in draw(st.lists(acts, min_size=1, max_size=14))
              if (e := _event(tenant, act)) is not None]
    events.append(response("r0", T0, action_type="todo", model="m1", tenant_id=tenant))
    delivered = draw(st.permutations(events))
    repeats = draw(st.lists(st.sampled_from(events), max_size=5))
    stream = list(delivered) + repeats
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=3)))
    batches, start = [], 0
    for cut in [*cuts, len(stream)]:
        if cut > start:
            batches.append(stream[start:cut])
            start = cut
    return tenant, events, batches


@PROPERTY
@given(history=histories())
async def test_rollups_equal_a_recount_of_the_current_signals(
    pool: Any, history: tuple[str, list[Event], list[list[Event]]]
) -> None:
    tenant, events, batches = history
    await _deliver(METRICS, pool, batches)
    for unit in ("minute", "hour", "day"):
        assert await rollup(pool, tenant, unit) == recount_rollup(events, unit), unit


def recount_verdicts(events: list[Event], user: str) -> Counter[tuple[str, str]]:
    """(action_type, verdict) -> how many of the user's current signals have it."""
    logged = {e.payload.response_id: e.payload.action_type  # type: ignore[union-attr]
              for e in events if e.type == "response.logged"}
    return Counter(
        (logged.get(s.payload.response_id, "unknown"), s.payload.verdict)
        for s in current_signals(events) if s.user_id == user
    )


@PROPERTY
@given(history=histories())
async def test_profiles_hold_the_current_verdicts_and_every_change(
    pool: Any, history: tuple[str, list[Event], list[list[Event]]]
) -> None:
    tenant, events, batches = history
    await _deliver(PROFILES, pool, batches)
    for person in PERSONS[:2]:
        user = person["user_id"]
        rows = await query.user_verdicts_by_action_type(pool, tenant_id=tenant, user_id=user)
        held = Counter({(r["action_type"], verdict): r[verdict] for r in rows
                        for verdict in ("accepted", "rejected", "neutral") if r[verdict]})
        assert held == recount_verdicts(events, user)
        current = await query.user_feedback_history(pool, tenant_id=tenant, user_id=user,
                                                    limit=500, current_only=True)
        assert {r["event_id"] for r in current} == {
            s.event_id for s in current_signals(events) if s.user_id == user}
        everything = await query.user_feedback_history(pool, tenant_id=tenant, user_id=user,
                                                       limit=500)
        assert {r["event_id"] for r in everything} == {
            e.event_id for e in events if e.user_id == user and e.type != "response.logged"}


# --- the story of one person, step by step ----------------------------------------------------


async def test_a_flip_moves_the_vote_and_a_late_older_event_never_wins(pool: Any) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    user = {"user_id": "c" * 64, "tenant_id": tenant}
    logged = response("r0", T0, action_type="todo", model="m1", tenant_id=tenant)
    down = feedback("r0", T0, thumb="down", **user)
    up = feedback("r0", T0 + timedelta(minutes=2), thumb="up", **user)
    retracted = retraction("r0", T0 + timedelta(minutes=3), kind="thumb", **user)
    again = feedback("r0", T0 + timedelta(minutes=4), thumb="down", **user)

    async def minutes() -> dict[tuple[datetime, str], int]:
        rows = await pool.fetch(
            "SELECT bucket, thumbs_up, thumbs_down FROM metrics.feedback_minute "
            "WHERE tenant_id = $1", tenant)
        found = {}
        for row in rows:
            for name in ("thumbs_up", "thumbs_down"):
                if row[name]:
                    found[(row["bucket"], name)] = row[name]
        return found

    await _deliver(METRICS, pool, [[logged, down]])
    assert await minutes() == {(T0, "thumbs_down"): 1}
    await _deliver(METRICS, pool, [[up]])
    assert await minutes() == {(T0 + timedelta(minutes=2), "thumbs_up"): 1}
    await _deliver(METRICS, pool, [[down]])  # redelivered: a no-op
    assert await minutes() == {(T0 + timedelta(minutes=2), "thumbs_up"): 1}
    await _deliver(METRICS, pool, [[retracted]])
    assert await minutes() == {}
    await _deliver(METRICS, pool, [[again, up]])
    assert await minutes() == {(T0 + timedelta(minutes=4), "thumbs_down"): 1}
    facts = await pool.fetchval("SELECT count(*) FROM metrics.feedback_facts WHERE tenant_id = $1",
                                tenant)
    assert facts == 1


async def test_the_profile_shows_the_change_and_suppresses_by_current_verdicts(pool: Any) -> None:
    """Three thumbs down on `todo` would avoid it; the user flips two of them, so it is not."""
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    user = "d" * 64
    person = {"user_id": user, "tenant_id": tenant}
    events: list[Event] = []
    for n in range(3):
        events.append(response(f"r{n}", T0, action_type="todo", model="m1", tenant_id=tenant))
        events.append(feedback(f"r{n}", T0 + timedelta(minutes=n), thumb="down", **person))
    await _deliver(PROFILES, pool, [events])
    rows = await query.user_verdicts_by_action_type(pool, tenant_id=tenant, user_id=user)
    assert [(r["action_type"], r["rejected"], r["accepted"]) for r in rows] == [("todo", 3, 0)]

    flips = [feedback("r0", T0 + timedelta(minutes=9), thumb="up", **person),
             retraction("r1", T0 + timedelta(minutes=10), kind="thumb", **person)]
    await _deliver(PROFILES, pool, [flips])
    rows = await query.user_verdicts_by_action_type(pool, tenant_id=tenant, user_id=user)
    assert [(r["action_type"], r["rejected"], r["accepted"]) for r in rows] == [("todo", 1, 1)]
    history = await query.user_feedback_history(pool, tenant_id=tenant, user_id=user, limit=50)
    assert [(r["response_id"], r["thumb"], r["current"], r["retraction"]) for r in history] == [
        ("r1", None, False, True),
        ("r0", "up", True, False),
        ("r2", "down", True, False),
        ("r1", "down", False, False),
        ("r0", "down", False, False),
    ]


def recount_examples(events: list[Event]) -> Counter[tuple[str, object]]:
    """(kind, label) of the examples the current signals give: only r0 has a known prompt;
    a correction -> preference pair + SFT of its text; accepted -> SFT + KTO true, rejected ->
    KTO false; and one eval case if any thumb or rating rejected."""
    examples: Counter[tuple[str, object]] = Counter()
    low = False
    for signal in current_signals(events):
        if signal.payload.response_id != "r0":
            continue
        if signal.payload.correction is not None:
            examples[("preference", None)] += 1
            examples[("sft", None)] += 1
            continue
        if signal.payload.verdict == "neutral":
            continue
        accepted = signal.payload.verdict == "accepted"
        examples[("kto", accepted)] += 1
        if accepted:
            examples[("sft", None)] += 1
        low = low or not accepted
    if low:
        examples[("eval", None)] += 1
    return examples


async def stored_examples(pool: Any, tenant: str) -> Counter[tuple[str, object]]:
    rows = await pool.fetch("SELECT kind, record FROM trainer.examples WHERE tenant_id = $1",
                            tenant)
    return Counter((row["kind"], row["record"]["label"]) for row in rows)


@PROPERTY
@given(history=histories())
async def test_training_examples_equal_those_of_the_current_signals(
    pool: Any, history: tuple[str, list[Event], list[list[Event]]]
) -> None:
    tenant, events, batches = history
    await _deliver(TRAINER, pool, batches)
    assert await stored_examples(pool, tenant) == recount_examples(events)


class TrainingTopic:
    """The training-examples topic as a list: what the relay published, in order."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.documents += [orjson.loads(message.value) for message in messages]

    async def drain(self, pool: Any, tenant: str) -> list[tuple[object, ...]]:
        """Relay what is pending; the new messages of `tenant` as (type, kind, label, id)."""
        start = len(self.documents)
        while await publish_pending_examples(pool, self.publish, topic="t", batch_size=500):
            pass
        return [
            (d["type"], d.get("kind"), d.get("label"), d["example_id"])
            for d in self.documents[start:] if d["tenant_id"] == tenant
        ]


async def test_a_flip_flips_the_kto_label_and_a_retraction_retracts_the_examples(
    pool: Any,
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    person = {"user_id": "e" * 64, "tenant_id": tenant}
    topic = TrainingTopic()
    logged = response("r0", T0, action_type="todo", model="m1", tenant_id=tenant)
    await _deliver(TRAINER, pool, [[logged, feedback("r0", T0, thumb="down", **person)]])
    down = await topic.drain(pool, tenant)
    assert sorted(item[:3] for item in down) == [
        ("training_example", "eval", None), ("training_example", "kto", False)]
    kto_id = next(item[3] for item in down if item[1] == "kto")
    eval_id = next(item[3] for item in down if item[1] == "eval")

    await _deliver(TRAINER, pool, [[feedback("r0", T0 + timedelta(minutes=1), thumb="up",
                                             **person)]])
    up = await topic.drain(pool, tenant)
    # The same KTO example, revised with the other label; the eval case had only that vote.
    assert ("training_example", "kto", True, kto_id) in up
    assert ("training_example.retracted", None, None, eval_id) in up
    sft_id = next(item[3] for item in up if item[1] == "sft")
    assert len(up) == 3
    revision = await pool.fetchval("SELECT revision FROM trainer.examples WHERE example_id = $1",
                                   uuid.UUID(kto_id))
    assert revision == 2

    await _deliver(TRAINER, pool, [[retraction("r0", T0 + timedelta(minutes=2), kind="thumb",
                                               **person)]])
    retracted = await topic.drain(pool, tenant)
    assert sorted(retracted) == sorted([("training_example.retracted", None, None, kto_id),
                                        ("training_example.retracted", None, None, sft_id)])
    assert await stored_examples(pool, tenant) == Counter()


async def test_an_edited_correction_revises_its_preference_pair(pool: Any) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    person = {"user_id": "f" * 64, "tenant_id": tenant}
    logged = response("r0", T0, action_type="todo", model="m1", tenant_id=tenant)
    first = feedback("r0", T0, correction={"text": "Added oat milk to the groceries list."},
                     **person)
    edited = feedback("r0", T0 + timedelta(minutes=1),
                      correction={"text": "Added oat milk and eggs to the shared list."}, **person)
    await _deliver(TRAINER, pool, [[logged, first]])
    before = {row["kind"]: row for row in await pool.fetch(
        "SELECT example_id, kind, record, revision FROM trainer.examples WHERE tenant_id = $1",
        tenant)}
    await _deliver(TRAINER, pool, [[edited], [first]])  # and the first again, late
    after = {row["kind"]: row for row in await pool.fetch(
        "SELECT example_id, kind, record, revision FROM trainer.examples WHERE tenant_id = $1",
        tenant)}
    assert set(after) == set(before) == {"preference", "sft"}
    pair = after["preference"]
    assert pair["example_id"] == before["preference"]["example_id"]
    assert pair["record"]["chosen"] == "Added oat milk and eggs to the shared list."
    assert pair["revision"] == 2
