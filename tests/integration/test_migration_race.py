"""A consumer whose batch meets a schema that is behind the code, or that a migration changes
under it, waits for the migration instead of dead-lettering good events: the race a rolling
deploy runs every time it adds a column while consumers run, made to happen on purpose."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import orjson
import pytest
from prometheus_client import CollectorRegistry

from feedbackloop.contract import load_samples
from feedbackloop.migrations import apply_migrations
from feedbackloop.observability import ConsumerMetrics
from feedbackloop.pipeline.consumer import BatchPipeline
from feedbackloop.postgres import create_pool
from services.metrics.handlers import SPEC as METRICS
from tests.infra import CollectedDeadLetters, records_of

pytestmark = pytest.mark.integration

# 0008 adds the columns (prompt_version among them) the metrics consumer writes.
BEFORE_METRICS_DIMENSIONS = 7


def _feedback(count: int) -> list[dict]:
    """Thumbs on as many responses: one signal each (the same person on one response would
    be one signal, changed)."""
    sample = load_samples()["feedback.submitted"][0]
    tag = uuid.uuid4().hex[:8]
    return [sample | {"event_id": str(uuid.uuid4()),
                      "payload": sample["payload"] | {"response_id": f"r-{tag}-{n}"}}
            for n in range(count)]


async def _empty_database(server_url: str) -> str:
    name = f"test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return f"{server_url.rpartition('/')[0]}/{name}"


async def _migrate(url: str, up_to: int | None = None) -> None:
    connection = await asyncpg.connect(url)
    try:
        await apply_migrations(connection, up_to=up_to)
    finally:
        await connection.close()


async def _until_retrying(pipeline: BatchPipeline, work: asyncio.Task) -> str:
    async with asyncio.timeout(30):
        while pipeline.retry_state.failing_since is None:
            assert not work.done(), f"the batch ended without meeting the old schema: {work}"
            await asyncio.sleep(0.02)
    return pipeline.retry_state.last_error or ""


async def test_a_batch_ahead_of_its_migration_waits_for_it_and_applies_once(
    postgres_url: str,
) -> None:
    database = await _empty_database(postgres_url)
    await _migrate(database, up_to=BEFORE_METRICS_DIMENSIONS)
    pool = await create_pool(database, min_size=1, max_size=2)
    sink = CollectedDeadLetters()
    pipeline = BatchPipeline(METRICS, pool, sink, ConsumerMetrics(CollectorRegistry(), "m"),
                             retry_max_seconds=0.2)
    docs = _feedback(20)

    work = asyncio.create_task(pipeline.process_batch(records_of([orjson.dumps(d) for d in docs])))
    error = await _until_retrying(pipeline, work)
    # A column or a table the later migrations add, whichever the write reaches first.
    assert "UndefinedColumnError" in error or "UndefinedTableError" in error, error
    assert not pipeline.retry_state.healthy, "a consumer waiting for its schema is not ready"
    await asyncio.sleep(0.5)
    assert not work.done(), "the batch must wait for the migration"

    await _migrate(database)
    outcome = await asyncio.wait_for(work, timeout=60)
    assert (outcome.applied, outcome.dead_lettered) == (len(docs), 0)
    assert sink.items == []
    assert pipeline.retry_state.healthy
    assert await pool.fetchval("SELECT count(*) FROM metrics.processed_events") == len(docs)
    assert await pool.fetchval("SELECT sum(thumbs_up + thumbs_down) FROM metrics.feedback_minute") \
        == len(docs)
    again = await pipeline.process_batch(records_of([orjson.dumps(d) for d in docs]))
    assert (again.applied, again.duplicates) == (0, len(docs))
    await pool.close()


async def test_a_migration_that_changes_a_cached_statement_is_retried_on_fresh_connections(
    postgres_url: str,
) -> None:
    database = await _empty_database(postgres_url)
    await _migrate(database)
    # One connection, so the second batch runs on the connection that cached the claim.
    pool = await create_pool(database, min_size=1, max_size=1)
    sink = CollectedDeadLetters()
    pipeline = BatchPipeline(METRICS, pool, sink, ConsumerMetrics(CollectorRegistry(), "m"),
                             retry_max_seconds=0.2)
    first, second = _feedback(5), _feedback(7)
    assert (await pipeline.process_batch(records_of([orjson.dumps(d) for d in first]))).applied == 5

    # A migration changes the type the claim statement returns: its cached plan is invalid.
    await pool.execute("ALTER TABLE metrics.processed_events ALTER COLUMN tenant_id TYPE varchar")
    outcome = await pipeline.process_batch(records_of([orjson.dumps(d) for d in second]))
    assert (outcome.applied, outcome.dead_lettered) == (7, 0)
    assert sink.items == []
    assert pipeline.retry_state.healthy
    assert await pool.fetchval("SELECT count(*) FROM metrics.processed_events") == 12
    await pool.close()
