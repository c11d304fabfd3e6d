"""The profiles service's reads other services may use: a user's feedback story (current
signals, history, verdicts per action type), their profile row, and their recommendation
decisions as `segments.Decision`s, from which the segment rules (`segments.py`, pure) assign
the user's segment. Every read is scoped to one tenant and one user (the tenant-keyed hash)."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg

from services.profiles.segments import Decision

Connection: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def user_verdicts_by_action_type(
    connection: Connection, *, tenant_id: str, user_id: str
) -> list[asyncpg.Record]:
    """The verdicts of the user's current signals (a flipped thumb counts as its new verdict,
    a retracted one not at all), per action type."""
    return await connection.fetch(
        """
        SELECT COALESCE(r.action_type, f.action_type, 'unknown') AS action_type,
               count(*) FILTER (WHERE f.verdict = 'accepted') AS accepted,
               count(*) FILTER (WHERE f.verdict = 'rejected') AS rejected,
               count(*) FILTER (WHERE f.verdict = 'neutral') AS neutral,
               count(*) AS total
        FROM profiles.feedback f
        LEFT JOIN profiles.responses r USING (tenant_id, response_id)
        WHERE f.tenant_id = $1 AND f.user_id = $2 AND f.current
        GROUP BY 1
        ORDER BY 1
        """,
        tenant_id,
        user_id,
    )


async def user_feedback_history(
    connection: Connection,
    *,
    tenant_id: str,
    user_id: str,
    limit: int,
    current_only: bool = False,
) -> list[asyncpg.Record]:
    """The user's newest `limit` feedback events, each marked `current` (the signal's state
    now) or not (replaced by a later event, or a retraction); with `current_only`, only the
    current signals."""
    return await connection.fetch(
        """
        SELECT f.event_id, f.response_id, f.kind, f.verdict, f.thumb, f.rating, f.comment,
               f.reasons, f.correction, f.occurred_at, f.current, f.retraction,
               COALESCE(r.action_type, f.action_type, 'unknown') AS action_type, r.model
        FROM profiles.feedback f
        LEFT JOIN profiles.responses r USING (tenant_id, response_id)
        WHERE f.tenant_id = $1 AND f.user_id = $2 AND (f.current OR NOT $4)
        ORDER BY f.occurred_at DESC, f.event_id
        LIMIT $3
        """,
        tenant_id,
        user_id,
        limit,
        current_only,
    )


async def user_profile(
    connection: Connection, *, tenant_id: str, user_id: str
) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT first_seen_at, last_seen_at, training_allowed FROM profiles.users "
        "WHERE tenant_id = $1 AND user_id = $2",
        tenant_id,
        user_id,
    )


async def user_decisions(
    connection: Connection, *, tenant_id: str, user_id: str, limit: int = 200
) -> list[asyncpg.Record]:
    """The user's newest `limit` decisions, each with the options shown (empty when the
    session was never logged) and the session's stated preferences."""
    return await connection.fetch(
        """
        SELECT c.chosen_item_id, c.chosen_rank, c.important_factors, c.satisfaction,
               c.decision_time_seconds, c.occurred_at,
               COALESCE(s.options, '[]'::jsonb) AS options,
               COALESCE(s.stated_preferences, '{}') AS stated_preferences
        FROM profiles.recommendation_choices c
        LEFT JOIN profiles.recommendation_sessions s USING (tenant_id, session_id)
        WHERE c.tenant_id = $1 AND c.user_id = $2
        ORDER BY c.occurred_at DESC
        LIMIT $3
        """,
        tenant_id,
        user_id,
        limit,
    )


async def user_recommendation_totals(
    connection: Connection, *, tenant_id: str, user_id: str
) -> asyncpg.Record:
    return await connection.fetchrow(
        """
        SELECT (SELECT count(*) FROM profiles.recommendation_sessions
                WHERE tenant_id = $1 AND user_id = $2) AS sessions,
               count(*) AS decisions,
               count(chosen_item_id) AS chosen,
               avg(satisfaction)::double precision AS avg_satisfaction,
               avg(decision_time_seconds)::double precision AS avg_decision_seconds,
               (SELECT count(*) FROM profiles.recommendation_interactions
                WHERE tenant_id = $1 AND user_id = $2) AS interactions
        FROM profiles.recommendation_choices
        WHERE tenant_id = $1 AND user_id = $2
        """,
        tenant_id,
        user_id,
    )


async def decisions(
    connection: Connection, *, tenant_id: str, user_id: str, limit: int = 200
) -> list[Decision]:
    """The user's newest `limit` decisions (`user_decisions`) as the segment rules take them."""
    rows = await user_decisions(connection, tenant_id=tenant_id, user_id=user_id, limit=limit)
    return [
        Decision(row["options"], row["chosen_item_id"], row["important_factors"],
                 row["stated_preferences"])
        for row in rows
    ]
