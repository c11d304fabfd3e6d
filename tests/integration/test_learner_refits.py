"""The learner's batched refits against real PostgreSQL: nothing is refitted below the batch
size, an accepted refit is a stored version with its sample size, intervals and confidence,
and a version whose publication failed is published on the next pass."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np
import pytest

from feedbackloop.kafka import OutgoingMessage
from feedbackloop.postgres import create_pool
from services.learner.learning import FitOptions
from services.learner.processing import ChoiceMade, SessionShown
from services.learner.refits.config import RefitConfig
from services.learner.refits.full import refit_due
from services.learner.repository import write_effects
from services.learner.weights_outbox import publish_unpublished
from tests.infra import create_database

pytestmark = pytest.mark.integration
TRUTH = {"price": 0.6, "quality": 0.3, "speed": 0.1}


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[Any]:
    pool = await create_pool(await create_database(postgres_url), min_size=1, max_size=3)
    yield pool
    await pool.close()


def _choices(count: int, segment: str, seed: int, tenant: str = "acme",
             truth: dict[str, float] = TRUTH) -> list[Any]:
    """Sessions of 4 options and a logit customer with weights `truth` (scale 6)."""
    rng = np.random.default_rng(seed)
    effects: list[Any] = []
    now = datetime.now(UTC)
    for _ in range(count):
        session = uuid.uuid4().hex
        scores = rng.uniform(size=(4, 3))
        options = [
            {"item_id": f"i{j}", "rank": j + 1,
             "scores": dict(zip(truth, map(float, row), strict=True))}
            for j, row in enumerate(scores)
        ]
        utility = 6 * scores @ np.array(list(truth.values())) + rng.gumbel(size=4)
        chosen = int(np.argmax(utility))
        effects.append(SessionShown(tenant, session, uuid.uuid4(), "u", "defaults", segment,
                                    "simple", [], options, None, None, now))
        effects.append(ChoiceMade(tenant, uuid.uuid4(), session, "u", f"i{chosen}", chosen + 1,
                                  [], 3.0, 4, None, now))
    return effects


async def _write(pool: Any, effects: list[Any]) -> None:
    async with pool.acquire() as connection, connection.transaction():
        await write_effects(connection, effects)


CONFIG = RefitConfig(min_new_choices=100, interval_seconds=3_600, min_choices=50,
                     fit=FitOptions())


async def test_refits_are_batched_and_versioned(pool: Any) -> None:
    await _write(pool, _choices(60, "price_sensitive", seed=1))
    assert await refit_due(pool, CONFIG) == []  # 60 new < 100, and the hour has not passed
    assert await pool.fetchval("SELECT count(*) FROM learner.weights_versions") == 0

    await _write(pool, _choices(60, "price_sensitive", seed=2))
    outcomes = await refit_due(pool, CONFIG)
    assert [(o.tenant_id, o.segments, o.versions) for o in outcomes] == [
        ("acme", ["price_sensitive"], {"global": 1, "price_sensitive": 1})
    ]
    row = await pool.fetchrow(
        "SELECT * FROM learner.weights_versions WHERE segment = 'price_sensitive'"
    )
    assert row["version"] == 1 and row["sample_size"] == 120
    assert sum(row["weights"].values()) == pytest.approx(1.0)
    assert row["weights"]["price"] > row["weights"]["quality"] > row["weights"]["speed"]
    assert set(row["intervals"]) == set(TRUTH)
    for name, (low, high) in row["intervals"].items():
        assert 0.0 <= low <= high <= 1.0, name
    assert 0.0 < row["confidence"] < 1.0
    assert row["published_at"] is None
    # Everything was read: nothing is due until new choices arrive.
    assert await refit_due(pool, CONFIG) == []

    await _write(pool, _choices(150, "price_sensitive", seed=3))
    await refit_due(pool, CONFIG)
    versions = await pool.fetch(
        "SELECT version, sample_size, confidence FROM learner.weights_versions "
        "WHERE segment = 'price_sensitive' ORDER BY version"
    )
    assert [(v["version"], v["sample_size"]) for v in versions] == [(1, 120), (2, 270)]
    assert versions[1]["confidence"] > versions[0]["confidence"]


async def test_a_segment_below_the_minimum_gets_no_version_but_waits_for_new_choices(
    pool: Any
) -> None:
    config = RefitConfig(min_new_choices=20, interval_seconds=3_600, min_choices=50)
    await _write(pool, _choices(30, "speed_priority", seed=4))
    outcomes = await refit_due(pool, config)
    assert outcomes[0].versions == {}  # 30 < 50: defaults stay; the global fit has 30 too
    assert await pool.fetchval("SELECT count(*) FROM learner.weights_versions") == 0
    assert await refit_due(pool, config) == []


async def test_a_version_whose_publication_failed_is_published_on_the_next_pass(
    pool: Any
) -> None:
    await _write(pool, _choices(100, "quality_focused", seed=5))
    await refit_due(pool, CONFIG)
    sent: list[tuple[str, bytes]] = []

    async def broken(messages: Sequence[OutgoingMessage]) -> None:
        raise ConnectionError("broker down")

    async def working(messages: Sequence[OutgoingMessage]) -> None:
        sent.extend((message.key.decode(), message.value) for message in messages)

    with pytest.raises(ConnectionError):
        await publish_unpublished(pool, broken)
    assert await pool.fetchval(
        "SELECT count(*) FROM learner.weights_versions WHERE published_at IS NULL") == 2
    assert await publish_unpublished(pool, working) == 2
    assert sorted(key for key, _ in sent) == ["acme:global", "acme:quality_focused"]
    assert b'"version":1' in sent[0][1] and b'"sample_size":100' in sent[0][1]
    assert await publish_unpublished(pool, working) == 0
    assert await pool.fetchval(
        "SELECT count(*) FROM learner.weights_versions WHERE published_at IS NULL") == 0


async def test_the_read_watermark_stops_before_open_transactions(postgres_url: str) -> None:
    from services.learner.repository import read_watermark

    database = await create_database(postgres_url)
    reader = await asyncpg.connect(database)
    writer = await asyncpg.connect(database)
    try:
        transaction = writer.transaction()
        await transaction.start()
        started = await writer.fetchval("SELECT now()")
        await asyncio.sleep(0.05)
        # A choice written now carries `started` as its recorded_at, yet commits after the read.
        assert await read_watermark(reader) <= started
        await transaction.rollback()
        assert await read_watermark(reader) > started
    finally:
        await reader.close()
        await writer.close()


async def test_a_refit_reads_only_before_its_watermark_so_each_choice_counts_once(
    postgres_url: str,
) -> None:
    from services.learner.refits import store
    from services.learner.refits.incremental import update_incrementally
    from services.learner.repository import pending_choices

    database = await create_database(postgres_url)
    pool = await create_pool(database, min_size=1, max_size=3)
    writer = await pool.acquire()
    try:
        await _write(pool, _choices(100, "price_sensitive", seed=30))
        late = writer.transaction()
        await late.start()  # its choice's recorded_at is this start: the refit's watermark
        await write_effects(writer, _choices(1, "price_sensitive", seed=31))
        await asyncio.sleep(0.01)
        await _write(pool, _choices(100, "price_sensitive", seed=32))
        [outcome] = await refit_due(pool, CONFIG)
        assert outcome.sample_size == 100  # the 100 before the watermark, not those after it
        # While the transaction stays open the 100 after it cannot be read: they do not make a
        # refit due again on the same data (a version per poll).
        assert await refit_due(pool, CONFIG) == []
        assert await pool.fetchval("SELECT count(DISTINCT version) FROM learner.weights_versions"
                                   " WHERE segment = 'price_sensitive'") == 1
        await late.commit()
        [pending] = await pending_choices(pool)
        assert pending.new_choices == 101  # the late one and the 100 after it, once each
        [update] = await update_incrementally(pool, CONFIG)
        assert update.choices == 101
        newest = await store.newest_version(pool, tenant_id="acme", segment="price_sensitive")
        assert newest is not None and newest["sample_size"] == 201
        assert await pool.fetchval("SELECT count(*) FROM learner.choices") == 201
    finally:
        await pool.release(writer)
        await pool.close()


async def test_a_mark_of_before_the_event_ids_still_reads_every_choice_at_its_time(
    pool: Any,
) -> None:
    from services.learner.repository import pending_choices

    await _write(pool, _choices(5, "price_sensitive", seed=41))
    # A row as a refit wrote it before migration 0026: a time alone.
    await pool.execute(
        "INSERT INTO learner.refit_state (tenant_id, segment, fitted_through, fitted_at) "
        "SELECT 'acme', 'price_sensitive', max(recorded_at), now() FROM learner.choices")
    assert await pending_choices(pool) == []
    await _write(pool, _choices(2, "price_sensitive", seed=42))
    [pending] = await pending_choices(pool)
    assert pending.new_choices == 2


async def test_migration_0026_keeps_an_index_built_first_and_refuses_others_of_its_name(
    postgres_url: str,
) -> None:
    """An index of 0026's name defined otherwise, or INVALID, stops the migration with what to
    do, before it changes anything; one built CONCURRENTLY first, as the deployment notes say,
    is kept."""
    from feedbackloop.migrations import apply_migrations
    from tests.integration.test_migration_race import _empty_database

    connection = await asyncpg.connect(await _empty_database(postgres_url))
    try:
        await apply_migrations(connection, up_to=25)
        await connection.execute("CREATE INDEX choices_by_recorded_event "
                                 "ON learner.choices (tenant_id, recorded_at)")
        with pytest.raises(asyncpg.RaiseError, match=r"choices_by_recorded_event is "
                           r"\"CREATE INDEX .*\(tenant_id, recorded_at\)\", not"):
            await apply_migrations(connection)
        await connection.execute(
            "DROP INDEX learner.choices_by_recorded_event; CREATE INDEX "
            "choices_by_recorded_event ON learner.choices (tenant_id, recorded_at, event_id); "
            "UPDATE pg_index SET indisvalid = false "
            "WHERE indexrelid = 'learner.choices_by_recorded_event'::regclass")
        with pytest.raises(asyncpg.RaiseError, match="choices_by_recorded_event is INVALID"):
            await apply_migrations(connection)
        assert await connection.fetchval(
            "SELECT max(version) FROM public.schema_migrations") == 25
        assert await connection.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'learner' "
            "AND table_name = 'refit_state' AND column_name LIKE '%_event'") == 0

        await connection.execute("DROP INDEX learner.choices_by_recorded_event")
        await connection.execute("CREATE INDEX CONCURRENTLY choices_by_recorded_event "
                                 "ON learner.choices (tenant_id, recorded_at, event_id)")
        built = await connection.fetchval(
            "SELECT 'learner.choices_by_recorded_event'::regclass::oid")
        assert [m.version for m in await apply_migrations(connection)] == [26]
        assert await connection.fetchval(
            "SELECT 'learner.choices_by_recorded_event'::regclass::oid") == built
        assert await connection.fetchval(
            "SELECT to_regclass('learner.choices_by_recorded')") is None
    finally:
        await connection.close()
