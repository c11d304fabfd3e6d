"""Profiles keep what each user was shown, browsed and chose (from the sample events, through
the service's own process and write), serve it back for segments, and forget it on erasure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from feedbackloop.contract import decode_event, load_samples
from feedbackloop.postgres import create_pool
from services.profiles import reads, repository
from services.profiles.processing import process_message
from services.profiles.segments import Decision, assign_segment
from tests.infra import create_database

pytestmark = pytest.mark.integration
SAMPLES = load_samples()


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[Any]:
    pool = await create_pool(await create_database(postgres_url), min_size=1, max_size=2)
    yield pool
    await pool.close()


async def _apply(pool: Any, documents: list[dict[str, Any]]) -> None:
    effects = [process_message(decode_event(orjson.dumps(doc))) for doc in documents]
    async with pool.acquire() as connection, connection.transaction():
        await repository.write_effects(connection, [e for e in effects if e is not None])


async def test_recommendation_history_is_kept_served_and_erased(pool: Any) -> None:
    session = SAMPLES["recommendation.session_started"][0]
    choice = next(doc for doc in SAMPLES["recommendation.choice"]
                  if doc["session_id"] == session["session_id"] and doc["payload"].get(
                      "chosen_item_id"))
    interactions = [doc for doc in SAMPLES["recommendation.interaction"]
                    if doc["session_id"] == session["session_id"]]
    user, tenant = session["user_id"], session["tenant_id"]
    await _apply(pool, [session, *interactions, choice])
    await _apply(pool, [session, choice])  # rows are keyed, so a replay adds nothing

    decisions = await reads.user_decisions(pool, tenant_id=tenant, user_id=user)
    assert len(decisions) == 1
    row = decisions[0]
    assert row["chosen_item_id"] == choice["payload"]["chosen_item_id"]
    assert [o["item_id"] for o in row["options"]] == [
        o["item_id"] for o in session["payload"]["options"]]
    assert all("explanation" not in o for o in row["options"])
    assert list(row["stated_preferences"]) == session["payload"]["stated_preferences"]
    totals = await reads.user_recommendation_totals(pool, tenant_id=tenant, user_id=user)
    assert (totals["sessions"], totals["decisions"], totals["chosen"]) == (1, 1, 1)
    assert totals["interactions"] == len(interactions)
    assert await pool.fetchval(
        "SELECT count(*) FROM profiles.users WHERE tenant_id = $1 AND user_id = $2",
        tenant, user) == 1
    assignment = assign_segment([Decision(r["options"], r["chosen_item_id"],
                                          r["important_factors"], r["stated_preferences"])
                                 for r in decisions])
    # The session stated price and speed, the choice named quality: no factor leads yet.
    assert assignment.segment == "balanced"
    assert assignment.reasons[0] == "no factor clearly leads"
    assert assignment.evidence == {"price": 1.0, "quality": 1.0, "speed": 1.0, "locality": 0.0}

    erasure = SAMPLES["user.erasure_requested"][0] | {"tenant_id": tenant, "user_id": user}
    await _apply(pool, [erasure])
    for table in ("recommendation_sessions", "recommendation_choices",
                  "recommendation_interactions"):
        assert await pool.fetchval(f"SELECT count(*) FROM profiles.{table}") == 0, table
