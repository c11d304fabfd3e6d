"""Reviews over HTTP: `POST /v1/reviews` needs the `review` scope, names the reviewer by the
key that sent it (never the body), and the trainer keeps each reviewer's latest label, the
latest mark and the latest assignment, whatever order the events arrive in, once each."""

from __future__ import annotations

import uuid

import pytest

from services.cli.admin import create_key
from tests.e2e.conftest import Stack
from tests.infra import eventually

pytestmark = pytest.mark.e2e


async def _queue_item(stack: Stack, key: str, response_id: str) -> dict | None:
    async with stack.query(key) as query:
        answer = await query.get("/v1/reviews/queue", params={"response_id": response_id})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    return items[0] if items else None


async def test_reviews_need_the_review_scope_and_are_attributed_to_the_key(stack: Stack) -> None:
    tenant = f"rev-{uuid.uuid4().hex[:8]}"
    key_id, reviewer = await create_key(stack.database_url, tenant_id=tenant, name="ana",
                                        scopes=["read", "review"])
    ingest_only = await stack.key(tenant, ["ingest", "read"])
    response_id = "rev-r1"
    async with stack.ingest(ingest_only) as ingest:
        assert (await ingest.post("/v1/responses", json={
            "response_id": response_id, "prompt": [{"role": "user", "content": "Hi"}],
            "output": "Hello.", "model": "m", "action_type": "greet"})).status_code == 202
        assert (await ingest.post("/v1/feedback", json={
            "response_id": response_id, "thumb": "down", "user_id": "u"})).status_code == 202
        refused = await ingest.post("/v1/reviews", json={
            "response_id": response_id, "action": "reviewed"})
        assert refused.status_code == 403, refused.text
        batch = await ingest.post("/v1/events", json={"events": [
            {"type": "review.submitted", "response_id": response_id, "action": "reviewed"}]})
        assert batch.status_code == 422, batch.text  # a batch cannot carry a review

    later, earlier = str(uuid.uuid4()), str(uuid.uuid4())
    async with stack.ingest(reviewer) as ingest:
        named = await ingest.post("/v1/reviews", json={
            "response_id": response_id, "action": "reviewed", "reviewer": "someone-else"})
        assert named.status_code == 422, named.text
        incomplete = await ingest.post("/v1/reviews", json={
            "response_id": response_id, "action": "label", "label": "verdict"})
        assert incomplete.status_code == 422, incomplete.text
        # The later answer arrives first; the earlier one, then a retry of the later, change
        # nothing.
        for event_id, value, moment in ((later, "wrong", "2026-11-30T10:00:00Z"),
                                        (earlier, "acceptable", "2026-11-30T09:00:00Z"),
                                        (later, "wrong", "2026-11-30T10:00:00Z")):
            answer = await ingest.post("/v1/reviews", json={
                "event_id": event_id, "occurred_at": moment, "response_id": response_id,
                "action": "label", "label": "verdict", "value": value})
            assert answer.status_code == 202, answer.text
            assert answer.json()["event_id"] == event_id
        for body in ({"action": "assigned", "assignee": "bo",
                      "occurred_at": "2026-11-30T11:00:00Z"},
                     {"action": "assigned", "assignee": "cy",
                      "occurred_at": "2026-11-30T10:30:00Z"},
                     {"action": "reviewed", "occurred_at": "2026-11-30T12:00:00Z"}):
            answer = await ingest.post("/v1/reviews", json={"response_id": response_id} | body)
            assert answer.status_code == 202, answer.text

    async def applied() -> dict | None:
        item = await _queue_item(stack, reviewer, response_id)
        if item and item["labels"] and item["assignee"] and item["reviewed_at"]:
            return item
        return None

    item = await eventually(applied, timeout=60)
    assert [(label["reviewer"], label["reviewer_name"], label["label"], label["value"])
            for label in item["labels"]] == [(key_id, "ana", "verdict", "wrong")]
    assert item["assignee"] == "bo" and item["assigned_by"] == "ana"
    assert item["reviewed_by"] == "ana"
    async with stack.query(reviewer) as query:
        agreement = (await query.get("/v1/reviews/agreement")).json()
    assert agreement["labels"][0]["label"] == "verdict"
    assert agreement["labels"][0]["method"] == "none"  # one reviewer: nothing to agree on
