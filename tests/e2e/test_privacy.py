"""Erasure over the real pipeline: after `POST /v1/users/{id}/erasure`, no table of any schema
holds the user's hash (searched through information_schema, every column of every row), the raw
id was never stored anywhere, and the user's events that occurred before the erasure but arrive
after it do not bring anything back; events that occur later (the user returns) are kept."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from feedbackloop.identity import hash_user_id
from services.learner.handlers import SPEC as LEARNER
from services.metrics.handlers import SPEC as METRICS
from services.profiles.handlers import SPEC as PROFILES
from services.trainer.handlers import SPEC as TRAINER
from tests.e2e.conftest import HMAC_SECRET, Stack
from tests.infra import eventually, group_lag

pytestmark = pytest.mark.e2e
TENANT = "acme"  # the stack's key
# Where a user's life (as `_send_life` sends it) is stored; the search itself covers every table.
USER_TABLES = {
    f'"{schema}"."{table}"'
    for schema, tables in {
        "profiles": ("feedback", "users", "recommendation_sessions", "recommendation_choices",
                     "recommendation_interactions"),
        "learner": ("sessions", "choices"),
        "trainer": ("responses", "feedback", "consent", "examples"),
    }.items()
    for table in tables
}


async def tables_holding(database_url: str, needle: str) -> dict[str, int]:
    """Every base table of every schema whose rows, as text, contain `needle`: {table: rows}."""
    connection = await asyncpg.connect(database_url)
    try:
        tables = await connection.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        assert len(tables) >= 20, tables  # the search really covers the read models
        found = {}
        for table in tables:
            name = f'"{table["table_schema"]}"."{table["table_name"]}"'
            rows = await connection.fetchval(
                f"SELECT count(*) FROM {name} AS r WHERE strpos(r::text, $1) > 0", needle
            )
            if rows:
                found[name] = rows
        return found
    finally:
        await connection.close()


async def _drained(stack: Stack) -> None:
    async def no_lag() -> bool:
        for spec in (PROFILES, LEARNER, TRAINER, METRICS):
            topics = [stack.names.physical(topic) for topic in spec.topics]
            if await group_lag(stack.bootstrap, f"{stack.names.prefix}.{spec.name}", topics) != 0:
                return False
        return True

    await eventually(no_lag, timeout=60, interval=0.5)


async def _send_life(ingest: httpx.AsyncClient, user: str, tag: str, at: datetime | None) -> None:
    """Everything a user can leave behind: a response, a thumb, a correction, a comment, a
    ranked session, an interaction, a choice and a consent change."""
    when: dict[str, Any] = {"occurred_at": at.isoformat()} if at else {}
    response_id = f"priv-{tag}-{uuid.uuid4().hex[:8]}"
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/v1/responses", {"response_id": response_id, "user_id": user, "model": "m",
                           "action_type": "email", "output": f"Dear {tag}, see you",
                           "prompt": [{"role": "user", "content": f"write to {tag}"}]}),
        ("/v1/feedback", {"response_id": response_id, "user_id": user, "thumb": "down"}),
        ("/v1/feedback", {"response_id": response_id, "user_id": user,
                          "correction": {"text": f"Hello {tag}, see you on Monday at noon"}}),
        ("/v1/feedback", {"response_id": response_id, "user_id": user,
                          "comment": {"text": "too formal", "reasons": ["tone"]}}),
    ]
    for path, body in calls:
        answer = await ingest.post(path, json=body | when)
        assert answer.status_code == 202, answer.text
    session_id = f"priv-s-{uuid.uuid4().hex[:8]}"
    for path, body in (
        ("/v1/recommendations/sessions", {
            "session_id": session_id, "user_id": user, "algorithm_version": "v1",
            "segment": "price_sensitive",
            "options": [{"item_id": "a", "rank": 1, "scores": {"price": 0.9}},
                        {"item_id": "b", "rank": 2, "scores": {"price": 0.1}}]}),
        ("/v1/recommendations/interactions", {
            "session_id": session_id, "user_id": user, "item_id": "a", "interaction": "viewed"}),
        ("/v1/recommendations/choices", {
            "session_id": session_id, "user_id": user, "chosen_item_id": "a", "chosen_rank": 1,
            "important_factors": ["price"], "satisfaction": 5}),
        (f"/v1/users/{user}/consent", {"training_allowed": True}),
    ):
        answer = await ingest.post(path, json=body | when)
        assert answer.status_code == 202, answer.text


async def test_erasure_leaves_no_row_with_the_user_and_late_events_do_not_recreate_any(
    stack: Stack, ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    user = f"erase-me-{uuid.uuid4().hex[:8]}"
    user_hash = hash_user_id(HMAC_SECRET.encode(), TENANT, user)
    before_erasure = datetime.now(UTC) - timedelta(seconds=30)
    await _send_life(ingest, user, "life", before_erasure)

    async def everywhere() -> dict[str, int] | None:
        found = await tables_holding(stack.database_url, user_hash)
        return found if USER_TABLES <= set(found) else None

    # The control: the search finds the user in every consumer's store before the erasure.
    await eventually(everywhere, timeout=60, interval=0.5)
    await _drained(stack)
    assert await tables_holding(stack.database_url, user) == {}  # the raw id: never stored

    erased = await ingest.post(f"/v1/users/{user}/erasure")
    assert erased.status_code == 202, erased.text

    async def gone() -> bool:
        return await tables_holding(stack.database_url, user_hash) == {}

    await eventually(gone, timeout=60, interval=0.5)
    summary = await query.get(f"/v1/users/{user}/feedback-summary")
    assert summary.status_code == 404, summary.text

    # Late events: occurred before the erasure, arrive after it (retries, other topics).
    await _send_life(ingest, user, "late", before_erasure + timedelta(seconds=5))
    await _drained(stack)
    assert await tables_holding(stack.database_url, user_hash) == {}
    assert (await query.get(f"/v1/users/{user}/feedback-summary")).status_code == 404
    exported = await query.get("/v1/training/export", params={"format": "openai-sft"})
    assert exported.status_code == 200
    assert "Hello late" not in exported.text and "Hello life" not in exported.text

    # The user comes back: events that occurred after the erasure are theirs again.
    await _send_life(ingest, user, "back", None)

    async def returned() -> dict[str, Any] | None:
        answer = await query.get(f"/v1/users/{user}/feedback-summary")
        body = answer.json()
        return body if answer.status_code == 200 and body["totals"]["total"] >= 1 else None

    body = await eventually(returned, timeout=60, interval=0.5)
    assert body["totals"]["rejected"] >= 1
    assert await tables_holding(stack.database_url, user) == {}
