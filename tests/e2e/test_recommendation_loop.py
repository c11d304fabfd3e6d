"""The recommendation loop over HTTP: rank with the defaults, customers choose, the learner
refits and publishes a weights version, the next rank uses it; analytics and the customer's
story show what happened."""

from __future__ import annotations

import random
import uuid
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from feedbackloop.contract import Topic
from tests.e2e.conftest import Stack
from tests.infra import eventually

pytestmark = pytest.mark.e2e
CHOICES = 24  # above the stack's FEEDBACKLOOP_LEARNER_MIN_CHOICES and refit batch (20)


def _candidates(round_: int) -> list[dict[str, Any]]:
    """Four providers: p0 is the premium one (best quality, dearest); which of the others is
    cheapest changes every round, so position and price differ."""
    prices = [0.3, 0.6, 0.9]
    return [{"item_id": "p0", "scores": {"price": 0.1, "quality": 0.95, "speed": 0.6},
             "category": "premium"}] + [
        {
            "item_id": f"p{j + 1}",
            "scores": {"price": prices[(j + round_) % 3], "quality": [0.7, 0.5, 0.3][j],
                       "speed": [0.2, 0.5, 0.8][(j + 2 * round_) % 3]},
            "category": "standard",
        }
        for j in range(3)
    ]


