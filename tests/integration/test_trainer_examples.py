"""Training examples against real PostgreSQL and a real broker: built in the trainer's write
whichever of feedback and response arrives first, deduplicated, removed on opt-out and erasure,
and published by the relay on the training-examples topic, read back by a plain consumer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from feedbackloop.contract import Topic, TopicNames, decode_event
from feedbackloop.kafka import EventPublisher, KafkaConnection, PublishUnavailable
from feedbackloop.postgres import create_pool
from services.trainer.handlers import write_effects
from services.trainer.jobs.relay import publish_pending_examples
from services.trainer.processing import process_message
from services.trainer.reads import ExampleFilter, count_examples
from tests.infra import (
    create_database,
    create_topics,
    eventually,
    idempotence_supported,
    unique_prefix,
)

pytestmark = pytest.mark.integration
USER = "a" * 64
AGENT = "b" * 64


def response_doc(response_id: str, *, user: str = USER, output: str = "Added milk to your list.",
                 session: str | None = None, prompt: str = "Add milk to my list") -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "type": "response.logged", "tenant_id": "acme",
        "occurred_at": "2026-11-20T10:00:00Z", "received_at": "2026-11-20T10:00:01Z",
        "user_id": user, "session_id": session,
        "payload": {"response_id": response_id, "model": "gpt-4o-mini", "action_type": "todo",
                    "prompt": [{"role": "user", "content": prompt}], "output": output,
                    "prompt_version": "v3"},
    }


def feedback_doc(response_id: str, *, user: str = USER, minute: int = 5,
                 **signal: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "type": "feedback.submitted", "tenant_id": "acme",
        "occurred_at": f"2026-11-20T10:{minute:02d}:00Z", "received_at": "2026-11-20T10:30:00Z",
        "user_id": user, "payload": {"response_id": response_id, **signal},
    }


def user_doc(kind: str, user: str, payload: dict[str, Any], hour: int = 11) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "type": kind, "tenant_id": "acme",
        "occurred_at": f"2026-11-20T{hour:02d}:00:00Z", "received_at": "2026-11-20T11:00:01Z",
        "user_id": user, "payload": payload,
    }


async def apply(pool: Any, *docs: dict[str, Any]) -> None:
    """One consumer batch: the effects written in one transaction, as the pipeline does."""
    effects = [process_message(decode_event(orjson.dumps(doc))) for doc in docs]
    async with pool.acquire() as connection, connection.transaction():
        await write_effects(connection, [effect for effect in effects if effect is not None])


async def examples(pool: Any) -> list[Any]:
    return await pool.fetch(
        """SELECT example_id, kind, response_id, record, duplicate_of, revision,
                  published_revision, user_ids
           FROM trainer.examples ORDER BY seq"""
    )


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[Any]:
    pool = await create_pool(await create_database(postgres_url), min_size=1, max_size=3)
    yield pool
    await pool.close()


async def test_examples_are_the_same_whichever_arrives_first(pool: Any) -> None:
    fix = {"correction": {"text": "Added oat milk to your groceries list."}}
    await apply(pool, feedback_doc("r1", **fix))  # no prompt known yet: nothing to build
    assert await examples(pool) == []
    await apply(pool, response_doc("r1"))
    late = await examples(pool)
    assert [row["kind"] for row in late] == ["preference", "sft"]
    assert late[0]["record"]["chosen"] == "Added oat milk to your groceries list."
    assert late[0]["record"]["rejected"] == "Added milk to your list."

    await apply(pool, response_doc("r2"), feedback_doc("r2", **fix))  # the other order
    rows = await examples(pool)
    in_order = [row for row in rows if row["response_id"] == "r2"]
    assert [row["kind"] for row in in_order] == ["preference", "sft"]
    # Same content as r1's: stored, but as duplicates of r1's, so neither published nor exported.
    assert [row["duplicate_of"] for row in in_order] == [row["example_id"] for row in late]
    assert await count_examples(pool, selection=ExampleFilter(tenant_id="acme")) == 2


async def test_a_later_signal_revises_the_eval_case(pool: Any) -> None:
    await apply(pool, response_doc("r1"), feedback_doc("r1", thumb="down", minute=1))
    eval_case = next(row for row in await examples(pool) if row["kind"] == "eval")
    assert eval_case["record"]["reference"] is None and eval_case["revision"] == 1
    await apply(pool, feedback_doc("r1", minute=2, correction={"text": "Oat milk: added."}))
    rows = await examples(pool)
    revised = next(row for row in rows if row["kind"] == "eval")
    assert (revised["example_id"], revised["revision"]) == (eval_case["example_id"], 2)
    assert revised["record"]["reference"] == "Oat milk: added."
    # Another person's vote: rebuilding changes nothing else. (The same user's later thumb
    # would replace their down vote and so remove the eval case.)
    await apply(pool, feedback_doc("r1", user=AGENT, minute=3, thumb="up"))
    assert [row["revision"] for row in await examples(pool) if row["kind"] == "eval"] == [2]


async def test_near_duplicates_of_other_users_are_kept_out(pool: Any) -> None:
    prompt = "Please add milk, eggs and bread to my groceries list for the weekend"
    await apply(pool, response_doc("r1", prompt=prompt), feedback_doc("r1", thumb="up"))
    await apply(
        pool,
        response_doc("r2", user=AGENT, prompt=prompt.replace("weekend", "weekend!!").upper()),
        feedback_doc("r2", user=AGENT, thumb="up"),
        response_doc("r3", user=AGENT, prompt=prompt + " please", output="Added milk to your list"),
        feedback_doc("r3", user=AGENT, thumb="up"),
        response_doc("r4", user=AGENT, prompt="Remind me to call mom at 3pm"),
        feedback_doc("r4", user=AGENT, thumb="up"),
    )
    rows = await examples(pool)
    originals = {row["response_id"] for row in rows if row["duplicate_of"] is None}
    assert originals == {"r1", "r4"}
    assert await count_examples(pool, selection=ExampleFilter(tenant_id="acme")) == 4


async def test_duplicates_within_one_batch_are_found_as_if_stored_one_by_one(pool: Any) -> None:
    prompt = "Please add milk, eggs and bread to my groceries list for the weekend"
    await apply(
        pool,
        response_doc("r1", prompt=prompt), feedback_doc("r1", thumb="up"),
        response_doc("r2", user=AGENT, prompt=prompt.upper()),  # the same once normalized
        feedback_doc("r2", user=AGENT, thumb="up"),
        response_doc("r3", user=AGENT, prompt=prompt.replace("weekend", "weekend!!") + " ok"),
        feedback_doc("r3", user=AGENT, thumb="up"),
        response_doc("r4", user=AGENT, prompt="Remind me to call mom at 3pm"),
        feedback_doc("r4", user=AGENT, thumb="up"),
    )
    rows = await examples(pool)
    original_of = {(row["response_id"], row["kind"]): row["example_id"] for row in rows}
    for row in rows:
        if row["response_id"] in ("r2", "r3"):
            assert row["duplicate_of"] == original_of[("r1", row["kind"])], row["response_id"]
        else:
            assert row["duplicate_of"] is None, row["response_id"]


async def test_opt_out_and_erasure_remove_the_users_examples(pool: Any) -> None:
    await apply(
        pool,
        response_doc("r1"), feedback_doc("r1", thumb="up"),
        response_doc("r2", user=AGENT, prompt="Remind me to call mom"),
        feedback_doc("r2", user=AGENT, thumb="down"),
    )
    assert {row["response_id"] for row in await examples(pool)} == {"r1", "r2"}
    await apply(pool, user_doc("user.consent_changed", USER, {"training_allowed": False}))
    assert {row["response_id"] for row in await examples(pool)} == {"r2"}
    # Opted out: new feedback of the user gives nothing either.
    await apply(pool, feedback_doc("r1", rating=5, minute=9))
    assert {row["response_id"] for row in await examples(pool)} == {"r2"}
    # A consent event older than the opt-out changes nothing; opting in again rebuilds.
    await apply(pool, user_doc("user.consent_changed", USER, {"training_allowed": True}, 10))
    assert {row["response_id"] for row in await examples(pool)} == {"r2"}
    await apply(pool, user_doc("user.consent_changed", USER, {"training_allowed": True}, 12))
    restored = [row for row in await examples(pool) if row["response_id"] == "r1"]
    assert sorted((row["kind"], row["record"]["label"]) for row in restored) == [
        ("kto", True), ("kto", True), ("sft", None), ("sft", None),
    ]
    # The rating-5 SFT and KTO rows repeat the thumbs-up ones: kept as their duplicates.
    assert [row["duplicate_of"] is not None for row in restored] == [False, False, True, True]
    await apply(pool, user_doc("user.consent_changed", USER, {"training_allowed": False}, 13))

    await pool.execute("UPDATE trainer.examples SET published_revision = revision")
    await apply(pool, user_doc("user.erasure_requested", AGENT, {}))
    assert await examples(pool) == []
    # Queued for the topic: the retractions of what had been published there.
    queued = await pool.fetch(
        "SELECT reason FROM trainer.example_retractions WHERE published_at IS NULL")
    assert [row["reason"] for row in queued] == ["erasure", "erasure"]
    # Every deletion is recorded, for exports to object storage; the opt-outs of examples
    # never published are marked sent at once, so the relay sends nothing for them.
    recorded = await pool.fetch(
        "SELECT reason, published_at IS NOT NULL AS settled FROM trainer.example_retractions "
        "ORDER BY seq")
    assert {(row["reason"], row["settled"]) for row in recorded} == {
        ("opt_out", True), ("erasure", False)}


async def test_an_erasure_after_an_opt_out_retracts_the_users_examples_for_erasure(
    pool: Any,
) -> None:
    """An opt-out already removed the user's examples; the erasure that follows still finds
    them (by the retractions' user digests) and retracts each for erasure, queued for the
    topic, so webhooks and the object exports forget their texts too."""
    await apply(pool, response_doc("r1"), feedback_doc("r1", thumb="up"),
                response_doc("r2", user=AGENT), feedback_doc("r2", user=AGENT, thumb="up"))
    await pool.execute("UPDATE trainer.examples SET published_revision = revision")
    mine = {row["example_id"] for row in await examples(pool) if row["response_id"] == "r1"}
    assert mine
    await apply(pool, user_doc("user.consent_changed", USER, {"training_allowed": False}))
    digests = await pool.fetch(
        "SELECT reason, user_digests = ARRAY[public.erased_user_digest($1)] AS theirs "
        "FROM trainer.example_retractions", USER)
    assert {(row["reason"], row["theirs"]) for row in digests} == {("opt_out", True)}
    for _ in range(2):  # an erasure applied again retracts nothing twice
        await apply(pool, user_doc("user.erasure_requested", USER, {}))
    erased = await pool.fetch(
        "SELECT example_id, published_at IS NULL AS queued FROM trainer.example_retractions "
        "WHERE reason = 'erasure'")
    assert {row["example_id"] for row in erased} == mine
    assert all(row["queued"] for row in erased) and len(erased) == len(mine)
    # The other user's examples are untouched.
    assert {row["response_id"] for row in await examples(pool)} == {"r2"}


@pytest.fixture
async def names(kafka_bootstrap: str) -> TopicNames:
    return await create_topics(kafka_bootstrap, unique_prefix())


async def _read(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        group_id=f"ml-{uuid.uuid4().hex[:6]}", enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async def more() -> bool:
            for part in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(part)
            return len(records) >= expected

        await eventually(more, timeout=30)
    finally:
        await consumer.stop()
    return records


async def test_relay_publishes_after_the_ack_in_conversation_order(
    pool: Any, kafka_bootstrap: str, names: TopicNames
) -> None:
    topic = names.physical(Topic.TRAINING_EXAMPLES)
    publisher = EventPublisher(
        KafkaConnection(kafka_bootstrap), enable_idempotence=idempotence_supported(kafka_bootstrap),
        linger_ms=0, request_timeout_ms=10_000, timeout_seconds=10,
    )
    await apply(
        pool,
        response_doc("r1", session="chat-7"), feedback_doc("r1", thumb="down", minute=1),
        response_doc("r2", session="chat-7", prompt="And eggs", output="Added eggs."),
        feedback_doc("r2", rating=5, minute=2),
    )
    # Not connected: the publish raises, and nothing is marked published.
    with pytest.raises(PublishUnavailable):
        await publish_pending_examples(pool, publisher.publish, topic=topic, batch_size=100)
    assert {row["published_revision"] for row in await examples(pool)} == {0}

    await publisher.start()
    try:
        assert await publish_pending_examples(pool, publisher.publish, topic=topic, batch_size=3) == 3
        assert await publish_pending_examples(pool, publisher.publish, topic=topic, batch_size=3) == 1
        assert await publish_pending_examples(pool, publisher.publish, topic=topic, batch_size=3) == 0
        await apply(pool, feedback_doc("r1", minute=3, correction={"text": "Oat milk added, and "
                                                                     "the list is shared."}))
        await apply(pool, user_doc("user.erasure_requested", USER, {}))
        published = await publish_pending_examples(pool, publisher.publish, topic=topic,
                                                   batch_size=100)
    finally:
        await publisher.stop()
    stored = await examples(pool)
    assert stored == []  # erased
    records = await _read(kafka_bootstrap, topic, 4 + published)
    assert {record.key for record in records} == {b"acme:chat-7"}
    assert len({record.partition for record in records}) == 1
    documents = [orjson.loads(record.value) for record in sorted(records, key=lambda r: r.offset)]
    first = documents[:4]
    assert [(d["kind"], d["label"], d["revision"]) for d in first] == [
        ("kto", False, 1), ("eval", None, 1), ("sft", None, 1), ("kto", True, 1),
    ]
    assert all(d["type"] == "training_example" and d["conversation_id"] == "chat-7" for d in first)
    assert first[0]["provenance"]["created_at"] and first[0]["provenance"]["tenant_id"] == "acme"
    # After the erasure only retractions follow: the revised examples were deleted before the
    # relay ran, so what was published is retracted and nothing of the user is published anew.
    rest = documents[4:]
    assert {d["type"] for d in rest} == {"training_example.retracted"}
    assert sorted(d["example_id"] for d in rest) == sorted(d["example_id"] for d in first)
