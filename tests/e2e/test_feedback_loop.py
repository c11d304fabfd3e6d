"""HTTP in, Kafka, the consumers, PostgreSQL, and the query API out."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from feedbackloop.contract import Topic
from tests.e2e.conftest import Stack
from tests.infra import eventually

pytestmark = pytest.mark.e2e


def _response(response_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "response_id": response_id,
        "prompt": [{"role": "user", "content": "Remind me to call mom at 3pm"}],
        "output": "I'll remind you at 3 PM.",
        "model": "gpt-4o-mini",
        "action_type": "appointment",
        "user_id": "alice",
    } | extra


async def _approval(query: httpx.AsyncClient, group_by: str = "action_type") -> dict[str, Any]:
    response = await query.get("/v1/analytics/approval", params={"group_by": group_by})
    assert response.status_code == 200, response.text
    return {group["group"]: group for group in response.json()["groups"]}


async def test_thumbs_down_reaches_analytics_and_the_user_summary(
    ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    response_id = f"resp-{uuid.uuid4().hex[:8]}"
    logged = await ingest.post("/v1/responses", json=_response(response_id))
    assert logged.status_code == 202, logged.text
    voted = await ingest.post(
        "/v1/feedback", json={"response_id": response_id, "thumb": "down", "user_id": "alice"}
    )
    assert voted.status_code == 202, voted.text
    event_id = voted.json()["event_id"]

    async def counted() -> dict[str, Any] | None:
        group = (await _approval(query)).get("appointment")
        return group if group and group["down"] >= 1 else None

    group = await eventually(counted, timeout=15)
    assert group["up"] == 0 and group["total"] == group["down"]
    assert group["approval_rate"] == 0.0
    assert 0.0 <= group["ci_low"] <= group["ci_high"] <= 1.0
    models = await _approval(query, "model")
    assert models["gpt-4o-mini"]["down"] >= 1

    async def summary() -> dict[str, Any] | None:
        answer = await query.get("/v1/users/alice/feedback-summary")
        return answer.json() if answer.status_code == 200 else None

    story = await eventually(summary, timeout=15)
    assert story["user_id"] == "alice"
    assert story["totals"]["rejected"] >= 1
    assert any(item["event_id"] == event_id and item["action_type"] == "appointment"
               for item in story["history"])
    assert (await query.get("/v1/users/nobody/feedback-summary")).status_code == 404


async def test_the_same_event_id_twice_is_counted_once(
    stack: Stack, ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    response_id = f"resp-{uuid.uuid4().hex[:8]}"
    await ingest.post("/v1/responses", json=_response(response_id, action_type="dedupe_check"))
    event_id = str(uuid.uuid4())
    vote = {"event_id": event_id, "response_id": response_id, "thumb": "up", "user_id": "bob"}
    first = await ingest.post("/v1/feedback", json=vote)
    second = await ingest.post("/v1/feedback", json=vote)
    batch = await ingest.post("/v1/events", json={"events": [vote | {"type": "feedback.submitted"}]})
    assert first.status_code == second.status_code == batch.status_code == 202
    assert first.json()["event_id"] == second.json()["event_id"] == event_id
    # A later, distinct event proves the duplicates before it were consumed. It is about
    # another response: bob's later thumb on the same one would replace his up vote.
    marker_id = f"{response_id}-marker"
    await ingest.post("/v1/responses", json=_response(marker_id, action_type="dedupe_check"))
    marker = await ingest.post(
        "/v1/feedback", json={"response_id": marker_id, "thumb": "down", "user_id": "bob"}
    )
    assert marker.status_code == 202

    async def settled() -> dict[str, Any] | None:
        group = (await _approval(query)).get("dedupe_check")
        return group if group and group["down"] == 1 else None

    group = await eventually(settled, timeout=15)
    assert group["up"] == 1

    async def profiled() -> dict[str, Any] | None:
        answer = await query.get("/v1/users/bob/feedback-summary")
        story = answer.json() if answer.status_code == 200 else None
        return story if story and story["totals"]["rejected"] == 1 else None

    story = await eventually(profiled, timeout=15)
    assert story["totals"] == {"accepted": 1, "rejected": 1, "neutral": 0, "total": 2}


async def _end_offsets(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("path", "body", "location"),
    [
        ("/v1/feedback", {"response_id": "r", "rating": 6}, ["rating"]),
        ("/v1/feedback", {"response_id": "r"}, []),
        ("/v1/feedback", {"response_id": "r", "thumb": "up", "tenant_id": "other"}, ["tenant_id"]),
        ("/v1/feedback", {"response_id": "r", "comment": {"text": "x", "tags": []}},
         ["comment", "tags"]),
        ("/v1/responses", {"response_id": "r", "prompt": [], "output": "o", "model": "m"},
         ["prompt"]),
        ("/v1/recommendations/choices", {"chosen_item_id": "a", "chosen_rank": 1}, []),
    ],
)
async def test_invalid_events_get_problem_details_and_nothing_is_published(
    stack: Stack, ingest: httpx.AsyncClient, path: str, body: dict[str, Any], location: list[str]
) -> None:
    topics = [stack.names.physical(t) for t in (Topic.FEEDBACK, Topic.RESPONSES,
                                                 Topic.RECOMMENDATIONS)]
    before = [await _end_offsets(stack.bootstrap, t) for t in topics]
    answer = await ingest.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == 422 and problem["errors"]
    if location:
        assert any(error["loc"] == location for error in problem["errors"]), problem
    assert [await _end_offsets(stack.bootstrap, t) for t in topics] == before


async def test_batch_reports_each_event(ingest: httpx.AsyncClient) -> None:
    events = [
        {"type": "response.logged", **_response("batch-1")},
        {"type": "feedback.submitted", "response_id": "batch-1", "rating": 5},
        {"type": "feedback.submitted", "response_id": "batch-1", "rating": 0},
        {"type": "no.such.type"},
        {"type": "recommendation.session_started", "session_id": "s1", "algorithm_version": "v1",
         "options": [{"item_id": "a", "rank": 1, "scores": {"price": 0.5}}]},
    ]
    answer = await ingest.post("/v1/events", json={"events": events})
    assert answer.status_code == 202, answer.text
    result = answer.json()
    assert (result["accepted"], result["invalid"]) == (3, 2)
    statuses = [item["status"] for item in result["results"]]
    assert statuses == ["accepted", "accepted", "invalid", "invalid", "accepted"]
    assert result["results"][2]["errors"][0]["loc"] == ["rating"]
    all_bad = await ingest.post("/v1/events", json={"events": [{"type": "x"}]})
    assert all_bad.status_code == 422


async def test_size_limits(ingest: httpx.AsyncClient) -> None:
    too_many = [{"type": "feedback.submitted", "response_id": "r", "thumb": "up"}] * 1001
    assert (await ingest.post("/v1/events", json={"events": too_many})).status_code == 413
    huge = {"events": [{"type": "feedback.submitted", "response_id": "r",
                        "comment": {"text": "x" * 20_000}}] * 60}
    answer = await ingest.post("/v1/events", content=orjson.dumps(huge),
                               headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["status"] == 413


async def test_keys_decide_the_tenant_and_what_it_may_do(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.services.url("ingest")) as anonymous:
        missing = await anonymous.post("/v1/feedback", json={"response_id": "r", "thumb": "up"})
        assert missing.status_code == 401 and "WWW-Authenticate" in missing.headers
    async with stack.ingest("fbl_not-a-real-key") as stranger:
        assert (await stranger.post("/v1/feedback", json={})).status_code == 401
    reader = await stack.key("acme", ["read"])
    async with stack.ingest(reader) as client:
        assert (await client.post("/v1/feedback", json={"response_id": "r", "thumb": "up"})
                ).status_code == 403
    browser = await stack.key("acme", ["feedback"])
    async with stack.ingest(browser) as client:
        assert (await client.post("/v1/feedback", json={"response_id": "r", "thumb": "up"})
                ).status_code == 202
        assert (await client.post("/v1/responses", json=_response("x"))).status_code == 403
    ingest_only = await stack.key("acme", ["ingest"])
    async with stack.query(ingest_only) as client:
        assert (await client.get("/v1/analytics/approval")).status_code == 403

    # Tenant isolation: another tenant's key sees none of acme's data, and writes only its own.
    other = await stack.key("globex", ["ingest", "read"])
    async with stack.query(other) as client:
        assert (await _approval(client)) == {}
        assert (await client.get("/v1/users/alice/feedback-summary")).status_code == 404


async def test_service_surfaces(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        for name in ("ingest", "query", "profiles", "learner", "trainer", "metrics"):
            base = stack.services.url(name)
            assert (await client.get(f"{base}/healthz")).status_code == 200
            assert (await client.get(f"{base}/readyz")).status_code == 200
            metrics = await client.get(f"{base}/metrics")
            assert metrics.status_code == 200
        for name in ("ingest", "query"):
            spec = (await client.get(f"{stack.services.url(name)}/openapi.json")).json()
            assert spec["openapi"].startswith("3.")
        ingest_paths = set(
            (await client.get(f"{stack.services.url('ingest')}/openapi.json")).json()["paths"]
        )
        assert {"/v1/responses", "/v1/feedback", "/v1/recommendations/sessions",
                "/v1/recommendations/interactions", "/v1/recommendations/choices",
                "/v1/users/{user_id}/consent", "/v1/users/{user_id}/erasure",
                "/v1/events"} <= ingest_paths
        for name in ("profiles", "learner", "trainer", "metrics"):
            document = (await client.get(f"{stack.services.url(name)}/asyncapi.json")).json()
            assert document["asyncapi"].startswith("3.")
            addresses = {channel["address"] for channel in document["channels"].values()}
            assert stack.names.physical(Topic.RESPONSES if name != "learner"
                                        else Topic.RECOMMENDATIONS) in addresses
        ingest_metrics = (await client.get(f"{stack.services.url('ingest')}/metrics")).text
        accepted = 'feedbackloop_ingest_events_total{event_type="feedback.submitted",outcome="accepted"}'
        assert accepted in ingest_metrics
