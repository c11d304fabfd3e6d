"""The pipeline's delivery rules against a real PostgreSQL that goes away and comes back,
and the metrics consumer's exact rollups when feedback arrives before its response."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import orjson
import pytest
from prometheus_client import CollectorRegistry

from feedbackloop.contract import load_samples
from feedbackloop.embedded import EmbeddedPostgres, free_port
from feedbackloop.migrations import apply_migrations
from feedbackloop.observability import ConsumerMetrics
from feedbackloop.pipeline.consumer import BatchPipeline, DeadLetterGuard, DeadLetterStorm
from feedbackloop.postgres import create_pool
from services.metrics.handlers import SPEC as METRICS
from services.profiles.handlers import SPEC as PROFILES
from tests.infra import CollectedDeadLetters, Record, create_database, records_of

pytestmark = pytest.mark.integration


def _records(docs: list[dict]) -> list[Record]:
    return records_of([orjson.dumps(doc) for doc in docs])


async def test_postgres_outage_is_retried_not_dead_lettered(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", free_port(), fast=True)
    server.start()
    try:
        connection = await asyncpg.connect(server.url)
        await apply_migrations(connection)
        await connection.close()
        pool = await create_pool(server.url, min_size=1, max_size=2)
        sink = CollectedDeadLetters()
        pipeline = BatchPipeline(PROFILES, pool, sink, ConsumerMetrics(CollectorRegistry(),
                                 "profiles"), retry_max_seconds=0.5)
        # Profiles are of users: every sample naming one (not the anonymous, keyed one).
        docs = [doc for doc in load_samples()["feedback.submitted"] if "user_id" in doc]
        server.stop()
        work = asyncio.create_task(pipeline.process_batch(_records(docs)))
        await asyncio.sleep(2.0)
        assert not work.done(), "the batch finished while PostgreSQL was down"
        assert not pipeline.retry_state.healthy
        server.start()
        outcome = await asyncio.wait_for(work, timeout=60)
        assert outcome.applied == len(docs) and outcome.dead_lettered == 0
        assert sink.items == []
        assert pipeline.retry_state.healthy
        assert await pool.fetchval("SELECT count(*) FROM profiles.feedback") == len(docs)
        again = await pipeline.process_batch(_records(docs))
        assert (again.applied, again.duplicates) == (0, len(docs))
        await pool.close()
    finally:
        server.stop()


async def test_a_row_postgres_rejects_is_isolated_and_dead_lettered(postgres_url: str) -> None:
    database = await create_database(postgres_url)
    pool = await create_pool(database, min_size=1, max_size=2)
    sink = CollectedDeadLetters()
    pipeline = BatchPipeline(PROFILES, pool, sink, ConsumerMetrics(CollectorRegistry(), "p"))
    good = load_samples()["feedback.submitted"][0]
    # A NUL character is valid JSON and a valid string, but PostgreSQL text cannot hold it.
    bad = good | {"event_id": str(uuid.uuid4()),
                  "payload": {"response_id": "r", "comment": {"text": "bad \u0000 byte"}}}
    outcome = await pipeline.process_batch(_records([bad, good]))
    assert (outcome.applied, outcome.dead_lettered) == (1, 1)
    assert sink.items[0].record.offset == 0
    assert sink.items[0].error_class == "CharacterNotInRepertoireError"
    assert await pool.fetchval("SELECT count(*) FROM profiles.feedback") == 1
    await pool.close()


async def test_feedback_before_its_response_moves_to_the_response_dimensions(
    postgres_url: str,
) -> None:
    database = await create_database(postgres_url)
    pool = await create_pool(database, min_size=1, max_size=2)
    sink = CollectedDeadLetters()
    pipeline = BatchPipeline(METRICS, pool, sink, ConsumerMetrics(CollectorRegistry(), "m"))
    response = load_samples()["response.logged"][0]
    # Three people's votes: one person's three votes on a response would be one signal.
    votes = [
        load_samples()["feedback.submitted"][0]
        | {"event_id": str(uuid.uuid4()), "user_id": uuid.uuid4().hex * 2}
        for _ in range(3)
    ]
    votes[1]["payload"] = {"response_id": "resp-1", "thumb": "down"}
    await pipeline.process_batch(_records(votes))
    rows = await pool.fetch("SELECT action_type, model, thumbs_up, thumbs_down "
                            "FROM metrics.feedback_minute")
    assert [tuple(r) for r in rows] == [("unknown", "unknown", 2, 1)]
    await pipeline.process_batch(_records([response]))
    rows = await pool.fetch("SELECT action_type, model, thumbs_up, thumbs_down "
                            "FROM metrics.feedback_minute WHERE thumbs_up + thumbs_down > 0")
    assert [tuple(r) for r in rows] == [("todo", "gpt-4o-mini", 2, 1)]
    # A second logging of the same response changes nothing.
    await pipeline.process_batch(_records([response | {"event_id": str(uuid.uuid4())}]))
    total = await pool.fetchrow("SELECT sum(thumbs_up) AS up, sum(thumbs_down) AS down "
                                "FROM metrics.feedback_minute")
    assert (total["up"], total["down"]) == (2, 1)
    assert sink.items == []
    await pool.close()


async def test_a_dead_letter_storm_stops_the_consumer_instead_of_draining(
    postgres_url: str,
) -> None:
    database = await create_database(postgres_url)
    pool = await create_pool(database, min_size=1, max_size=2)
    sink = CollectedDeadLetters()
    pipeline = BatchPipeline(PROFILES, pool, sink, ConsumerMetrics(CollectorRegistry(), "p"),
                             guard=DeadLetterGuard(max_ratio=0.5, window=1_000, min_records=100))
    good = load_samples()["feedback.submitted"][0]
    healthy = [good | {"event_id": str(uuid.uuid4())} for _ in range(150)]
    a_little_poison = [good | {"event_id": str(uuid.uuid4())} for _ in range(40)]
    a_little_poison[::4] = [{"type": "feedback.submitted", "garbage": True}] * 10
    assert (await pipeline.process_batch(_records(healthy))).applied == 150
    outcome = await pipeline.process_batch(_records(a_little_poison))
    assert (outcome.applied, outcome.dead_lettered) == (30, 10)

    bad_deploy = [{"type": "feedback.submitted", "schema_version": 1}] * 300
    with pytest.raises(DeadLetterStorm):
        await pipeline.process_batch(_records(bad_deploy))
    assert len(sink.items) == 10, "nothing of the storm batch may reach the dead-letter queue"
    assert not pipeline.retry_state.healthy and "dead-lettered" in (pipeline.retry_state.storm or "")
    assert await pool.fetchval("SELECT count(*) FROM profiles.feedback") == 180

    # After the fix the same records flow again, and the consumer is healthy.
    fixed = [good | {"event_id": str(uuid.uuid4())} for _ in range(300)]
    assert (await pipeline.process_batch(_records(fixed))).applied == 300
    assert pipeline.retry_state.healthy
    await pool.close()
