"""The broker stops during ingestion: ingest answers 503 with Retry-After, never 2xx, and once
the broker is back every event that got a 2xx arrives, counted once.

This module runs its own broker with durable storage (SeaweedFS), since a restart of the
in-memory broker would forget the log by design.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from feedbackloop.client import AsyncFeedbackClient, RetryPolicy
from feedbackloop.embedded import SeaweedS3, TansuBroker, free_port, free_seaweed_ports
from feedbackloop.http.auth import ALL_SCOPES
from services.cli.admin import create_key
from tests.e2e.conftest import service_env
from tests.infra import ServiceProcesses, create_database, create_topics, eventually, unique_prefix

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def durable(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    workdir: Path = tmp_path_factory.mktemp("durable")
    s3_port, port_base = free_seaweed_ports()
    store = SeaweedS3(workdir / "seaweedfs", s3_port=s3_port, port_base=port_base, bucket="tansu")
    store.start()
    broker = TansuBroker(workdir / "tansu.log", free_port(), s3_endpoint=store.endpoint)
    broker.start()
    prefix = unique_prefix()
    database_url = asyncio.run(create_database(postgres_url))
    asyncio.run(create_topics(broker.bootstrap_servers, prefix))
    _, key = asyncio.run(create_key(database_url, tenant_id="acme", name="t", scopes=list(ALL_SCOPES)))
    services = ServiceProcesses(service_env(broker.bootstrap_servers, database_url, prefix),
                                workdir)
    try:
        services.start(("ingest", "metrics", "query"))
        yield {"broker": broker, "services": services, "key": key}
    finally:
        services.stop()
        broker.stop()
        store.stop()


async def test_broker_restart_loses_nothing_that_got_a_2xx(durable: dict) -> None:
    broker: TansuBroker = durable["broker"]
    services: ServiceProcesses = durable["services"]
    headers = {"Authorization": f"Bearer {durable['key']}"}
    accepted: set[str] = set()
    refused: list[dict] = []

    async with httpx.AsyncClient(base_url=services.url("ingest"), headers=headers,
                                 timeout=30) as ingest:
        async def send(vote: dict) -> int:
            answer = await ingest.post("/v1/feedback", json=vote)
            if answer.status_code == 202:
                accepted.add(vote["event_id"])
            elif answer.status_code == 503:
                assert int(answer.headers["Retry-After"]) >= 1
                assert answer.headers["content-type"] == "application/problem+json"
            else:
                raise AssertionError(f"unexpected {answer.status_code}: {answer.text}")
            return answer.status_code

        def vote() -> dict:
            return {"event_id": str(uuid.uuid4()), "response_id": "r-restart", "thumb": "up",
                    "action_type": "restart_check"}

        for _ in range(20):
            assert await send(vote()) == 202

        broker.stop()
        for _ in range(5):
            pending = vote()
            status = await send(pending)
            assert status == 503, "a 2xx while the broker is down"
            refused.append(pending)

        broker.start()
        # Clients retry refused events with the same ids, as the 503 tells them to.
        deadline = time.monotonic() + 90
        while refused and time.monotonic() < deadline:
            if await send(refused[0]) == 202:
                refused.pop(0)
            else:
                await asyncio.sleep(1)
        assert not refused, "ingest did not recover after the broker came back"
        for _ in range(5):
            assert await send(vote()) == 202

    async with httpx.AsyncClient(base_url=services.url("query"), headers=headers,
                                 timeout=30) as query:
        async def all_counted() -> int | None:
            answer = await query.get("/v1/analytics/approval")
            groups = {g["group"]: g for g in answer.json()["groups"]}
            up = groups.get("restart_check", {}).get("up", 0)
            return up if up >= len(accepted) else None

        counted = await eventually(all_counted, timeout=90, interval=1)
    assert counted == len(accepted) == 30


async def test_client_retries_with_the_same_ids_through_an_outage(durable: dict) -> None:
    broker: TansuBroker = durable["broker"]
    services: ServiceProcesses = durable["services"]
    client = AsyncFeedbackClient(
        services.url("ingest"), durable["key"], flush_interval=0,
        retry=RetryPolicy(max_retries=60, base_seconds=0.2, max_seconds=1.0),
    )
    for i in range(50):
        await client.submit_feedback(response_id=f"c{i}", thumb="down", action_type="client_outage")
    broker.stop()
    flushing = asyncio.create_task(client.close())
    await asyncio.sleep(4)
    assert not flushing.done(), "the client gave up or claimed success while the broker was down"
    broker.start()
    await asyncio.wait_for(flushing, timeout=90)

    headers = {"Authorization": f"Bearer {durable['key']}"}
    async with httpx.AsyncClient(base_url=services.url("query"), headers=headers,
                                 timeout=30) as query:
        async def counted() -> int | None:
            groups = (await query.get("/v1/analytics/approval")).json()["groups"]
            down = next((g["down"] for g in groups if g["group"] == "client_outage"), 0)
            return down if down >= 50 else None

        assert await eventually(counted, timeout=90, interval=1) == 50
