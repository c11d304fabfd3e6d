"""The metrics consumer's experiment counts against a real PostgreSQL: distinct units per
variant from exposures (a unit once, under its first variant; crossovers counted), exact under
redelivery; and the per-variant reads the analysis uses, including sums of squares that follow
the current signals when a person changes a rating."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from feedbackloop.contract import EVENT_ADAPTER, Event, encode_event
from feedbackloop.observability import ConsumerMetrics
from feedbackloop.pipeline.consumer import BatchPipeline
from feedbackloop.postgres import create_pool
from services.metrics.handlers import build_spec
from services.metrics.reads import experiment_buckets
from tests.infra import CollectedDeadLetters, create_database, records_of
from tests.ops.events import feedback, response

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 20, 9, 58, tzinfo=UTC)


def exposure(user: str, variant: str, at: datetime, experiment: str = "exp") -> Event:
    return EVENT_ADAPTER.validate_python({
        "event_id": str(uuid.uuid4()), "type": "experiment.exposure", "schema_version": 1,
        "tenant_id": "acme", "occurred_at": at.isoformat(), "received_at": at.isoformat(),
        "user_id": user, "experiment": experiment, "variant": variant,
        "payload": {"unit": "user", "source": "assign"},
    })


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[Any]:
    database = await create_database(postgres_url)
    pool = await create_pool(database, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def _apply(pool: Any, events: list[Event]) -> None:
    pipeline = BatchPipeline(build_spec(), pool, CollectedDeadLetters(),
                             ConsumerMetrics(CollectorRegistry(), "metrics"))
    await pipeline.process_batch(records_of([encode_event(e) for e in events], topic="p.x"))


async def test_units_count_once_under_their_first_variant_even_when_redelivered(pool: Any) -> None:
    t = T0
    events = [
        exposure("u1", "control", t),
        exposure("u2", "treatment", t),
        exposure("u1", "control", t + timedelta(minutes=1)),
        exposure("u3", "treatment", t + timedelta(minutes=3)),  # the next hour
        exposure("u3", "control", t + timedelta(minutes=4)),  # a crossover
        exposure("u1", "control", t, experiment="other"),
    ]
    await _apply(pool, events[:4])
    await _apply(pool, events)  # the first four again, as after a restart
    async with pool.acquire() as connection:
        hourly = await experiment_buckets(connection, tenant_id="acme", experiment="exp")
        daily = await experiment_buckets(connection, tenant_id="acme", experiment="exp",
                                         grain="day")
    assert [(b.bucket.hour, b.variant, b.units, b.exposures, b.crossovers) for b in hourly] == [
        (9, "control", 1, 2, 0), (9, "treatment", 1, 1, 0),
        (10, "control", 0, 1, 1), (10, "treatment", 1, 1, 0),
    ]
    assert {b.variant: b.units for b in daily} == {"control": 1, "treatment": 2}
    assert await pool.fetchval("SELECT count(*) FROM metrics.experiment_units") == 4
    async with pool.acquire() as connection:
        with pytest.raises(ValueError, match="grain"):
            await experiment_buckets(connection, tenant_id="acme", experiment="exp",
                                     grain="week")  # type: ignore[arg-type]


def erasure(user: str, at: datetime) -> Event:
    return EVENT_ADAPTER.validate_python({
        "event_id": str(uuid.uuid4()), "type": "user.erasure_requested", "schema_version": 1,
        "tenant_id": "acme", "occurred_at": at.isoformat(), "received_at": at.isoformat(),
        "user_id": user, "payload": {},
    })


async def test_an_erasure_forgets_the_users_units_in_every_experiment(pool: Any) -> None:
    t = T0
    await _apply(pool, [
        exposure("u1", "control", t), exposure("u1", "treatment", t, experiment="other"),
        exposure("u2", "treatment", t),
    ])
    assert await pool.fetchval("SELECT count(*) FROM metrics.experiment_units") == 3
    # In one batch: the erasure forgets what came before it; a later exposure is the user back.
    await _apply(pool, [erasure("u1", t + timedelta(minutes=1)),
                        exposure("u1", "treatment", t + timedelta(minutes=2))])
    rows = await pool.fetch("SELECT experiment, variant FROM metrics.experiment_units "
                            "ORDER BY experiment, variant")
    assert [tuple(r) for r in rows] == [("exp", "treatment"), ("exp", "treatment")]
    # An exposure from before the erasure arriving after it counts nothing, not even a unit.
    await _apply(pool, [exposure("u1", "control", t + timedelta(seconds=30), experiment="third")])
    assert await pool.fetchval(
        "SELECT count(*) FROM metrics.experiment_units WHERE experiment = 'third'") == 0
    async with pool.acquire() as connection:
        assert await experiment_buckets(connection, tenant_id="acme", experiment="third") == []
    # The counts per minute hold no one and stay: the units first exposed at T0 are still two.
    async with pool.acquire() as connection:
        buckets = await experiment_buckets(connection, tenant_id="acme", experiment="exp")
    assert sum(b.units for b in buckets) == 3 and sum(b.exposures for b in buckets) == 3


async def test_variant_sums_follow_the_current_signals(pool: Any) -> None:
    t = T0
    await _apply(pool, [
        response("r1", t, experiment="exp", variant="control"),
        response("r2", t, experiment="exp", variant="treatment"),
        feedback("r1", t, rating=2, user_id="a"),
        feedback("r1", t + timedelta(seconds=5), rating=5, user_id="a"),  # replaces the 2
        feedback("r1", t, rating=3, user_id="b"),
        feedback("r1", t, thumb="down", user_id="a"),
        feedback("r1", t + timedelta(seconds=5), thumb="up", user_id="a"),  # a flip
        feedback("r2", t, thumb="up", user_id="c"),
        feedback("r2", t, rating=4, user_id="c"),
        response("r3", t),  # in no experiment
        feedback("r3", t, thumb="down", user_id="c"),
    ])
    async with pool.acquire() as connection:
        rows = await experiment_buckets(connection, tenant_id="acme", experiment="exp",
                                        grain="day")
    by_variant = {b.variant: b for b in rows}
    control, treatment = by_variant["control"], by_variant["treatment"]
    assert (control.thumbs_up, control.thumbs_down) == (1, 0)
    assert (control.rating_count, control.rating_sum, control.rating_sq_sum) == (2, 8, 34)
    assert (treatment.thumbs_up, treatment.rating_count, treatment.rating_sq_sum) == (1, 1, 16)
