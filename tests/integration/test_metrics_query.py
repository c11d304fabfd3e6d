"""The query service's analytics over rollups the metrics consumer wrote, on a real PostgreSQL:
trends at three resolutions, model comparison, alert states through pending, firing and
resolved with each change queued for the alerts topic and relayed, and the gauges on /metrics
from the scheduled evaluation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from feedbackloop.contract import AlertStateChanged, Event, decode_message, encode_event
from feedbackloop.kafka import OutgoingMessage
from feedbackloop.observability import ConsumerMetrics
from feedbackloop.pipeline.consumer import BatchPipeline
from feedbackloop.postgres import create_pool
from feedbackloop.settings import Settings
from services.cli.admin import create_key
from services.metrics.handlers import SPEC as METRICS
from services.query.alert_evaluator import alert_config, evaluate_alerts
from services.query.alert_relay import publish_alert_changes
from services.query.gauges import AnalyticsGauges
from services.query.main import create_app
from services.query.trends import newcombe_difference
from tests.infra import create_database, eventually
from tests.ops.events import choice, feedback, response, session

pytestmark = pytest.mark.integration
T0 = datetime(2026, 6, 1, 10, tzinfo=UTC)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class _NoDeadLetters:
    async def publish(self, dead_letters: Any) -> None:
        raise AssertionError(f"unexpected dead letters: {list(dead_letters)}")


async def _consume(database: str, events: list[Event]) -> None:
    """Apply events with the metrics consumer's own pipeline, as the service would."""
    pool = await create_pool(database, min_size=1, max_size=1)
    try:
        pipeline = BatchPipeline(
            METRICS, pool, _NoDeadLetters(), ConsumerMetrics(CollectorRegistry(), "metrics")
        )
        records = [Record("x", 0, i, b"k", encode_event(e)) for i, e in enumerate(events)]
        outcome = await pipeline.process_batch(records)
        assert outcome.applied == len(events)
    finally:
        await pool.close()


def _votes(response_id: str, at: datetime, up: int, down: int) -> list[Event]:
    return [feedback(response_id, at, thumb="up") for _ in range(up)] + [
        feedback(response_id, at, thumb="down") for _ in range(down)
    ]


def _settings(database: str, **overrides: Any) -> Settings:
    return Settings(
        kafka_bootstrap_servers="unused:9092", database_url=database,
        user_id_hmac_secret="x" * 40, api_key_cache_seconds=0, **overrides,
    )


