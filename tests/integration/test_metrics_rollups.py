"""The metrics consumer's rollups against a real PostgreSQL: exact under redelivery and a
restart, late signals re-attributed when their subject arrives, late events in their minute,
and the hour and day rollups always equal to the minute rollup they summarize."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from feedbackloop.contract import Event, encode_event
from feedbackloop.migrations import apply_migrations, available_migrations
from feedbackloop.observability import ConsumerMetrics
from feedbackloop.pipeline.consumer import BatchPipeline
from feedbackloop.postgres import create_pool
from services.metrics.handlers import build_spec
from tests.infra import CollectedDeadLetters, Record, create_database, records_of
from tests.ops.events import choice, feedback, response, session

pytestmark = pytest.mark.integration
T0 = datetime(2026, 5, 4, 23, 58, tzinfo=UTC)  # the minutes cross an hour and a day boundary
FEEDBACK_COUNTERS = ("thumbs_up", "thumbs_down", "rating_sum", "rating_count")
RECOMMENDATION_COUNTERS = (
    "sessions", "choices", "none_chosen", "chosen_rank_sum", "chosen_rank_count",
    "satisfaction_sum", "satisfaction_count", "decision_ms_sum", "decision_count",
)


def _records(events: list[Event]) -> list[Record]:
    return records_of([encode_event(e) for e in events], topic="p.x")


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[Any]:
    database = await create_database(postgres_url)
    pool = await create_pool(database, min_size=1, max_size=2)
    yield pool
    await pool.close()


def _pipeline(pool: Any, sink: CollectedDeadLetters, lateness: timedelta = timedelta(hours=48)) -> Any:
    return BatchPipeline(
        build_spec(lateness), pool, sink, ConsumerMetrics(CollectorRegistry(), "metrics")
    )


def _story() -> list[Event]:
    """Feedback before and after its response, sessions and choices in either order, and a
    vote reported a day late: 2 responses, 6 votes, 3 sessions, 4 choices."""
    t = T0
    return [
        feedback("r1", t, thumb="down", action_type="email"),  # before its response
        feedback("r1", t + timedelta(minutes=1), thumb="up"),
        response("r1", t, action_type="todo", model="m1", prompt_version="v2", language="de",
                 feature="lists", experiment="tone", variant="b"),
        feedback("r1", t + timedelta(minutes=2), thumb="up"),
        feedback("r1", t + timedelta(minutes=2), rating=4),
        response("r2", t, action_type="todo", model="m2"),
        feedback("r2", t + timedelta(minutes=3), thumb="down"),
        feedback("r2", t, thumb="down", received_at=t + timedelta(days=1)),  # a day late
        choice("s1", t + timedelta(minutes=1), rank=2, satisfaction=4, decision_seconds=1.5),
        session("s1", t, segment="price_sensitive", variant="a"),
        session("s2", t + timedelta(minutes=2)),
        choice("s2", t + timedelta(minutes=3), rank=1, satisfaction=2),
        choice("s2", t + timedelta(minutes=3), rank=None, decision_seconds=0.25),
        session("s3", t + timedelta(minutes=2)),
        choice("s9", t, rank=3),  # its session is never logged
    ]


async def _totals(pool: Any, table: str, counters: tuple[str, ...], dims: str) -> dict:
    rows = await pool.fetch(
        f"SELECT {dims} AS dims, {', '.join(f'sum({c})::bigint AS {c}' for c in counters)} "
        f"FROM metrics.{table} GROUP BY {dims} ORDER BY {dims}"
    )
    return {
        r["dims"]: tuple(r[c] for c in counters)
        for r in rows if any(r[c] for c in counters)
    }


async def _assert_coarse_rollups_match_minutes(pool: Any) -> None:
    for family, counters, dims in (
        ("feedback", FEEDBACK_COUNTERS,
         "(action_type, model, prompt_version, experiment, variant, language, feature)"),
        ("recommendation", RECOMMENDATION_COUNTERS, "(algorithm_version, segment, experiment, variant)"),
    ):
        for unit in ("hour", "day"):
            truncated = f"(date_trunc('{unit}', bucket, 'UTC'), {dims[1:-1]})"
            minutes = await _totals(pool, f"{family}_minute", counters, truncated)
            coarse = await _totals(pool, f"{family}_{unit}", counters, f"(bucket, {dims[1:-1]})")
            assert minutes == coarse, f"{family}_{unit} differs from {family}_minute"
            assert minutes, f"{family}: nothing counted"


async def test_rollups_are_exact_after_redelivery_and_a_restart(pool: Any) -> None:
    sink = CollectedDeadLetters()
    story = _story()
    first = await _pipeline(pool, sink).process_batch(_records(story[:9]))
    assert first.applied == 9
    # A restart: a new pipeline redelivers the uncommitted tail and the whole batch again,
    # in a different order within the redelivered part.
    redelivered = story[:9] + story[9:]
    second = await _pipeline(pool, sink).process_batch(_records(redelivered))
    assert (second.applied, second.duplicates) == (len(story) - 9, 9)
    shuffled = story[:]
    random.Random(4).shuffle(shuffled)
    third = await _pipeline(pool, sink).process_batch(_records(shuffled))
    assert (third.applied, third.duplicates) == (0, len(story))
    assert sink.items == []

    feedback_rows = await _totals(
        pool, "feedback_minute", FEEDBACK_COUNTERS,
        "(action_type, model, prompt_version, experiment, variant, language, feature)",
    )
    assert feedback_rows == {
        ("todo", "m1", "v2", "tone", "b", "de", "lists"): (2, 1, 4, 1),
        ("todo", "m2", "unknown", "unknown", "unknown", "unknown", "unknown"): (0, 2, 0, 0),
    }
    recommendation_rows = await _totals(
        pool, "recommendation_minute", RECOMMENDATION_COUNTERS,
        "(algorithm_version, segment, experiment, variant)",
    )
    assert recommendation_rows == {
        ("match-1", "price_sensitive", "unknown", "a"): (1, 1, 0, 2, 1, 4, 1, 1500, 1),
        ("match-1", "balanced", "unknown", "unknown"): (2, 1, 1, 1, 1, 2, 1, 250, 1),
        ("unknown", "unknown", "unknown", "unknown"): (0, 1, 0, 3, 1, 0, 0, 0, 0),
    }
    # The vote reported a day late is in the minute it occurred, not the one it arrived in.
    late = await pool.fetchval(
        "SELECT thumbs_down FROM metrics.feedback_minute WHERE model = 'm2' AND bucket = $1", T0
    )
    assert late == 1
    # Every fact's rollup equals the sum of the facts (the moved ones included).
    facts = await pool.fetchrow(
        "SELECT sum(thumbs_up) AS up, sum(thumbs_down) AS down, "
        "count(*) FILTER (WHERE NOT resolved) AS unresolved FROM metrics.feedback_facts"
    )
    assert (facts["up"], facts["down"], facts["unresolved"]) == (2, 3, 0)
    unresolved = await pool.fetchval("SELECT count(*) FROM metrics.choice_facts WHERE NOT resolved")
    assert unresolved == 1  # s9
    await _assert_coarse_rollups_match_minutes(pool)


async def test_the_same_session_logged_twice_counts_once(pool: Any) -> None:
    sink = CollectedDeadLetters()
    t = T0
    await _pipeline(pool, sink).process_batch(
        _records([session("s1", t), session("s1", t + timedelta(minutes=5), segment="premium_buyer")])
    )
    rows = await pool.fetch(
        "SELECT bucket, segment, sessions FROM metrics.recommendation_minute WHERE sessions > 0"
    )
    assert [tuple(r) for r in rows] == [(t, "balanced", 1)]


async def test_events_later_than_the_window_count_in_its_oldest_minute(pool: Any) -> None:
    sink = CollectedDeadLetters()
    window = timedelta(hours=1)
    received = T0 + timedelta(days=3)
    await _pipeline(pool, sink, window).process_batch(_records([
        response("r1", T0),
        feedback("r1", T0, thumb="down", received_at=received),
        feedback("r1", T0 + timedelta(minutes=30), thumb="up",
                 received_at=T0 + timedelta(minutes=80)),
    ]))
    rows = await pool.fetch(
        "SELECT bucket, thumbs_up, thumbs_down FROM metrics.feedback_minute ORDER BY bucket"
    )
    assert [tuple(r) for r in rows] == [
        (T0 + timedelta(minutes=30), 1, 0),  # 50 minutes late: within the window, its minute
        (received - window, 0, 1),  # 3 days late: counted, in the oldest minute still open
    ]


async def test_the_migration_backfills_hour_and_day_from_existing_minutes(postgres_url: str) -> None:
    """A database with minute rollups from before 0008 gets the hour and day rollups of them."""
    database = await create_database(postgres_url)
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(
            "DROP SCHEMA metrics CASCADE; DELETE FROM public.schema_migrations WHERE version IN (5, 8)"
        )
        await connection.execute(next(m.sql for m in available_migrations() if m.version == 5))
        await connection.execute(
            "INSERT INTO public.schema_migrations (version, name) VALUES (5, 'metrics')"
        )
        await connection.execute(
            """
            INSERT INTO metrics.feedback_minute (tenant_id, bucket, action_type, model, thumbs_up,
                thumbs_down, rating_sum, rating_count)
            VALUES ('acme', '2026-05-04 23:58Z', 'todo', 'm1', 1, 0, 4, 1),
                   ('acme', '2026-05-04 23:59Z', 'todo', 'm1', 2, 1, 0, 0),
                   ('acme', '2026-05-05 00:01Z', 'todo', 'm1', 0, 5, 0, 0)
            """
        )
        applied = await apply_migrations(connection)
        assert [m.version for m in applied] == [8]
        hours = await connection.fetch(
            "SELECT bucket, thumbs_up, thumbs_down, rating_sum, language FROM metrics.feedback_hour "
            "ORDER BY bucket"
        )
        assert [tuple(r) for r in hours] == [
            (datetime(2026, 5, 4, 23, tzinfo=UTC), 3, 1, 4, "unknown"),
            (datetime(2026, 5, 5, 0, tzinfo=UTC), 0, 5, 0, "unknown"),
        ]
        days = await connection.fetch("SELECT bucket, thumbs_down FROM metrics.feedback_day ORDER BY 1")
        assert [tuple(r) for r in days] == [
            (datetime(2026, 5, 4, tzinfo=UTC), 1), (datetime(2026, 5, 5, tzinfo=UTC), 5),
        ]
    finally:
        await connection.close()
