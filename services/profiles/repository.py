"""The profiles schema's writes (private); the reads other services make are in `reads.py`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

from feedbackloop.pipeline.consumer import grouped_runs
from feedbackloop.postgres import mark_current_signals, record_tombstones
from services.profiles.processing import (
    ConsentSet,
    FeedbackGiven,
    ProfileEffect,
    RecommendationDecided,
    RecommendationInteracted,
    RecommendationShown,
    ResponseSeen,
    UserErased,
)

Connection: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def write_effects(connection: asyncpg.Connection, effects: Sequence[ProfileEffect]) -> None:
    # Consent and erasure change what the other writes see; everything else commutes.
    for kind, run in grouped_runs(effects, barriers=(ConsentSet, UserErased)):
        if kind is ResponseSeen:
            await _insert_responses(connection, run)
        elif kind is FeedbackGiven:
            await _insert_feedback(connection, run)
        elif kind is ConsentSet:
            await _set_consent(connection, run)
        elif kind is UserErased:
            await _erase_users(connection, run)
        elif kind is RecommendationShown:
            await _insert_sessions(connection, run)
        elif kind is RecommendationInteracted:
            await _insert_interactions(connection, run)
        elif kind is RecommendationDecided:
            await _insert_decisions(connection, run)


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
            thumb, rating, comment, reasons, correction, action_type, occurred_at, retraction,
            current)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NOT $14)
        ON CONFLICT DO NOTHING
        """,
        [
            (
                e.tenant_id, e.event_id, e.user_id, e.response_id, e.kind, e.verdict, e.thumb,
                e.rating, e.comment, e.reasons, e.correction, e.action_type, e.occurred_at,
                e.retraction,
            )
            for e in run
        ],
    )
    await _mark_current(connection, run)
    await _touch_users(connection, [(e.tenant_id, e.user_id, e.occurred_at) for e in run])


async def _mark_current(connection: asyncpg.Connection, run: list[FeedbackGiven]) -> None:
    """Of each signal the run touched, exactly the latest event by (occurred_at, event_id) is
    current, unless it is a retraction. Recomputed from the stored rows, so it holds for any
    arrival order; one response's events are consumed by one replica at a time (they share a
    partition, and the pipeline locks the response besides), and erasure deletes rows rather
    than flagging them."""
    signals = sorted({(e.tenant_id, e.user_id, e.response_id, e.kind) for e in run})
    await mark_current_signals(connection, "profiles.feedback",
                               ("tenant_id", "user_id", "response_id", "kind"), signals)


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


async def _insert_sessions(connection: asyncpg.Connection, run: list[RecommendationShown]) -> None:
    await connection.executemany(
        """
        INSERT INTO profiles.recommendation_sessions (tenant_id, session_id, user_id, segment,
            complexity, stated_preferences, options, occurred_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING
        """,
        [
            (e.tenant_id, e.session_id, e.user_id, e.segment, e.complexity,
             e.stated_preferences, e.options, e.occurred_at)
            for e in run
        ],
    )
    await _touch_users(connection, [(e.tenant_id, e.user_id, e.occurred_at) for e in run])


async def _insert_interactions(
    connection: asyncpg.Connection, run: list[RecommendationInteracted]
) -> None:
    await connection.executemany(
        """
        INSERT INTO profiles.recommendation_interactions (tenant_id, event_id, session_id,
            user_id, item_id, interaction, time_spent_seconds, helpful_rating, occurred_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING
        """,
        [
            (e.tenant_id, e.event_id, e.session_id, e.user_id, e.item_id, e.interaction,
             e.time_spent_seconds, e.helpful_rating, e.occurred_at)
            for e in run
        ],
    )


async def _insert_decisions(
    connection: asyncpg.Connection, run: list[RecommendationDecided]
) -> None:
    await connection.executemany(
        """
        INSERT INTO profiles.recommendation_choices (tenant_id, event_id, session_id, user_id,
            chosen_item_id, chosen_rank, important_factors, decision_time_seconds,
            satisfaction, occurred_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING
        """,
        [
            (e.tenant_id, e.event_id, e.session_id, e.user_id, e.chosen_item_id, e.chosen_rank,
             e.important_factors, e.decision_time_seconds, e.satisfaction, e.occurred_at)
            for e in run
        ],
    )
    await _touch_users(connection, [(e.tenant_id, e.user_id, e.occurred_at) for e in run])


async def _erase_users(connection: asyncpg.Connection, run: list[UserErased]) -> None:
    users = [(e.tenant_id, e.user_id) for e in run]
    await record_tombstones(connection, "profiles", run)
    for table in ("recommendation_choices", "recommendation_interactions",
                  "recommendation_sessions"):
        await connection.executemany(
            f"DELETE FROM profiles.{table} WHERE tenant_id = $1 AND user_id = $2", users
        )
    await connection.executemany(
        "DELETE FROM profiles.feedback WHERE tenant_id = $1 AND user_id = $2", users
    )
    await connection.executemany(
        "DELETE FROM profiles.users WHERE tenant_id = $1 AND user_id = $2", users
    )
