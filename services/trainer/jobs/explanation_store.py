"""The SQL of failure explanations: down-voted replies to explain, and the answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from services.trainer.repository import _NOBODY_OPTED_OUT, _REPLY_COLUMNS


@dataclass(frozen=True)
class FailureToExplain:
    """A down-voted reply with what the model needs to explain it."""

    tenant_id: str
    feedback_event_id: UUID
    response_id: str
    user_id: str | None
    prompt: list[dict[str, Any]]
    output: str
    action_type: str | None
    attempts: int


async def failures_to_explain(
    connection: asyncpg.Connection, *, limit: int, max_attempts: int
) -> list[FailureToExplain]:
    """Thumbs-down and not-useful replays whose prompt and reply are known, not explained yet
    and not failed `max_attempts` times, where neither the voter nor the conversation's user
    opted out; oldest first."""
    rows = await connection.fetch(
        f"""
        SELECT * FROM (
            SELECT f.tenant_id, f.event_id AS feedback_event_id, f.response_id, f.user_id,
                   f.occurred_at,
                   {_REPLY_COLUMNS},
                   COALESCE(r.action_type, f.inline_action_type) AS action_type,
                   COALESCE(e.attempts, 0) AS attempts
            FROM trainer.feedback f
            LEFT JOIN trainer.responses r USING (tenant_id, response_id)
            LEFT JOIN trainer.failure_explanations e
                ON e.tenant_id = f.tenant_id AND e.feedback_event_id = f.event_id
            WHERE (f.thumb = 'down' OR (f.replay ->> 'useful')::boolean IS FALSE) AND f.current
              AND (e.status IS NULL OR (e.status = 'failed' AND e.attempts < $2))
              AND {_NOBODY_OPTED_OUT}
        ) AS pending
        -- One whose prompt or reply is not known yet waits for the response.
        WHERE prompt IS NOT NULL AND output IS NOT NULL
        ORDER BY occurred_at, feedback_event_id
        LIMIT $1
        """,
        limit,
        max_attempts,
    )
    return [
        FailureToExplain(**{key: value for key, value in row.items() if key != "occurred_at"})
        for row in rows
    ]


async def record_explanation(
    connection: asyncpg.Connection,
    *,
    failure: FailureToExplain,
    explanation: str | None,
    model: str,
    error: str | None,
) -> None:
    """Stores the model's answer, or the error of a failed attempt (counted)."""
    await connection.execute(
        """
        INSERT INTO trainer.failure_explanations (tenant_id, feedback_event_id, response_id,
            user_id, status, explanation, model, attempts, error)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (tenant_id, feedback_event_id) DO UPDATE SET
            status = EXCLUDED.status, explanation = EXCLUDED.explanation,
            model = EXCLUDED.model, attempts = EXCLUDED.attempts, error = EXCLUDED.error,
            updated_at = now()
        """,
        failure.tenant_id, failure.feedback_event_id, failure.response_id, failure.user_id,
        "explained" if explanation is not None else "failed", explanation, model,
        failure.attempts + 1, error,
    )
