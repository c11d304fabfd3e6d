"""All SQL of the learner schema."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from feedbackloop.consumer import consecutive_runs
from services.learner.processing import ChoiceMade, LearnerEffect, SessionShown, UserErased


async def write_effects(connection: asyncpg.Connection, effects: Sequence[LearnerEffect]) -> None:
    for kind, run in consecutive_runs(effects):
        if kind is SessionShown:
            await connection.executemany(
                """
                INSERT INTO learner.sessions (tenant_id, session_id, event_id, user_id,
                    algorithm_version, segment, complexity, stated_preferences, options,
                    experiment, variant, occurred_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                ON CONFLICT DO NOTHING
                """,
                [
                    (
                        e.tenant_id, e.session_id, e.event_id, e.user_id, e.algorithm_version,
                        e.segment, e.complexity, e.stated_preferences, e.options, e.experiment,
                        e.variant, e.occurred_at,
                    )
                    for e in run
                ],
            )
        elif kind is ChoiceMade:
            await connection.executemany(
                """
                INSERT INTO learner.choices (tenant_id, event_id, session_id, user_id,
                    chosen_item_id, chosen_rank, important_factors, decision_time_seconds,
                    satisfaction, reasoning, occurred_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                ON CONFLICT DO NOTHING
                """,
                [
                    (
                        e.tenant_id, e.event_id, e.session_id, e.user_id, e.chosen_item_id,
                        e.chosen_rank, e.important_factors, e.decision_time_seconds,
                        e.satisfaction, e.reasoning, e.occurred_at,
                    )
                    for e in run
                ],
            )
        elif kind is UserErased:
            users = [(e.tenant_id, e.user_id) for e in run]
            await connection.executemany(
                "DELETE FROM learner.choices WHERE tenant_id = $1 AND user_id = $2", users
            )
            await connection.executemany(
                "DELETE FROM learner.sessions WHERE tenant_id = $1 AND user_id = $2", users
            )
