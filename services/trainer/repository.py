"""All SQL of the trainer schema."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from feedbackloop.consumer import consecutive_runs
from services.trainer.processing import (
    ConsentSet,
    FeedbackStored,
    ResponseStored,
    TrainerEffect,
    UserErased,
)


async def write_effects(connection: asyncpg.Connection, effects: Sequence[TrainerEffect]) -> None:
    for kind, run in consecutive_runs(effects):
        if kind is ResponseStored:
            await connection.executemany(
                """
                INSERT INTO trainer.responses (tenant_id, response_id, event_id, user_id, prompt,
                    context, output, model, action_type, action_data, feature, language,
                    prompt_version, experiment, variant, occurred_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                ON CONFLICT DO NOTHING
                """,
                [
                    (
                        e.tenant_id, e.response_id, e.event_id, e.user_id, e.prompt, e.context,
                        e.output, e.model, e.action_type, e.action_data, e.feature, e.language,
                        e.prompt_version, e.experiment, e.variant, e.occurred_at,
                    )
                    for e in run
                ],
            )
        elif kind is FeedbackStored:
            await connection.executemany(
                """
                INSERT INTO trainer.feedback (tenant_id, event_id, response_id, user_id, kind,
                    thumb, rating, comment, correction, replay, inline_prompt, inline_output,
                    inline_model, inline_action_type, occurred_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                ON CONFLICT DO NOTHING
                """,
                [
                    (
                        e.tenant_id, e.event_id, e.response_id, e.user_id, e.kind, e.thumb,
                        e.rating, e.comment, e.correction, e.replay, e.inline_prompt,
                        e.inline_output, e.inline_model, e.inline_action_type, e.occurred_at,
                    )
                    for e in run
                ],
            )
        elif kind is ConsentSet:
            await connection.executemany(
                """
                INSERT INTO trainer.consent (tenant_id, user_id, training_allowed, changed_at)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (tenant_id, user_id) DO UPDATE SET
                    training_allowed = EXCLUDED.training_allowed,
                    changed_at = EXCLUDED.changed_at
                WHERE trainer.consent.changed_at <= EXCLUDED.changed_at
                """,
                [(e.tenant_id, e.user_id, e.training_allowed, e.changed_at) for e in run],
            )
        elif kind is UserErased:
            users = [(e.tenant_id, e.user_id) for e in run]
            for table in ("feedback", "responses", "consent"):
                await connection.executemany(
                    f"DELETE FROM trainer.{table} WHERE tenant_id = $1 AND user_id = $2", users
                )
