"""The SQL that materializes reviews (see `services.trainer.reviews.effects` and migration 0015)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.trainer.reviews.effects import ReviewRecorded


async def write_reviews(connection: asyncpg.Connection, run: Sequence[ReviewRecorded]) -> None:
    """Applies a run of reviews: each row keeps its identity's latest event."""
    await _write_labels(connection, [e for e in run if e.action == "label"])
    await _write_marks(connection, [e for e in run if e.action == "reviewed"])
    await _write_assignments(connection, [e for e in run if e.action == "assigned"])


async def _write_labels(connection: asyncpg.Connection, labels: list[ReviewRecorded]) -> None:
    """A reviewer's answer to a question, per (response, reviewer, question)."""
    if not labels:
        return
    await connection.executemany(
        """
        INSERT INTO trainer.review_labels (tenant_id, response_id, reviewer, label, value,
            reviewer_name, note, occurred_at, event_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (tenant_id, response_id, reviewer, label) DO UPDATE SET
            value = EXCLUDED.value, reviewer_name = EXCLUDED.reviewer_name,
            note = EXCLUDED.note, occurred_at = EXCLUDED.occurred_at,
            event_id = EXCLUDED.event_id
        WHERE (trainer.review_labels.occurred_at, trainer.review_labels.event_id)
            < (EXCLUDED.occurred_at, EXCLUDED.event_id)
        """,
        [
            (e.tenant_id, e.response_id, e.reviewer, e.label, e.value, e.reviewer_name,
             e.note, e.occurred_at, e.event_id)
            for e in labels
        ],
    )


async def _write_marks(connection: asyncpg.Connection, marks: list[ReviewRecorded]) -> None:
    """Who marked a response reviewed, and when: its review state's `reviewed_*` columns."""
    if not marks:
        return
    await connection.executemany(
        """
        INSERT INTO trainer.review_states (tenant_id, response_id, reviewed_by,
            reviewed_by_name, reviewed_at, reviewed_event)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (tenant_id, response_id) DO UPDATE SET
            reviewed_by = EXCLUDED.reviewed_by,
            reviewed_by_name = EXCLUDED.reviewed_by_name,
            reviewed_at = EXCLUDED.reviewed_at, reviewed_event = EXCLUDED.reviewed_event
        WHERE trainer.review_states.reviewed_at IS NULL
           OR (trainer.review_states.reviewed_at, trainer.review_states.reviewed_event)
              < (EXCLUDED.reviewed_at, EXCLUDED.reviewed_event)
        """,
        [
            (e.tenant_id, e.response_id, e.reviewer, e.reviewer_name, e.occurred_at,
             e.event_id)
            for e in marks
        ],
    )


async def _write_assignments(
    connection: asyncpg.Connection, assignments: list[ReviewRecorded]
) -> None:
    """Whom a response is assigned to: its review state's `assign*` columns."""
    if not assignments:
        return
    await connection.executemany(
        """
        INSERT INTO trainer.review_states (tenant_id, response_id, assignee,
            assigned_by_name, assigned_at, assigned_event)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (tenant_id, response_id) DO UPDATE SET
            assignee = EXCLUDED.assignee, assigned_by_name = EXCLUDED.assigned_by_name,
            assigned_at = EXCLUDED.assigned_at, assigned_event = EXCLUDED.assigned_event
        WHERE trainer.review_states.assigned_at IS NULL
           OR (trainer.review_states.assigned_at, trainer.review_states.assigned_event)
              < (EXCLUDED.assigned_at, EXCLUDED.assigned_event)
        """,
        [
            (e.tenant_id, e.response_id, e.assignee, e.reviewer_name, e.occurred_at,
             e.event_id)
            for e in assignments
        ],
    )
