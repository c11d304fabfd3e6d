"""Erasure in the webhooks consumer, on a real PostgreSQL through the real pipeline: an erased
user's deliveries (pending, delivered and dead) and current signals go in the transaction that
claims the erasure; an example retracted for erasure takes its deliveries with it; the user's
earlier events arriving later send nothing, later ones do; other users' rows stay."""

from __future__ import annotations

import copy
import hashlib
import secrets
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from prometheus_client import CollectorRegistry

from feedbackloop.contract import load_output_samples, load_samples
from feedbackloop.observability import ConsumerMetrics
from feedbackloop.pipeline.consumer import BatchPipeline
from feedbackloop.postgres import create_pool
from services.webhooks import admin
from services.webhooks.handlers import SPEC
from services.webhooks.sealing import SecretBox
from tests.infra import CollectedDeadLetters, create_database, records_of

pytestmark = pytest.mark.integration

BOX = SecretBox(secrets.token_bytes(32))  # seals the endpoints' secrets

ERASED = "a" * 64  # the tenant-keyed HMACs, as ingest sends them
KEPT = "b" * 64
SECRET_TEXT = "my flat is at 12 Elm Street, call me on the landline"


def _feedback(user: str, response_id: str, payload: dict[str, Any], at: str) -> bytes:
    doc = copy.deepcopy(load_samples()["feedback.submitted"][0])
    doc.update(event_id=str(uuid.uuid4()), user_id=user, occurred_at=at, received_at=at,
               payload={"response_id": response_id} | payload)
    return orjson.dumps(doc)


def _erasure(user: str, at: str) -> bytes:
    doc = copy.deepcopy(load_samples()["user.erasure_requested"][0])
    doc.update(event_id=str(uuid.uuid4()), user_id=user, occurred_at=at, received_at=at)
    return orjson.dumps(doc)


def _example(example_id: uuid.UUID, text: str) -> bytes:
    doc = copy.deepcopy(load_output_samples()["training_example"][0])
    doc.update(example_id=str(example_id), tenant_id="acme")
    doc["prompt"] = [{"role": "user", "content": text}]
    return orjson.dumps(doc)


def _retraction(example_id: uuid.UUID, reason: str) -> bytes:
    doc = copy.deepcopy(load_output_samples()["training_example.retracted"][0])
    doc.update(example_id=str(example_id), tenant_id="acme", reason=reason)
    return orjson.dumps(doc)


async def _everything(connection: asyncpg.Connection) -> str:
    """All text kept in the webhooks schema's deliveries and signals."""
    text: str = await connection.fetchval(
        "SELECT coalesce(string_agg(body, ' '), '') || ' ' || coalesce("
        "(SELECT string_agg(value::text, ' ') FROM webhooks.feedback_signals), '') "
        "FROM webhooks.deliveries")
    return text