async def _rank(ingest: httpx.AsyncClient, round_: int, **extra: Any) -> dict[str, Any]:
    answer = await ingest.post("/v1/recommendations/rank", json={
        "customer": {"id": "carol", "segment": "price_sensitive"},
        "candidates": _candidates(round_),
        "complexity": "simple",
    } | extra)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_rank_choose_refit_and_rank_again_with_the_new_version(
    stack: Stack, ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    first = await _rank(ingest, 0)
    assert first["weights"] == {"source": "default", "version": None,
                                "weights": {"price": 1 / 3, "quality": 1 / 3, "speed": 1 / 3},
                                "confidence": None, "sample_size": None}
    assert first["algorithm_version"] == "defaults"
    assert [r["rank"] for r in first["ranked"]] == [1, 2, 3, 4]
    assert all(r["propensity"] == 1.0 for r in first["ranked"])
    top = first["ranked"][0]
    assert top["total"] == pytest.approx(sum(top["contributions"].values()))

    # A price-sensitive customer: the cheapest option (the highest price score) wherever it
    # was ranked, three times in four; otherwise any option.
    rng = random.Random(3)
    premium_chosen = 0
    for round_ in range(CHOICES):
        ranked = first if round_ == 0 else await _rank(ingest, round_)
        price = {c["item_id"]: c["scores"]["price"] for c in _candidates(round_)}
        best = max(ranked["ranked"], key=lambda r: price[r["item_id"]])
        if rng.random() < 0.25:
            best = rng.choice(ranked["ranked"])
        premium_chosen += best["item_id"] == "p0"
        chose = await ingest.post("/v1/recommendations/choices", json={
            "session_id": ranked["session_id"], "user_id": "carol",
            "chosen_item_id": best["item_id"], "chosen_rank": best["rank"],
            "important_factors": ["price"], "satisfaction": 5, "decision_time_seconds": 12.5,
        })
        assert chose.status_code == 202, chose.text

    async def learned() -> dict[str, Any] | None:
        answer = await query.get("/v1/segments/weights")
        assert answer.status_code == 200, answer.text
        segments = {s["segment"]: s for s in answer.json()["segments"]}
        current = segments.get("price_sensitive", {}).get("current")
        return segments if current and current["sample_size"] == CHOICES else None

    segments = await eventually(learned, timeout=60, interval=0.5)
    current = segments["price_sensitive"]["current"]
    assert current["weights"]["price"] == max(current["weights"].values())
    assert sum(current["weights"].values()) == pytest.approx(1.0)
    assert 0.0 < current["confidence"] <= 1.0
    assert set(current["intervals"]) == {"price", "quality", "speed"}
    assert "global" in segments
    version = current["version"]

    again = await _rank(ingest, 1)
    assert again["weights"]["source"] == "learned"
    assert again["weights"]["version"] == version
    assert again["algorithm_version"] == f"segment-weights/price_sensitive/v{version}"
    cheapest = max(_candidates(1), key=lambda c: c["scores"]["price"])["item_id"]
    # The defaults would have put another option first in this round.
    assert cheapest != max(_candidates(1), key=lambda c: sum(c["scores"].values()))["item_id"]
    assert again["ranked"][0]["item_id"] == cheapest

    # Published on the weights topic after it was committed.
    messages = await _read_weights(stack, expected=2)
    published = [m for m in messages if m["segment"] == "price_sensitive"]
    assert published and published[0]["version"] >= 1
    assert published[0]["tenant_id"] == "acme"

    # Analytics: every ranked session of the segment, the converted ones and their ranks.
    async def outcomes() -> dict[str, Any] | None:
        answer = await query.get("/v1/analytics/recommendations",
                                 params={"group_by": "segment"})
        assert answer.status_code == 200, answer.text
        groups = {g["group"]: g for g in answer.json()["groups"]}
        group = groups.get("price_sensitive")
        return group if group and group["sessions"] == CHOICES + 1 else None

    group = await eventually(outcomes, timeout=30)
    assert group["converted"] == CHOICES
    assert group["conversion_rate"] == pytest.approx(CHOICES / (CHOICES + 1))
    assert group["avg_satisfaction"] == 5.0 and group["avg_decision_seconds"] == 12.5
    assert 1.0 <= group["avg_chosen_rank"] <= 4.0

    # The customer's story: their segment and why, and the category they pass over.
    async def story() -> dict[str, Any] | None:
        answer = await query.get("/v1/users/carol/feedback-summary")
        body = answer.json() if answer.status_code == 200 else None
        return body if body and body["recommendations"]["decisions"] == CHOICES else None

    summary = await eventually(story, timeout=30)
    assert summary["segment"]["segment"] == "price_sensitive"
    assert any("named price" in reason for reason in summary["segment"]["reasons"])
    assert summary["recommendations"]["sessions"] == CHOICES + 1
    assert summary["recommendations"]["chosen"] == CHOICES
    # Passed over in at least 80% of 24 sessions (and at least 5): avoided.
    assert premium_chosen <= 4
    avoided = {(s["kind"], s["name"]): s for s in summary["avoided"]}
    assert avoided[("category", "premium")]["rejected"] == CHOICES - premium_chosen
    categories = {c["name"]: c for c in summary["recommendation_categories"]}
    assert categories["premium"]["accepted"] == premium_chosen
    assert categories["standard"]["accepted"] == CHOICES - premium_chosen
    assert categories["standard"]["status"] == "prefer"

    # Ranking without a segment: the customer's profile decides it.
    profiled = await ingest.post("/v1/recommendations/rank", json={
        "customer": {"id": "carol"}, "candidates": _candidates(2)})
    assert profiled.status_code == 200, profiled.text
    assert profiled.json()["segment"] == "price_sensitive"
    assert profiled.json()["segment_source"] == "profile"


async def test_exploration_logs_propensities_and_bad_requests_are_rejected(
    ingest: httpx.AsyncClient,
) -> None:
    explored = await _rank(ingest, 0, exploration={"rate": 0.5, "top_k": 3},
                           session_id=f"s-{uuid.uuid4().hex[:8]}")
    propensities = [r["propensity"] for r in explored["ranked"]]
    assert propensities[3] == 1.0
    assert all(p in (pytest.approx(0.5 + 0.5 / 3), pytest.approx(0.5 / 3))
               for p in propensities[:3])
    unknown = await ingest.post("/v1/recommendations/rank", json={
        "candidates": _candidates(0), "surprise": 1})
    assert unknown.status_code == 422
    empty = await ingest.post("/v1/recommendations/rank", json={"candidates": []})
    assert empty.status_code == 422


async def _read_weights(stack: Stack, expected: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        stack.names.physical(Topic.WEIGHTS), bootstrap_servers=stack.bootstrap,
        auto_offset_reset="earliest", group_id=f"inspect-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[dict[str, Any]] = []
    try:
        async def more() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                messages.extend(orjson.loads(record.value) for record in part)
            return len(messages) >= expected

        await eventually(more, timeout=30)
    finally:
        await consumer.stop()
    return messages
