"""Analytics end to end: events POSTed to ingest reach the metrics consumer through Kafka
(responses, feedback and recommendations), and the query service's trends, model comparison
and alert state read what it counted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.infra import eventually

pytestmark = pytest.mark.e2e


async def _post(ingest: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    answer = await ingest.post(path, json=body)
    assert answer.status_code == 202, answer.text


async def _series(query: httpx.AsyncClient, **params: Any) -> dict[str | None, list[Any]]:
    answer = await query.get("/v1/analytics/trends", params=params)
    assert answer.status_code == 200, answer.text
    return {s["group"]: s["points"] for s in answer.json()["series"]}


async def test_trends_and_comparison_follow_ingested_events(
    ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    tag = uuid.uuid4().hex[:8]
    occurred = (datetime.now(UTC) - timedelta(minutes=5)).replace(second=0, microsecond=0)
    window = {"from": (occurred - timedelta(hours=1)).isoformat(),
              "to": (occurred + timedelta(hours=1)).isoformat()}
    for model, votes in ((f"a-{tag}", ("up", "up", "up", "down")), (f"b-{tag}", ("down", "down"))):
        response_id = f"r-{model}"
        await _post(ingest, "/v1/responses", {
            "response_id": response_id, "prompt": [{"role": "user", "content": "hi"}],
            "output": "hello", "model": model, "action_type": f"greet-{tag}", "language": "en",
            "occurred_at": occurred.isoformat(),
        })
        for thumb in votes:
            await _post(ingest, "/v1/feedback", {
                "response_id": response_id, "thumb": thumb, "occurred_at": occurred.isoformat(),
            })
    session_id = f"s-{tag}"
    await _post(ingest, "/v1/recommendations/sessions", {
        "session_id": session_id, "algorithm_version": f"algo-{tag}",
        "options": [{"item_id": "x", "rank": 1}, {"item_id": "y", "rank": 2}],
        "occurred_at": occurred.isoformat(),
    })
    await _post(ingest, "/v1/recommendations/choices", {
        "session_id": session_id, "chosen_item_id": "y", "chosen_rank": 2, "satisfaction": 4,
        "occurred_at": occurred.isoformat(),
    })

    async def approval_counted() -> dict[str | None, list[Any]] | None:
        series = await _series(query, metric="approval", interval="hour", group_by="model", **window)
        done = sum(p["denominator"] for key in (f"a-{tag}", f"b-{tag}") for p in series.get(key, []))
        return series if done == 6 else None

    series = await eventually(approval_counted, timeout=30)
    assert [(p["numerator"], p["denominator"]) for p in series[f"a-{tag}"]] == [(3, 4)]
    assert [(p["numerator"], p["denominator"]) for p in series[f"b-{tag}"]] == [(0, 2)]

    async def rank_counted() -> dict[str | None, list[Any]] | None:
        series = await _series(
            query, metric="avg_chosen_rank", interval="minute", group_by="algorithm_version", **window
        )
        return series if f"algo-{tag}" in series else None

    rank = await eventually(rank_counted, timeout=30)
    assert [(p["bucket"], p["value"]) for p in rank[f"algo-{tag}"]] == [
        (occurred.isoformat().replace("+00:00", "Z"), 2.0)
    ]

    compared = (await query.get("/v1/analytics/models/compare", params={
        "a": f"a-{tag}", "b": f"b-{tag}", **window,
    })).json()
    assert compared["difference"]["value"] == 0.75
    assert compared["difference"]["ci_low"] < 0.75 < compared["difference"]["ci_high"]
    alerts = await query.get("/v1/alerts")
    assert alerts.status_code == 200 and "approval_below" in alerts.json()["rules"]