async def test_an_erasure_removes_the_users_deliveries_and_signals_in_its_transaction(
    postgres_url: str,
) -> None:
    pool = await create_pool(await create_database(postgres_url), min_size=1, max_size=2)
    try:
        async with pool.acquire() as connection:
            await admin.create_endpoint(
                connection, box=BOX, tenant_id="acme", url="https://hooks.example.com/all",
                event_types=["feedback.submitted", "feedback.changed", "feedback.retracted",
                             "training_example.created", "training_example.retracted"],
            )
        pipeline = BatchPipeline(SPEC, pool, CollectedDeadLetters(),
                                 ConsumerMetrics(CollectorRegistry(), "webhooks"))
        erased_example, kept_example = uuid.uuid4(), uuid.uuid4()
        before = [
            _feedback(ERASED, "r1", {"comment": {"text": SECRET_TEXT, "reasons": []}},
                      "2026-11-20T10:00:00Z"),
            _feedback(ERASED, "r2", {"thumb": "up"}, "2026-11-20T10:00:01Z"),
            _feedback(ERASED, "r2", {"thumb": "down"}, "2026-11-20T10:00:02Z"),  # changed
            _feedback(ERASED, "r3", {"correction": {"text": SECRET_TEXT + " (edited)"}},
                      "2026-11-20T10:00:03Z"),
            _feedback(KEPT, "r1", {"comment": {"text": "the kept user's words", "reasons": []}},
                      "2026-11-20T10:00:04Z"),
        ]
        await pipeline.process_batch(records_of(before))
        await pipeline.process_batch(records_of(
            [_example(erased_example, SECRET_TEXT), _example(kept_example, "other words")],
            topic="p.training-examples"))
        digest = hashlib.sha256(ERASED.encode()).hexdigest()
        async with pool.acquire() as connection:
            # One delivered, one dead, the rest pending: every state goes.
            await connection.execute(
                "UPDATE webhooks.deliveries SET state = 'delivered', delivered_at = now() "
                "WHERE delivery_id = (SELECT delivery_id FROM webhooks.deliveries "
                "WHERE user_digest = $1 ORDER BY created_at LIMIT 1)", digest)
            await connection.execute(
                "UPDATE webhooks.deliveries SET state = 'dead' WHERE delivery_id = ("
                "SELECT delivery_id FROM webhooks.deliveries WHERE user_digest = $1 "
                "AND state = 'pending' LIMIT 1)", digest)
            states = await connection.fetch(
                "SELECT state, count(*) FROM webhooks.deliveries WHERE user_digest = $1 "
                "GROUP BY state", digest)
            assert {row["state"] for row in states} == {"pending", "delivered", "dead"}
            assert SECRET_TEXT in await _everything(connection)
            assert await connection.fetchval(
                "SELECT count(*) FROM webhooks.feedback_signals WHERE user_digest = $1",
                digest) == 3
            # Nothing stores the user's HMAC itself.
            assert ERASED not in await _everything(connection)

        erasure = _erasure(ERASED, "2026-11-20T11:00:00Z")
        outcome = await pipeline.process_batch(records_of([erasure], topic="p.consent"))
        assert outcome.applied == 1
        await pipeline.process_batch(records_of(
            [_retraction(erased_example, "erasure"), _retraction(kept_example, "opt_out")],
            topic="p.training-examples"))

        async with pool.acquire() as connection:
            kept_text = await _everything(connection)
            assert SECRET_TEXT not in kept_text
            assert "the kept user's words" in kept_text and "other words" in kept_text
            assert await connection.fetchval(
                "SELECT count(*) FROM webhooks.deliveries WHERE user_digest = $1", digest) == 0
            assert await connection.fetchval(
                "SELECT count(*) FROM webhooks.feedback_signals WHERE user_digest = $1",
                digest) == 0
            by_example = {
                (row["example_id"], row["event_type"]) for row in await connection.fetch(
                    "SELECT example_id, event_type FROM webhooks.deliveries "
                    "WHERE example_id IS NOT NULL")
            }
            assert by_example == {
                (erased_example, "training_example.retracted"),
                (kept_example, "training_example.created"),
                (kept_example, "training_example.retracted"),
            }
            # The erasure's claim and its effects committed together: the tombstone is there.
            erasure_id = uuid.UUID(orjson.loads(erasure)["event_id"])
            assert await connection.fetchval(
                "SELECT count(*) FROM webhooks.processed_events WHERE event_id = $1",
                erasure_id) == 1
            assert await connection.fetchval(
                "SELECT erased_at FROM webhooks.erased_users WHERE user_digest = $1", digest)

        # The user's earlier feedback arriving late sends nothing; what they do after the
        # erasure (they came back) is theirs again.
        late = _feedback(ERASED, "r4", {"comment": {"text": SECRET_TEXT, "reasons": []}},
                         "2026-11-20T10:30:00Z")
        after = _feedback(ERASED, "r5", {"thumb": "up"}, "2026-11-20T12:00:00Z")
        await pipeline.process_batch(records_of([late, after]))
        async with pool.acquire() as connection:
            assert SECRET_TEXT not in await _everything(connection)
            rows = await connection.fetch(
                "SELECT event_type, body FROM webhooks.deliveries WHERE user_digest = $1",
                digest)
            assert [(r["event_type"], orjson.loads(r["body"])["data"]["response_id"])
                    for r in rows] == [("feedback.submitted", "r5")]
    finally:
        await pool.close()


async def test_an_erasure_in_the_same_batch_as_the_users_feedback_removes_it(
    postgres_url: str,
) -> None:
    """Effects apply in order: feedback before the erasure in one batch is erased with it."""
    pool = await create_pool(await create_database(postgres_url), min_size=1, max_size=2)
    try:
        async with pool.acquire() as connection:
            await admin.create_endpoint(
                connection, box=BOX, tenant_id="acme", url="https://hooks.example.com/all",
                event_types=["feedback.submitted"],
            )
        pipeline = BatchPipeline(SPEC, pool, CollectedDeadLetters(),
                                 ConsumerMetrics(CollectorRegistry(), "webhooks"))
        await pipeline.process_batch(records_of([
            _feedback(ERASED, "r1", {"comment": {"text": SECRET_TEXT, "reasons": []}},
                      "2026-11-20T10:00:00Z"),
            _erasure(ERASED, "2026-11-20T11:00:00Z"),
            _feedback(KEPT, "r1", {"thumb": "up"}, "2026-11-20T10:00:00Z"),
        ]))
        async with pool.acquire() as connection:
            assert SECRET_TEXT not in await _everything(connection)
            assert await connection.fetchval("SELECT count(*) FROM webhooks.deliveries") == 1
    finally:
        await pool.close()