class _Query:
    """The query app, started (lifespan included) and served in-process over ASGI."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)

    @contextlib.asynccontextmanager
    async def client(self, key: str) -> AsyncIterator[httpx.AsyncClient]:
        async with self.app.router.lifespan_context(self.app):
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://query",
                headers={"Authorization": f"Bearer {key}"},
            ) as client:
                yield client


@pytest.fixture
async def database(postgres_url: str) -> str:
    return await create_database(postgres_url)


@pytest.fixture
async def key(database: str) -> str:
    _, key = await create_key(database, tenant_id="acme", name="t", scopes=["read"])
    return key


async def test_trends_at_every_resolution_and_model_comparison(database: str, key: str) -> None:
    await _consume(database, [
        response("r1", T0, action_type="todo", model="m1", language="en"),
        response("r2", T0, action_type="todo", model="m2", language="de"),
        *_votes("r1", T0 + timedelta(minutes=5), up=8, down=2),
        *_votes("r2", T0 + timedelta(minutes=90), up=3, down=7),
        *_votes("r1", T0 + timedelta(days=1), up=1, down=0),
        session("s1", T0), session("s2", T0), session("s3", T0, segment="premium_buyer"),
        choice("s1", T0 + timedelta(minutes=3), rank=1, satisfaction=5),
        choice("s2", T0 + timedelta(minutes=4), rank=None),
        choice("s3", T0 + timedelta(minutes=4), rank=3, satisfaction=2),
    ])
    window = {"from": T0.isoformat(), "to": (T0 + timedelta(hours=2)).isoformat()}
    async with _Query(_settings(database)).client(key) as query:
        hourly = (await query.get("/v1/analytics/trends", params={
            "metric": "approval", "interval": "hour", "group_by": "model", **window,
        })).json()
        assert {s["group"]: [(p["bucket"], p["numerator"], p["denominator"], p["value"])
                             for p in s["points"]] for s in hourly["series"]} == {
            "m1": [("2026-06-01T10:00:00Z", 8, 10, 0.8)],
            "m2": [("2026-06-01T11:00:00Z", 3, 10, 0.3)],
        }
        point = hourly["series"][0]["points"][0]
        assert point["ci_low"] < 0.8 < point["ci_high"]

        minutes = (await query.get("/v1/analytics/trends", params={
            "metric": "approval", "interval": "minute", "group_by": "language", **window,
        })).json()
        assert [(s["group"], s["points"][0]["bucket"]) for s in minutes["series"]] == [
            ("de", "2026-06-01T11:30:00Z"), ("en", "2026-06-01T10:05:00Z"),
        ]
        # A range inside one day widens to the whole day, and the day after is its own bucket.
        daily = (await query.get("/v1/analytics/trends", params={
            "metric": "approval", "interval": "day",
            "from": (T0 + timedelta(hours=1)).isoformat(),
            "to": (T0 + timedelta(days=1, hours=1)).isoformat(),
        })).json()
        assert daily["start"] == "2026-06-01T00:00:00Z" and daily["end"] == "2026-06-03T00:00:00Z"
        assert [(p["numerator"], p["denominator"]) for p in daily["series"][0]["points"]] == [
            (11, 20), (1, 1),
        ]

        conversion = (await query.get("/v1/analytics/trends", params={
            "metric": "conversion", "interval": "hour", **window,
        })).json()
        assert [(p["numerator"], p["denominator"]) for p in conversion["series"][0]["points"]] == [(2, 3)]
        rank = (await query.get("/v1/analytics/trends", params={
            "metric": "avg_chosen_rank", "interval": "day", "group_by": "segment", **window,
        })).json()
        assert {s["group"]: s["points"][0]["value"] for s in rank["series"]} == {
            "balanced": 1.0, "premium_buyer": 3.0,
        }
        satisfaction = (await query.get("/v1/analytics/trends", params={
            "metric": "satisfaction", "interval": "hour", **window,
        })).json()
        assert satisfaction["series"][0]["points"][0]["value"] == 3.5

        wrong = await query.get("/v1/analytics/trends", params={
            "metric": "approval", "group_by": "segment",
        })
        assert wrong.status_code == 422
        too_many = await query.get("/v1/analytics/trends", params={
            "metric": "approval", "interval": "minute",
            "from": "2026-01-01T00:00:00Z", "to": "2026-06-01T00:00:00Z",
        })
        assert too_many.status_code == 422

        compared = (await query.get("/v1/analytics/models/compare", params={
            "a": "m1", "b": "m2", "action_type": "todo", **window,
        })).json()
        assert (compared["a"]["up"], compared["a"]["total"]) == (8, 10)
        assert (compared["b"]["up"], compared["b"]["total"]) == (3, 10)
        expected = newcombe_difference(8, 10, 3, 10)
        assert expected is not None
        assert compared["difference"]["value"] == pytest.approx(0.5)
        assert compared["difference"]["ci_low"] == pytest.approx(expected.ci_low)
        assert compared["difference"]["ci_high"] == pytest.approx(expected.ci_high)
        unknown = (await query.get("/v1/analytics/models/compare", params={
            "a": "m1", "b": "nobody", **window,
        })).json()
        assert unknown["b"]["total"] == 0 and unknown["difference"] is None


async def test_alerts_go_pending_fire_and_resolve_and_each_change_is_relayed(
    database: str, key: str
) -> None:
    now = T0 + timedelta(hours=2)
    await _consume(database, [
        response("r1", T0, action_type="todo"),
        response("r2", T0, action_type="email"),
        *_votes("r1", now - timedelta(minutes=30), up=10, down=15),
        *_votes("r2", now - timedelta(minutes=30), up=0, down=3),  # a small sample
    ])
    # A spike needs more negatives than this test sends: it follows one rule through its states.
    settings = _settings(
        database, alert_for_seconds=300, alert_evaluation_interval_seconds=3600,
        alert_negative_spike_min_count=1_000,
    )
    config = alert_config(settings)
    pool = await create_pool(database, min_size=1, max_size=2)
    gauges = AnalyticsGauges(CollectorRegistry(), action_types=["todo"], models=[])
    try:
        app = _Query(settings)
        async with app.client(key) as query:
            # The scheduled evaluation runs once at start (at today's date: no data in its
            # window); the ones below are at chosen times.
            await eventually(lambda: _evaluated(query))
            pending = await evaluate_alerts(pool, config, now=now, gauges=gauges)
            # todo is also a new action type (first voted on today) drawing 15 thumbs down.
            assert [(t.current.rule, t.current.subject, t.current.state) for t in pending or []] == [
                ("approval_below", "todo", "pending"),
                ("new_action_type_negative", "todo", "pending"),
            ]
            fired_at = now + timedelta(minutes=5)
            await evaluate_alerts(pool, config, now=fired_at, gauges=gauges)
            report = (await query.get("/v1/alerts")).json()
            by_key = {(a["rule"], a["subject"]): a for a in report["alerts"]}
            firing = by_key[("approval_below", "todo")]
            assert (firing["state"], firing["since"], firing["value"], firing["sample"]) == (
                "firing", "2026-06-01T12:05:00Z", 0.4, 25,
            )
            assert by_key[("new_action_type_negative", "todo")]["sample"] == 15
            assert by_key[("new_action_type_negative", "email")]["state"] == "ok"  # 3 downs
            small = by_key[("approval_below", "email")]
            assert (small["state"], small["value"], small["sample"]) == ("ok", 0.0, 3)
            assert set(report["rules"]) >= {"approval_below", "negative_spike", "conversion_below"}

            _, other_key = await create_key(database, tenant_id="other", name="o", scopes=["read"])
            other = await query.get("/v1/alerts", headers={"Authorization": f"Bearer {other_key}"})
            assert other.json()["alerts"] == []

            await evaluate_alerts(pool, config, now=now + timedelta(hours=2), gauges=gauges)
            resolved = (await query.get("/v1/alerts")).json()["alerts"]
            assert {(a["rule"], a["subject"]): a["state"] for a in resolved}[
                ("approval_below", "todo")
            ] == "ok"
        # Each change was queued in its evaluation's transaction; the relay publishes each once.
        published: list[OutgoingMessage] = []

        async def publish(messages: Sequence[OutgoingMessage]) -> None:
            published.extend(messages)

        async with pool.acquire() as connection:
            assert await publish_alert_changes(connection, publish, topic="p.alerts") == 6
            assert await publish_alert_changes(connection, publish, topic="p.alerts") == 0
    finally:
        await pool.close()
    messages = [decode_message(m.value) for m in published]
    assert all(isinstance(m, AlertStateChanged) for m in messages)
    changes = [(m.rule, m.subject, m.previous, m.state) for m in messages
               if isinstance(m, AlertStateChanged)]
    assert changes == [
        ("approval_below", "todo", "ok", "pending"),
        ("new_action_type_negative", "todo", "ok", "pending"),
        ("approval_below", "todo", "pending", "firing"),
        ("new_action_type_negative", "todo", "pending", "firing"),
        ("approval_below", "todo", "firing", "ok"),
        ("new_action_type_negative", "todo", "firing", "ok"),
    ]
    assert published[2].key == b"acme:approval_below" and published[2].topic == "p.alerts"
    firing = messages[2]
    assert isinstance(firing, AlertStateChanged) and firing.sample == 25
    assert len({m.event_id for m in messages}) == 6


async def _evaluated(query: httpx.AsyncClient) -> bool:
    lines = (await query.get("/metrics")).text.splitlines()
    return any(line.startswith("feedbackloop_analytics_evaluated_timestamp_seconds ") for line in lines)


async def test_gauges_on_metrics_come_from_the_scheduled_evaluation(database: str, key: str) -> None:
    recent = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    await _consume(database, [
        response("r1", recent, action_type="todo", model="m1"),
        response("r2", recent, action_type="secret-project", model="m2"),
        *_votes("r1", recent, up=1, down=5),
        *_votes("r2", recent, up=2, down=0),
        session("s1", recent, segment="premium_buyer"),
        choice("s1", recent, rank=3, satisfaction=2),
    ])
    settings = _settings(
        database, alert_for_seconds=0, alert_approval_min_samples=5,
        analytics_label_action_types=("todo",), analytics_label_models=("m1",),
    )
    async with _Query(settings).client(key) as query:
        await eventually(lambda: _evaluated(query))
        text = (await query.get("/metrics")).text
        samples = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith("feedbackloop_")
        }
        assert samples['feedbackloop_analytics_votes{action_type="todo",model="m1",vote="down"}'] == 5
        # Unlisted label values are summed under `other`, never exported as they are.
        assert samples['feedbackloop_analytics_votes{action_type="other",model="other",vote="up"}'] == 2
        assert "secret-project" not in text
        approval = samples['feedbackloop_analytics_approval_ratio{action_type="todo",model="m1"}']
        assert approval == pytest.approx(1 / 6)
        assert samples['feedbackloop_analytics_chosen_rank_mean{segment="premium_buyer"}'] == 3
        assert samples['feedbackloop_alerts{rule="approval_below",state="firing"}'] == 1
        assert samples["feedbackloop_analytics_window_seconds"] == 3600
        alerts = (await query.get("/v1/alerts")).json()["alerts"]
        assert [(a["rule"], a["subject"]) for a in alerts if a["state"] == "firing"] == [
            ("approval_below", "todo"),
        ]
    await asyncio.sleep(0)
