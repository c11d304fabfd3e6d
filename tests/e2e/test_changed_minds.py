"""A person changes their mind, over HTTP through every real service: thumbs down, then up,
then the same thumb clicked again (a retraction). After each step the approval endpoint, the
user's summary, the training export and the training-examples topic show that step's state.
Anonymous feedback keyed by a `feedback_key` flips the same way, through `POST /v1/events`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from feedbackloop.contract import Topic
from tests.e2e.conftest import Stack
from tests.infra import eventually

pytestmark = pytest.mark.e2e


class TrainingTopic:
    """A plain consumer of the training-examples topic: the newest message per example id."""

    def __init__(self, consumer: AIOKafkaConsumer, response_id: str) -> None:
        self.consumer = consumer
        self.response_id = response_id
        self.ids: set[str] = set()
        self.latest: dict[str, dict[str, Any]] = {}

    async def read(self) -> dict[str, dict[str, Any]]:
        for part in (await self.consumer.getmany(timeout_ms=300)).values():
            for record in part:
                document = orjson.loads(record.value)
                if document.get("response_id") == self.response_id:
                    self.ids.add(document["example_id"])
                if document["example_id"] in self.ids:
                    self.latest[document["example_id"]] = document
        return self.latest


@pytest.fixture
async def topic(stack: Stack) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        stack.names.physical(Topic.TRAINING_EXAMPLES), bootstrap_servers=stack.bootstrap,
        auto_offset_reset="earliest", group_id=f"ml-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _approval(query: httpx.AsyncClient, action_type: str) -> tuple[int, int]:
    answer = await query.get("/v1/analytics/approval", params={"group_by": "action_type"})
    assert answer.status_code == 200, answer.text
    group = next((g for g in answer.json()["groups"] if g["group"] == action_type), None)
    return (group["up"], group["down"]) if group else (0, 0)


async def _kto_labels(query: httpx.AsyncClient, action_type: str) -> list[bool]:
    answer = await query.get("/v1/training/export",
                             params={"format": "trl-kto", "action_type": action_type})
    assert answer.status_code == 200, answer.text
    return [orjson.loads(line)["label"] for line in answer.content.splitlines()]


async def test_down_up_retract_over_http(
    stack: Stack, ingest: httpx.AsyncClient, query: httpx.AsyncClient,
    topic: AIOKafkaConsumer,
) -> None:
    run = uuid.uuid4().hex[:8]
    user, response_id, action_type = f"carol-{run}", f"mind-{run}", f"mind_{run}"
    start = datetime.now(UTC) - timedelta(minutes=10)
    logged = await ingest.post("/v1/responses", json={
        "response_id": response_id, "user_id": user, "model": "gpt-4o-mini",
        "action_type": action_type, "output": f"Added {run} to your list.",
        "prompt": [{"role": "user", "content": f"Add {run} to my list"}],
    })
    assert logged.status_code == 202, logged.text
    training = TrainingTopic(topic, response_id)
    person = {"response_id": response_id, "user_id": user}

    async def state() -> dict[str, Any]:
        summary = await query.get(f"/v1/users/{user}/feedback-summary")
        return {
            "approval": await _approval(query, action_type),
            "summary": summary.json() if summary.status_code == 200 else None,
            "export": await _kto_labels(query, action_type),
            "topic": await training.read(),
        }

    async def step(path: str, body: dict[str, Any], minute: int,
                   settled: Any) -> tuple[str, dict[str, Any]]:
        sent = await ingest.post(path, json=person | body | {
            "occurred_at": (start + timedelta(minutes=minute)).isoformat()})
        assert sent.status_code == 202, sent.text
        event_id = sent.json()["event_id"]

        async def done() -> dict[str, Any] | None:
            now = await state()
            return now if now["summary"] and settled(now, event_id) else None

        return event_id, await eventually(done, timeout=60, interval=0.5)

    def kto(now: dict[str, Any]) -> list[dict[str, Any]]:
        return [d for d in now["topic"].values() if d.get("kind") == "kto"]

    # Thumbs down.
    down_id, now = await step("/v1/feedback", {"thumb": "down"}, 0, lambda now, event_id: (
        now["summary"]["history"] and now["summary"]["history"][0]["event_id"] == event_id
        and kto(now) and now["approval"] == (0, 1)))
    assert now["export"] == [False]
    assert [item["event_id"] for item in now["summary"]["current"]] == [down_id]
    assert now["summary"]["totals"] == {"accepted": 0, "rejected": 1, "neutral": 0, "total": 1}
    (first,) = kto(now)
    assert (first["label"], first["revision"]) == (False, 1)

    # Thumbs up: the vote flips everywhere; the KTO example is revised with the other label.
    up_id, now = await step("/v1/feedback", {"thumb": "up"}, 1, lambda now, event_id: (
        now["summary"]["current"] and now["summary"]["current"][0]["event_id"] == event_id
        and now["approval"] == (1, 0)
        and any(d["label"] is True and d["revision"] == 2 for d in kto(now))))
    assert now["export"] == [True]
    assert [item["event_id"] for item in now["summary"]["current"]] == [up_id]
    assert [(item["event_id"], item["current"]) for item in now["summary"]["history"]] == [
        (up_id, True), (down_id, False)]
    assert now["summary"]["totals"] == {"accepted": 1, "rejected": 0, "neutral": 0, "total": 1}
    (revised,) = kto(now)
    assert revised["example_id"] == first["example_id"]

    # The same thumb again: retracted, so nothing counts and the examples are retracted.
    retraction_id, now = await step(
        "/v1/feedback/retractions", {"kind": "thumb"}, 2, lambda now, event_id: (
            now["summary"]["history"][0]["event_id"] == event_id and now["approval"] == (0, 0)
            and now["topic"][first["example_id"]]["type"] == "training_example.retracted"))
    assert now["export"] == []
    assert now["summary"]["current"] == []
    assert now["summary"]["totals"] == {"accepted": 0, "rejected": 0, "neutral": 0, "total": 0}
    assert [(item["event_id"], item["retraction"]) for item in now["summary"]["history"]] == [
        (retraction_id, True), (up_id, False), (down_id, False)]
    assert {d["type"] for d in now["topic"].values()} == {"training_example.retracted"}

    # An older event arriving late (an offline queue flushing) changes nothing.
    late = await ingest.post("/v1/feedback", json=person | {
        "thumb": "down", "occurred_at": (start + timedelta(seconds=30)).isoformat()})
    assert late.status_code == 202
    marker_id, now = await step("/v1/feedback", {"rating": 3}, 3, lambda now, event_id: any(
        item["event_id"] == event_id for item in now["summary"]["current"]))
    assert now["approval"] == (0, 0) and now["export"] == []
    assert [item["event_id"] for item in now["summary"]["current"]] == [marker_id]


async def test_anonymous_feedback_keyed_by_the_browser_flips_through_a_batch(
    ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    run = uuid.uuid4().hex[:8]
    response_id, action_type = f"anon-{run}", f"anon_{run}"
    key = str(uuid.uuid4())
    start = datetime.now(UTC) - timedelta(minutes=5)
    logged = await ingest.post("/v1/responses", json={
        "response_id": response_id, "model": "gpt-4o-mini", "action_type": action_type,
        "output": "Hello.", "prompt": [{"role": "user", "content": "Hi"}]})
    assert logged.status_code == 202

    def vote(thumb: str, minute: int, **extra: Any) -> dict[str, Any]:
        return {"type": "feedback.submitted", "response_id": response_id, "thumb": thumb,
                "occurred_at": (start + timedelta(minutes=minute)).isoformat()} | extra

    batch = await ingest.post("/v1/events", json={"events": [
        vote("up", 1, feedback_key=key),  # the later one, first in the batch
        vote("down", 0, feedback_key=key),
        vote("down", 0),  # no key: a signal of its own
        vote("down", 0, feedback_key=str(uuid.uuid4())),
    ]})
    assert batch.status_code == 202, batch.text
    assert batch.json()["accepted"] == 4

    async def counted() -> tuple[int, int] | None:
        totals = await _approval(query, action_type)
        return totals if sum(totals) == 3 else None

    assert await eventually(counted, timeout=30) == (1, 2)
    retracted = await ingest.post("/v1/events", json={"events": [{
        "type": "feedback.retracted", "response_id": response_id, "kind": "thumb",
        "feedback_key": key, "occurred_at": (start + timedelta(minutes=2)).isoformat()}]})
    assert retracted.status_code == 202, retracted.text

    async def removed() -> tuple[int, int] | None:
        totals = await _approval(query, action_type)
        return totals if totals == (0, 2) else None

    assert await eventually(removed, timeout=30) == (0, 2)
    nobody = await ingest.post("/v1/events", json={"events": [{
        "type": "feedback.retracted", "response_id": response_id, "kind": "thumb"}]})
    assert nobody.status_code == 422
