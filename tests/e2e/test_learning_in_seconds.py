"""The loop in seconds, over HTTP: a choice reaches the served weights within 5 s through an
incremental update while the full refit waits (a 10-minute interval here); customers with
enough choices are ranked with their own weights; Thompson sampling logs its propensities."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from feedbackloop.http.auth import ALL_SCOPES
from services.cli.admin import create_key
from tests.e2e.conftest import Stack, service_env
from tests.infra import (
    ServiceProcesses,
    create_database,
    create_topics,
    eventually,
    unique_prefix,
)

pytestmark = pytest.mark.e2e
SEED_CHOICES = 20


@pytest.fixture(scope="module")
def fast(
    postgres_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    prefix = unique_prefix()
    database_url = asyncio.run(create_database(postgres_url))
    names = asyncio.run(create_topics(kafka_bootstrap, prefix))
    _, api_key = asyncio.run(
        create_key(database_url, tenant_id="acme", name="e2e", scopes=list(ALL_SCOPES))
    )
    env = service_env(kafka_bootstrap, database_url, prefix) | {
        # The full refit is far behind: whatever arrives within seconds is incremental.
        "FEEDBACKLOOP_LEARNER_REFIT_INTERVAL_SECONDS": "600",
        "FEEDBACKLOOP_LEARNER_REFIT_MIN_NEW_CHOICES": str(SEED_CHOICES),
        "FEEDBACKLOOP_LEARNER_MIN_CHOICES": str(SEED_CHOICES),
        "FEEDBACKLOOP_LEARNER_REFIT_POLL_SECONDS": "1",
        "FEEDBACKLOOP_LEARNER_CUSTOMER_MIN_CHOICES": str(SEED_CHOICES),
        "FEEDBACKLOOP_LEARNER_CUSTOMER_MIN_CONFIDENCE": "0",
    }
    services = ServiceProcesses(env, tmp_path_factory.mktemp("fast-services"))
    try:
        services.start(("ingest", "learner", "query"))
        yield Stack(services, names, database_url, kafka_bootstrap, api_key)
    finally:
        services.stop()


@pytest.fixture
async def clients(fast: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with fast.ingest() as ingest, fast.query() as query:
        yield ingest, query


def _candidates(round_: int) -> list[dict[str, Any]]:
    prices = [0.2, 0.5, 0.8]
    return [
        {"item_id": f"p{j}", "scores": {"price": prices[(j + round_) % 3],
                                        "quality": [0.8, 0.5, 0.3][j]}}
        for j in range(3)
    ]


async def _rank(ingest: httpx.AsyncClient, customer: str, round_: int,
                **extra: Any) -> dict[str, Any]:
    answer = await ingest.post("/v1/recommendations/rank", json={
        "customer": {"id": customer, "segment": "price_sensitive"},
        "candidates": _candidates(round_)} | extra)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def _choose_cheapest(ingest: httpx.AsyncClient, ranked: dict[str, Any], round_: int,
                           customer: str) -> None:
    price = {c["item_id"]: c["scores"]["price"] for c in _candidates(round_)}
    best = max(ranked["ranked"], key=lambda r: price[r["item_id"]])
    chose = await ingest.post("/v1/recommendations/choices", json={
        "session_id": ranked["session_id"], "user_id": customer,
        "chosen_item_id": best["item_id"], "chosen_rank": best["rank"]})
    assert chose.status_code == 202, chose.text


async def _current(query: httpx.AsyncClient) -> dict[str, Any] | None:
    answer = await query.get("/v1/segments/weights")
    assert answer.status_code == 200, answer.text
    segments = {s["segment"]: s for s in answer.json()["segments"]}
    current = segments.get("price_sensitive", {}).get("current")
    return dict(current) if current else None


async def test_a_choice_is_served_within_five_seconds_and_customers_get_their_own_weights(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    ingest, query = clients
    for round_ in range(SEED_CHOICES):
        await _choose_cheapest(ingest, await _rank(ingest, "dana", round_), round_, "dana")

    async def first() -> dict[str, Any] | None:
        current = await _current(query)
        return current if current and current["sample_size"] == SEED_CHOICES else None

    full = await eventually(first, timeout=60, interval=0.5)
    assert full["kind"] == "full" and full["promoted"] is True
    assert full["promotion"]["reason"] == "first version of the segment"

    # Dana made every one of those choices: ranked with her own weights now.
    own = await _rank(ingest, "dana", 1)
    assert own["weights"]["source"] == "customer"
    assert own["algorithm_version"] == f"customer-weights/price_sensitive/v{full['version']}"

    # One more choice, by someone else: in the served weights within 5 s, incrementally.
    ranked = await _rank(ingest, "erin", 2)
    await _choose_cheapest(ingest, ranked, 2, "erin")
    accepted = time.monotonic()

    async def absorbed() -> dict[str, Any] | None:
        current = await _current(query)
        return current if current and current["sample_size"] == SEED_CHOICES + 1 else None

    incremental = await eventually(absorbed, timeout=30, interval=0.1)
    latency = time.monotonic() - accepted
    assert latency < 5.0, f"{latency:.2f}s from the choice's 202 to the served weights"
    assert incremental["kind"] == "incremental"
    assert incremental["version"] == full["version"] + 1
    assert incremental["promotion"]["promoted"] is True
    assert incremental["shift"]["detected"] is False

    served = await _rank(ingest, "erin", 3)
    assert served["weights"]["source"] == "learned"
    assert served["weights"]["version"] == incremental["version"]
    assert served["weights"]["kind"] == "incremental"

    # Thompson sampling: an order drawn from the posterior, each placement's propensity.
    thompson = await _rank(ingest, "erin", 4, exploration={"policy": "thompson"})
    assert [r["rank"] for r in thompson["ranked"]] == [1, 2, 3]
    assert all(0.0 < r["propensity"] <= 1.0 for r in thompson["ranked"])
