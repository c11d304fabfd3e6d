"""The learner schema's choice log (private): the sessions and choices the consumer writes, an
erasure's deletes, and the choices the refits read (which consult the refit watermark and the
newest version to know what is new). The refits' writes (versions, refit state, customers'
weights) are `refits/store.py`'s; the reads other services make are in `reads.py`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeAlias

import asyncpg

from feedbackloop.pipeline.consumer import grouped_runs
from feedbackloop.postgres import record_tombstones
from services.learner.processing import (
    ChoiceMade,
    LearnerEffect,
    PendingChoices,
    SessionShown,
    UserErased,
)

Connection: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def write_effects(connection: asyncpg.Connection, effects: Sequence[LearnerEffect]) -> None:
    # An erasure must see what came before it; sessions and choices commute.
    for kind, run in grouped_runs(effects, barriers=(UserErased,)):
        if kind is SessionShown:
            await _insert_sessions(connection, run)
        elif kind is ChoiceMade:
            await _insert_choices(connection, run)
        elif kind is UserErased:
            await _erase_users(connection, run)


async def _insert_sessions(connection: asyncpg.Connection, run: list[SessionShown]) -> None:
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


async def _insert_choices(connection: asyncpg.Connection, run: list[ChoiceMade]) -> None:
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


async def _erase_users(connection: asyncpg.Connection, run: list[UserErased]) -> None:
    users = [(e.tenant_id, e.user_id) for e in run]
    # Tombstones: the user's earlier events arriving later are dropped (migration 0011).
    await record_tombstones(connection, "learner", run)
    await connection.executemany(
        "DELETE FROM learner.choices WHERE tenant_id = $1 AND user_id = $2", users
    )
    await connection.executemany(
        "DELETE FROM learner.sessions WHERE tenant_id = $1 AND user_id = $2", users
    )
    await connection.executemany(
        "DELETE FROM learner.customer_weights WHERE tenant_id = $1 AND user_id = $2",
        users,
    )


# The choice log as the refits read it.

_SEGMENT = "COALESCE(s.segment, 'balanced')"


async def pending_choices(connection: Connection) -> list[PendingChoices]:
    """Per tenant and segment, the choices recorded after the segment's last refit read."""
    rows = await connection.fetch(
        f"""
        SELECT c.tenant_id, {_SEGMENT} AS segment, count(*) AS new_choices,
               min(c.recorded_at) AS oldest_new_at, min(r.fitted_at) AS last_fitted_at
        FROM learner.choices c
        JOIN learner.sessions s USING (tenant_id, session_id)
        LEFT JOIN learner.refit_state r
            ON r.tenant_id = c.tenant_id AND r.segment = {_SEGMENT}
        WHERE c.chosen_item_id IS NOT NULL
          AND (r.fitted_through IS NULL OR c.recorded_at > r.fitted_through)
        GROUP BY 1, 2
        """
    )
    return [PendingChoices(**dict(row)) for row in rows]


async def recent_choices(
    connection: Connection, *, tenant_id: str, limit: int
) -> list[asyncpg.Record]:
    """The tenant's newest `limit` choices of an option, with the options shown, the customer
    and the segment the session was ranked for (`balanced` when it named none). A segment
    whose preferences shifted forgets the choices before its window."""
    return await connection.fetch(
        f"""
        SELECT {_SEGMENT} AS segment, s.options, c.chosen_item_id, c.recorded_at, c.user_id
        FROM learner.choices c
        JOIN learner.sessions s USING (tenant_id, session_id)
        LEFT JOIN learner.refit_state r
            ON r.tenant_id = c.tenant_id AND r.segment = {_SEGMENT}
        WHERE c.tenant_id = $1 AND c.chosen_item_id IS NOT NULL
          AND (r.window_start IS NULL OR c.recorded_at >= r.window_start)
        ORDER BY c.recorded_at DESC
        LIMIT $2
        """,
        tenant_id,
        limit,
    )


async def recent_choices_of_segment(
    connection: Connection, *, tenant_id: str, segment: str, limit: int
) -> list[asyncpg.Record]:
    """The segment's newest `limit` choices of an option in its window, newest first."""
    return await connection.fetch(
        f"""
        SELECT s.options, c.chosen_item_id
        FROM learner.choices c
        JOIN learner.sessions s USING (tenant_id, session_id)
        LEFT JOIN learner.refit_state r ON r.tenant_id = c.tenant_id AND r.segment = $2
        WHERE c.tenant_id = $1 AND {_SEGMENT} = $2 AND c.chosen_item_id IS NOT NULL
          AND (r.window_start IS NULL OR c.recorded_at >= r.window_start)
        ORDER BY c.recorded_at DESC
        LIMIT $3
        """,
        tenant_id,
        segment,
        limit,
    )


async def read_watermark(connection: Connection) -> datetime:
    """A time before which no choice can still commit: the start of the oldest transaction
    open now (a choice's `recorded_at` is its transaction's start), or now when none is.

    Read before reading choices, it bounds what a refit may mark as read: a choice committed
    later by a transaction that was already open is then still seen as new.
    """
    watermark: datetime = await connection.fetchval(
        """
        SELECT LEAST(clock_timestamp(), min(xact_start))
        FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND xact_start IS NOT NULL
        """
    )
    return watermark


async def incremental_pending(connection: Connection) -> list[asyncpg.Record]:
    """Per tenant and segment that has a version with a posterior: how far increments and
    refits have absorbed its choices (`through`), and whether any choice came after."""
    return await connection.fetch(
        f"""
        SELECT r.tenant_id, r.segment,
               GREATEST(r.fitted_through, r.updated_through) AS through
        FROM learner.refit_state r
        WHERE EXISTS (
            SELECT 1 FROM learner.weights_versions v
            WHERE v.tenant_id = r.tenant_id AND v.segment = r.segment
              AND v.posterior IS NOT NULL)
          AND EXISTS (
            SELECT 1 FROM learner.choices c JOIN learner.sessions s USING (tenant_id, session_id)
            WHERE c.tenant_id = r.tenant_id AND {_SEGMENT} = r.segment
              AND c.chosen_item_id IS NOT NULL
              AND c.recorded_at > GREATEST(r.fitted_through, r.updated_through))
        ORDER BY 1, 2
        """
    )


async def choices_after(
    connection: Connection, *, tenant_id: str, segment: str, after: datetime,
    through: datetime, limit: int,
) -> list[asyncpg.Record]:
    """The segment's choices recorded in `(after, through]`, oldest first."""
    return await connection.fetch(
        f"""
        SELECT {_SEGMENT} AS segment, s.options, c.chosen_item_id, c.recorded_at, c.user_id
        FROM learner.choices c
        JOIN learner.sessions s USING (tenant_id, session_id)
        WHERE c.tenant_id = $1 AND {_SEGMENT} = $2 AND c.chosen_item_id IS NOT NULL
          AND c.recorded_at > $3 AND c.recorded_at <= $4
        ORDER BY c.recorded_at
        LIMIT $5
        """,
        tenant_id,
        segment,
        after,
        through,
        limit,
    )
