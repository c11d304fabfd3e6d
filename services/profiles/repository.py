"""All SQL of the profiles schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from feedbackloop.consumer import consecutive_runs
from services.profiles.processing import (
    ConsentSet,
    FeedbackGiven,
    ProfileEffect,
    ResponseSeen,
    UserErased,
)


async def write_effects(connection: asyncpg.Connection, effects: Sequence[ProfileEffect]) -> None:
    for kind, run in consecutive_runs(effects):
        if kind is ResponseSeen:
            await _insert_responses(connection, run)
        elif kind is FeedbackGiven:
            await _insert_feedback(connection, run)
        elif kind is ConsentSet:
            await _set_consent(connection, run)
        elif kind is UserErased:
            await _erase_users(connection, run)


async def _insert_responses(connection: asyncpg.Connection, run: list[ResponseSeen]) -> None:
    await connection.executemany(
        """
        INSERT INTO profiles.responses (tenant_id, response_id, action_type, model, occurred_at)
        VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING
        """,
        [(e.tenant_id, e.response_id, e.action_type, e.model, e.occurred_at) for e in run],
    )


async def _insert_feedback(connection: asyncpg.Connection, run: list[FeedbackGiven]) -> None:
    await connection.executemany(
        """
        INSERT INTO profiles.feedback (tenant_id, event_id, user_id, response_id, kind, verdict,
            thumb, rating, comment, reasons, correction, action_type, occurred_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        ON CONFLICT DO NOTHING
        """,
        [
            (
                e.tenant_id, e.event_id, e.user_id, e.response_id, e.kind, e.verdict, e.thumb,
                e.rating, e.comment, e.reasons, e.correction, e.action_type, e.occurred_at,
            )
            for e in run
        ],
    )
    await _touch_users(connection, [(e.tenant_id, e.user_id, e.occurred_at) for e in run])


async def _touch_users(connection: asyncpg.Connection, seen: list[tuple[str, str, Any]]) -> None:
    await connection.executemany(
        """
        INSERT INTO profiles.users (tenant_id, user_id, first_seen_at, last_seen_at)
        VALUES ($1, $2, $3, $3)
        ON CONFLICT (tenant_id, user_id) DO UPDATE SET
            first_seen_at = LEAST(profiles.users.first_seen_at, EXCLUDED.first_seen_at),
            last_seen_at = GREATEST(profiles.users.last_seen_at, EXCLUDED.last_seen_at)
        """,
        seen,
    )


async def _set_consent(connection: asyncpg.Connection, run: list[ConsentSet]) -> None:
    # The latest decision by occurred_at wins, whatever order the events arrive in.
    await connection.executemany(
        """
        INSERT INTO profiles.users (tenant_id, user_id, first_seen_at, last_seen_at,
            training_allowed, consent_changed_at)
        VALUES ($1, $2, $4, $4, $3, $4)
        ON CONFLICT (tenant_id, user_id) DO UPDATE SET
            training_allowed = EXCLUDED.training_allowed,
            consent_changed_at = EXCLUDED.consent_changed_at
        WHERE profiles.users.consent_changed_at IS NULL
           OR profiles.users.consent_changed_at <= EXCLUDED.consent_changed_at
        """,
        [(e.tenant_id, e.user_id, e.training_allowed, e.changed_at) for e in run],
    )


async def _erase_users(connection: asyncpg.Connection, run: list[UserErased]) -> None:
    users = [(e.tenant_id, e.user_id) for e in run]
    await connection.executemany(
        "DELETE FROM profiles.feedback WHERE tenant_id = $1 AND user_id = $2", users
    )
    await connection.executemany(
        "DELETE FROM profiles.users WHERE tenant_id = $1 AND user_id = $2", users
    )