async def test_an_example_created_and_retracted_for_erasure_in_one_batch_sends_no_text(
    postgres_url: str,
) -> None:
    """The consumer lagging behind: the example and its erasure retraction arrive in one run;
    only the retraction, which carries no text, is delivered."""
    pool = await create_pool(await create_database(postgres_url), min_size=1, max_size=2)
    try:
        async with pool.acquire() as connection:
            await admin.create_endpoint(
                connection, box=BOX, tenant_id="acme", url="https://hooks.example.com/examples",
                event_types=["training_example.created", "training_example.retracted"],
            )
        pipeline = BatchPipeline(SPEC, pool, CollectedDeadLetters(),
                                 ConsumerMetrics(CollectorRegistry(), "webhooks"))
        erased, kept = uuid.uuid4(), uuid.uuid4()
        await pipeline.process_batch(records_of([
            _example(erased, SECRET_TEXT), _example(kept, "a question anyone may see"),
            _retraction(erased, "erasure"),
        ]))
        async with pool.acquire() as connection:
            assert SECRET_TEXT not in await _everything(connection)
            types = sorted(
                (row["event_type"], row["example_id"]) for row in await connection.fetch(
                    "SELECT event_type, example_id FROM webhooks.deliveries"))
        assert types == sorted([("training_example.created", kept),
                                ("training_example.retracted", erased)])
    finally:
        await pool.close()


async def test_an_erasure_removes_what_its_user_did_before_and_after_it_in_every_state(
    postgres_url: str,
) -> None:
    """Feedback of the user at T-1 and at T+1 (their clocks are theirs) consumed before the
    erasure at T arrives on its own topic: every delivery of both, pending, delivered or dead,
    and every signal go; the other user's, in every state, stay. The user's feedback of T+2
    arriving afterwards is new: submitted, telling of no signal of before."""
    pool = await create_pool(await create_database(postgres_url), min_size=1, max_size=2)
    try:
        async with pool.acquire() as connection:
            await admin.create_endpoint(
                connection, box=BOX, tenant_id="acme", url="https://hooks.example.com/all",
                event_types=["feedback.submitted", "feedback.changed"],
            )
        pipeline = BatchPipeline(SPEC, pool, CollectedDeadLetters(),
                                 ConsumerMetrics(CollectorRegistry(), "webhooks"))
        feedback = []
        for user in (ERASED, KEPT):
            feedback += [
                _feedback(user, "r-before", {"comment": {"text": SECRET_TEXT, "reasons": []}},
                          "2026-11-20T10:59:59Z"),
                _feedback(user, "r-after", {"thumb": "up"}, "2026-11-20T11:00:01Z"),
                _feedback(user, "r-flip", {"correction": {"text": SECRET_TEXT}},
                          "2026-11-20T10:59:58Z"),
                _feedback(user, "r-flip", {"correction": {"text": "words of later"}},
                          "2026-11-20T11:00:02Z"),  # changed, telling of the one before
            ]
        await pipeline.process_batch(records_of(feedback))
        erased, kept = (hashlib.sha256(u.encode()).hexdigest() for u in (ERASED, KEPT))
        states_of = """
            SELECT body::jsonb #>> '{data,response_id}' AS response, event_type, state
            FROM webhooks.deliveries WHERE user_digest = $1 ORDER BY 1, 2, 3"""
        async with pool.acquire() as connection:
            for digest in (erased, kept):
                await connection.execute(
                    """
                    UPDATE webhooks.deliveries SET
                        state = CASE body::jsonb #>> '{data,response_id}'
                                WHEN 'r-before' THEN 'delivered' WHEN 'r-after' THEN 'dead'
                                ELSE 'pending' END,
                        delivered_at = CASE WHEN body::jsonb #>> '{data,response_id}' =
                                       'r-before' THEN now() END
                    WHERE user_digest = $1
                    """, digest)
            expected = [("r-after", "feedback.submitted", "dead"),
                        ("r-before", "feedback.submitted", "delivered"),
                        ("r-flip", "feedback.changed", "pending"),
                        ("r-flip", "feedback.submitted", "pending")]
            for digest in (erased, kept):
                assert [tuple(r) for r in await connection.fetch(states_of, digest)] == expected

        await pipeline.process_batch(records_of([_erasure(ERASED, "2026-11-20T11:00:00Z")],
                                                topic="p.consent"))
        async with pool.acquire() as connection:
            assert await connection.fetch(states_of, erased) == []
            assert await connection.fetchval(
                "SELECT count(*) FROM webhooks.feedback_signals WHERE user_digest = $1",
                erased) == 0
            assert [tuple(r) for r in await connection.fetch(states_of, kept)] == expected
            assert await connection.fetchval(
                "SELECT count(*) FROM webhooks.feedback_signals WHERE user_digest = $1",
                kept) == 3

        await pipeline.process_batch(records_of([
            _feedback(ERASED, "r-flip", {"correction": {"text": "words after the erasure"}},
                      "2026-11-20T11:00:03Z")]))
        async with pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT event_type, body FROM webhooks.deliveries WHERE user_digest = $1", erased)
            assert [r["event_type"] for r in rows] == ["feedback.submitted"]
            assert "previous" not in orjson.loads(rows[0]["body"])["data"]
            assert SECRET_TEXT in await _everything(connection)  # the kept user's
            assert await connection.fetchval(
                "SELECT count(*) FROM webhooks.deliveries WHERE user_digest <> $1 "
                "AND body LIKE '%' || $2 || '%'", kept, SECRET_TEXT) == 0
    finally:
        await pool.close()
