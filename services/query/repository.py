"""All SQL of the query service. Every function is scoped to one tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg

GroupBy = Literal["action_type", "model", "tenant"]
_GROUP_COLUMN: dict[str, str] = {
    "action_type": "action_type",
    "model": "model",
    "tenant": "tenant_id",
}


async def approval_by_group(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    tenant_id: str,
    group_by: GroupBy,
    start: datetime,
    end: datetime,
) -> list[asyncpg.Record]:
    column = _GROUP_COLUMN[group_by]
    return await connection.fetch(
        f"""
        SELECT {column} AS grp, sum(thumbs_up)::bigint AS up, sum(thumbs_down)::bigint AS down
        FROM metrics.feedback_minute
        WHERE tenant_id = $1 AND bucket >= $2 AND bucket < $3
        GROUP BY {column}
        HAVING sum(thumbs_up) + sum(thumbs_down) > 0
        ORDER BY {column}
        """,
        tenant_id,
        start,
        end,
    )


async def user_verdicts_by_action_type(
    connection: asyncpg.Connection | asyncpg.Pool, *, tenant_id: str, user_id: str
) -> list[asyncpg.Record]:
    return await connection.fetch(
        """
        SELECT COALESCE(r.action_type, f.action_type, 'unknown') AS action_type,
               count(*) FILTER (WHERE f.verdict = 'accepted') AS accepted,
               count(*) FILTER (WHERE f.verdict = 'rejected') AS rejected,
               count(*) FILTER (WHERE f.verdict = 'neutral') AS neutral,
               count(*) AS total
        FROM profiles.feedback f
        LEFT JOIN profiles.responses r USING (tenant_id, response_id)
        WHERE f.tenant_id = $1 AND f.user_id = $2
        GROUP BY 1
        ORDER BY 1
        """,
        tenant_id,
        user_id,
    )


async def user_feedback_history(
    connection: asyncpg.Connection | asyncpg.Pool,
    *,
    tenant_id: str,
    user_id: str,
    limit: int,
) -> list[asyncpg.Record]:
    return await connection.fetch(
        """
        SELECT f.event_id, f.response_id, f.kind, f.verdict, f.thumb, f.rating, f.comment,
               f.reasons, f.correction, f.occurred_at,
               COALESCE(r.action_type, f.action_type, 'unknown') AS action_type, r.model
        FROM profiles.feedback f
        LEFT JOIN profiles.responses r USING (tenant_id, response_id)
        WHERE f.tenant_id = $1 AND f.user_id = $2
        ORDER BY f.occurred_at DESC, f.event_id
        LIMIT $3
        """,
        tenant_id,
        user_id,
        limit,
    )


async def user_profile(
    connection: asyncpg.Connection | asyncpg.Pool, *, tenant_id: str, user_id: str
) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT first_seen_at, last_seen_at, training_allowed FROM profiles.users "
        "WHERE tenant_id = $1 AND user_id = $2",
        tenant_id,
        user_id,
    )
