"""The learner schema's choice log (private): the sessions and choices the consumer writes, an
erasure's deletes, and the choices the refits read (which consult the refit watermark and the
newest version to know what is new). The refits' writes (versions, refit state, customers'
weights) are `refits/store.py`'s; the reads other services make are in `reads.py`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, TypeAlias
from uuid import UUID

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

# The greatest uuid: a mark at (t, ALL_AT) has read every choice recorded at t.
ALL_AT = UUID("ffffffff-ffff-ffff-ffff-ffffffffffff")


class ReadThrough(NamedTuple):
    """How far a refit or an incremental step has read a segment's choices: every choice at or
    before `(recorded_at, event_id)` in that order (migration 0026). A batch insert gives its
    choices one `recorded_at`, so the time alone cannot say where a read stopped within them."""

    recorded_at: datetime
    event_id: UUID


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


async def pending_choices(
    connection: Connection, *, before: datetime | None = None
) -> list[PendingChoices]:
    """Per tenant and segment, the choices recorded after the segment's last refit read (and,
    with `before`, a watermark, before it: the ones a refit now could read, so choices held
    back by an open transaction do not make a refit due again and again on the same data)."""
    rows = await connection.fetch(
        f"""
        SELECT c.tenant_id, {_SEGMENT} AS segment, count(*) AS new_choices,
               min(c.recorded_at) AS oldest_new_at, min(r.fitted_at) AS last_fitted_at
        FROM learner.choices c
        JOIN learner.sessions s USING (tenant_id, session_id)
        LEFT JOIN learner.refit_state r
            ON r.tenant_id = c.tenant_id AND r.segment = {_SEGMENT}
        WHERE c.chosen_item_id IS NOT NULL
          AND ($1::timestamptz IS NULL OR c.recorded_at < $1)
          AND (r.fitted_through IS NULL
               OR (c.recorded_at, c.event_id) > (r.fitted_through, r.fitted_through_event))
        GROUP BY 1, 2
        """,
        before,
    )
    return [PendingChoices(**dict(row)) for row in rows]


async def recent_choices(
    connection: Connection, *, tenant_id: str, before: datetime, limit: int
) -> list[asyncpg.Record]:
    """The tenant's newest `limit` choices of an option recorded before the watermark
    `before`, with the options shown, the customer and the segment the session was ranked for
    (`balanced` when it named none). A segment whose preferences shifted forgets the choices
    before its window. Newest first in the order `ReadThrough` marks: a refit marks read what
    it read, so no choice it fitted is absorbed again by an incremental step."""
    return await connection.fetch(
        f"""
        SELECT {_SEGMENT} AS segment, s.options, c.chosen_item_id, c.recorded_at, c.event_id,
               c.user_id
        FROM learner.choices c
        JOIN learner.sessions s USING (tenant_id, session_id)
        LEFT JOIN learner.refit_state r
            ON r.tenant_id = c.tenant_id AND r.segment = {_SEGMENT}
        WHERE c.tenant_id = $1 AND c.chosen_item_id IS NOT NULL AND c.recorded_at < $2
          AND (r.window_start IS NULL OR c.recorded_at >= r.window_start)
        ORDER BY c.recorded_at DESC, c.event_id DESC
        LIMIT $3
        """,
        tenant_id,
        before,
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
        ORDER BY c.recorded_at DESC, c.event_id DESC
        LIMIT $3
        """,
        tenant_id,
        segment,
        limit,
    )


async def read_watermark(connection: Connection) -> datetime:
    """A time before which no choice can still commit: the start of the oldest client
    transaction open now (a choice's `recorded_at` is its transaction's start), or this
    statement's start when none is (a transaction starting while it runs starts after it).
    Autovacuum and other background workers write no choice, so their transactions do not
    hold it back.

    Read before reading choices, it bounds what a refit or an incremental step reads, and so
    marks as read: a choice committed later by a transaction that was already open is then
    still seen as new. Exclusive: that transaction's choices are recorded at the watermark
    itself, so the reads take the choices recorded before it.
    """
    watermark: datetime = await connection.fetchval(
        """
        SELECT LEAST(statement_timestamp(), min(xact_start))
        FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND backend_type = 'client backend' AND xact_start IS NOT NULL
        """
    )
    return watermark


async def incremental_pending(connection: Connection) -> list[asyncpg.Record]:
    """Per tenant and segment that has a version with a posterior: how far increments and
    refits have absorbed its choices (`through` and `through_event`, the later of the two
    marks), when some choice came after."""
    return await connection.fetch(
        f"""
        SELECT r.tenant_id, r.segment, t.through, t.through_event
        FROM learner.refit_state r
        CROSS JOIN LATERAL (
            SELECT m.through, m.through_event
            FROM (VALUES (r.fitted_through, r.fitted_through_event),
                         (r.updated_through, r.updated_through_event)) m (through, through_event)
            WHERE m.through IS NOT NULL
            ORDER BY 1 DESC, 2 DESC LIMIT 1) t
        WHERE EXISTS (
            SELECT 1 FROM learner.weights_versions v
            WHERE v.tenant_id = r.tenant_id AND v.segment = r.segment
              AND v.posterior IS NOT NULL)
          AND EXISTS (
            SELECT 1 FROM learner.choices c JOIN learner.sessions s USING (tenant_id, session_id)
            WHERE c.tenant_id = r.tenant_id AND {_SEGMENT} = r.segment
              AND c.chosen_item_id IS NOT NULL
              AND (c.recorded_at, c.event_id) > (t.through, t.through_event))
        ORDER BY 1, 2
        """
    )


async def choices_after(
    connection: Connection, *, tenant_id: str, segment: str, after: ReadThrough,
    before: datetime, limit: int,
) -> list[asyncpg.Record]:
    """The segment's first `limit` choices after `after` recorded before the watermark
    `before`, oldest first in `ReadThrough`'s order: the last one is where the next read
    starts, even within choices sharing one `recorded_at`."""
    return await connection.fetch(
        f"""
        SELECT {_SEGMENT} AS segment, s.options, c.chosen_item_id, c.recorded_at, c.event_id,
               c.user_id
        FROM learner.choices c
        JOIN learner.sessions s USING (tenant_id, session_id)
        WHERE c.tenant_id = $1 AND {_SEGMENT} = $2 AND c.chosen_item_id IS NOT NULL
          AND (c.recorded_at, c.event_id) > ($3, $4) AND c.recorded_at < $5
        ORDER BY c.recorded_at, c.event_id
        LIMIT $6
        """,
        tenant_id,
        segment,
        after.recorded_at,
        after.event_id,
        before,
        limit,
    )
