"""Approval, model comparison and the alert inputs read from the day, hour and minute rollups
equal the minute rollup alone, on a real PostgreSQL, for random ranges with unaligned edges: the
rollups are written by the metrics consumer's own writer, from votes crowded around hour and day
boundaries, in two tenants."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from feedbackloop.postgres import create_pool
from services.metrics import reads as repository
from services.metrics.processing import COUNTERS, FeedbackCounts, minute_bucket
from services.metrics.repository import write_effects
from services.metrics.rollups import rollup_spans
from tests.infra import create_database

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, tzinfo=UTC)
SPAN = timedelta(days=40)
ACTIONS = ("todo", "email", "summary", "reply")
MODELS = ("m1", "m2", "m3")


def _moment(rng: random.Random) -> datetime:
    """Anywhere in the 40 days, or within two minutes of an hour or a day boundary."""
    moment = T0 + SPAN * rng.random()
    if rng.random() < 0.5:
        step = timedelta(days=1) if rng.random() < 0.5 else timedelta(hours=1)
        boundary = T0 + ((moment - T0) // step) * step
        moment = boundary + timedelta(seconds=rng.uniform(-120, 120))
    return moment


def _vote(rng: random.Random) -> FeedbackCounts:
    signal = rng.choice(("up", "up", "up", "down", "rating"))
    counts = {name: 0 for name in COUNTERS}
    if signal == "rating":
        counts |= {"rating_sum": rng.randint(1, 5), "rating_count": 1}
    else:
        counts[f"thumbs_{signal}"] = 1
    return FeedbackCounts(
        tenant_id=rng.choice(("acme", "acme", "acme", "globex")),
        event_id=uuid.UUID(int=rng.getrandbits(128)),
        response_id=f"r{rng.randrange(500)}",
        bucket=minute_bucket(_moment(rng)),
        action_type=rng.choice(ACTIONS),
        model=rng.choice(MODELS),
        counts=tuple(counts[name] for name in COUNTERS),
    )


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[Any]:
    database = await create_database(postgres_url)
    pool = await create_pool(database, min_size=1, max_size=2)
    rng = random.Random(20260301)
    async with pool.acquire() as connection:
        for _ in range(8):
            async with connection.transaction():
                await write_effects(connection, [_vote(rng) for _ in range(500)])
    yield pool
    await pool.close()


async def _minute_scan(pool: Any, column: str, start: datetime, end: datetime) -> list[tuple]:
    """The approval query as it was: every minute of the range from the minute rollup."""
    rows = await pool.fetch(
        f"""
        SELECT {column} AS grp, sum(thumbs_up)::bigint AS up, sum(thumbs_down)::bigint AS down
        FROM metrics.feedback_minute
        WHERE tenant_id = 'acme' AND bucket >= $1 AND bucket < $2
        GROUP BY {column}
        HAVING sum(thumbs_up) + sum(thumbs_down) > 0
        ORDER BY {column}
        """,
        start, end,
    )
    return [tuple(row) for row in rows]


def _ranges(rng: random.Random, count: int) -> list[tuple[datetime, datetime]]:
    """Random ranges from under a minute to the whole data set, with microsecond edges, and
    ranges whose edges sit exactly on, or a second either side of, day and hour boundaries."""
    ranges = []
    for _ in range(count):
        start = T0 - timedelta(days=1) + (SPAN + timedelta(days=2)) * rng.random()
        length = rng.choice((timedelta(minutes=1), timedelta(hours=2), timedelta(days=3), SPAN))
        ranges.append((start, start + length * rng.random() + timedelta(microseconds=1)))
    day, hour, second = timedelta(days=1), timedelta(hours=1), timedelta(seconds=1)
    for nudge in (-second, timedelta(0), second):
        ranges += [
            (T0 + 3 * day + nudge, T0 + 33 * day + nudge),
            (T0 + 3 * day + 5 * hour + nudge, T0 + 33 * day - 7 * hour - nudge),
            (T0 + 9 * day - nudge, T0 + 9 * day + 50 * hour + nudge),
            (T0 - day, T0 + SPAN + day + nudge),
        ]
    return ranges


async def test_approval_from_the_coarsest_rollups_equals_the_minute_scan(pool: Any) -> None:
    rng = random.Random(7)
    checked_with_days = 0
    for start, end in _ranges(rng, 150):
        for group_by, column in (("action_type", "action_type"), ("model", "model"),
                                 ("tenant", "tenant_id")):
            rows = await repository.approval_by_group(
                pool, tenant_id="acme", group_by=group_by, start=start, end=end  # type: ignore[arg-type]
            )
            assert [tuple(row) for row in rows] == await _minute_scan(pool, column, start, end), (
                group_by, start, end
            )
        checked_with_days += any(interval == "day" for interval, _, _ in rollup_spans(start, end))
    assert checked_with_days >= 30  # the day rollup was read, not only the edges


async def test_model_comparison_from_the_coarsest_rollups_equals_the_minute_scan(pool: Any) -> None:
    rng = random.Random(11)
    for start, end in _ranges(rng, 60):
        for action_type in (None, "email"):
            votes = await repository.approval_of_models(
                pool, tenant_id="acme", models=["m1", "m3"], action_type=action_type,
                start=start, end=end,
            )
            rows = await pool.fetch(
                """
                SELECT model, sum(thumbs_up)::bigint, sum(thumbs_down)::bigint
                FROM metrics.feedback_minute
                WHERE tenant_id = 'acme' AND model = ANY($1::text[]) AND bucket >= $2
                  AND bucket < $3 AND ($4::text IS NULL OR action_type = $4)
                GROUP BY model
                """,
                ["m1", "m3"], start, end, action_type,
            )
            expected = {row[0]: (int(row[1]), int(row[2])) for row in rows}
            assert votes == {m: expected.get(m, (0, 0)) for m in ("m1", "m3")}, (start, end)


async def test_alert_window_totals_from_the_coarsest_rollups_equal_the_minute_scan(pool: Any) -> None:
    sums = ", ".join(f"sum({c})::bigint" for c in COUNTERS)
    rng = random.Random(13)
    for start, end in _ranges(rng, 60):
        totals = await repository.feedback_window_totals(pool, start=start, end=end)
        expected = await pool.fetch(
            f"""
            SELECT tenant_id, action_type, model, {sums}
            FROM metrics.feedback_minute
            WHERE bucket >= $1 AND bucket < $2
            GROUP BY tenant_id, action_type, model
            """,
            start, end,
        )
        assert sorted(map(tuple, totals)) == sorted(map(tuple, expected)), (start, end)
