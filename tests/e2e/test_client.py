"""The Python client against the real services: batching, invalid events reported, counted once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from feedbackloop.client import AsyncFeedbackClient, FeedbackClient, FeedbackError, RetryPolicy
from tests.e2e.conftest import Stack
from tests.infra import eventually

pytestmark = pytest.mark.e2e


async def _thumbs(query: httpx.AsyncClient, action_type: str) -> tuple[int, int]:
    groups = (await query.get("/v1/analytics/approval")).json()["groups"]
    group = next((g for g in groups if g["group"] == action_type), None)
    return (group["up"], group["down"]) if group else (0, 0)


async def test_async_client_batches_and_reports_invalid_events(
    stack: Stack, query: httpx.AsyncClient
) -> None:
    action_type = f"client_{uuid.uuid4().hex[:6]}"
    rejected: list[dict[str, Any]] = []
    async with AsyncFeedbackClient(
        stack.services.url("ingest"), stack.api_key, batch_size=500, flush_interval=0,
        on_invalid=rejected.extend,
    ) as client:
        ids = [
            await client.submit_feedback(
                response_id=f"r{i}", thumb="up" if i % 3 else "down", action_type=action_type
            )
            for i in range(1_100)
        ]
        await client.submit_feedback(response_id="r", rating=11)
    assert len(set(ids)) == 1_100
    assert len(rejected) == 1 and rejected[0]["errors"][0]["loc"] == ["rating"]

    async def counted() -> tuple[int, int] | None:
        totals = await _thumbs(query, action_type)
        return totals if sum(totals) == 1_100 else None

    up, down = await eventually(counted, timeout=30)
    assert (up, down) == (733, 367)


async def test_sync_client_flushes_on_exit(stack: Stack, query: httpx.AsyncClient) -> None:
    action_type = f"sync_{uuid.uuid4().hex[:6]}"

    def send() -> None:
        with FeedbackClient(stack.services.url("ingest"), stack.api_key, batch_size=100) as client:
            for i in range(10):
                client.submit_feedback(response_id=f"s{i}", thumb="down", action_type=action_type)

    await asyncio.to_thread(send)

    async def counted() -> tuple[int, int] | None:
        totals = await _thumbs(query, action_type)
        return totals if sum(totals) == 10 else None

    assert await eventually(counted, timeout=20) == (0, 10)


async def test_client_errors_that_retrying_cannot_fix_raise_at_once(stack: Stack) -> None:
    client = AsyncFeedbackClient(stack.services.url("ingest"), "fbl_wrong", flush_interval=0,
                                 retry=RetryPolicy(max_retries=3, base_seconds=5))
    await client.send("feedback.submitted", response_id="r", thumb="up")
    with pytest.raises(FeedbackError) as raised:
        await asyncio.wait_for(client.flush(), timeout=4)
    assert raised.value.status == 401
    await client._http.aclose()


async def test_loadgen_traffic_arrives(stack: Stack, query: httpx.AsyncClient) -> None:
    from services.cli.loadgen import generate

    sent = await generate(stack.services.url("ingest"), stack.api_key, rate=300, seconds=2,
                          seed=3)
    assert sum(sent.values()) >= 400

    async def responses_visible() -> int | None:
        groups = (await query.get("/v1/analytics/approval", params={"group_by": "model"})).json()
        total = sum(g["total"] for g in groups["groups"] if g["group"] == "support-v2")
        return total or None

    assert await eventually(responses_visible, timeout=30)
