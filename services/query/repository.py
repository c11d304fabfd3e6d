"""All SQL of the query service: its own alert state and the outbox of alert changes
(`query.*`). What it reads of other services' data goes through their `reads.py`."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg


async def alert_states(
    connection: asyncpg.Connection | asyncpg.Pool, *, tenant_id: str | None
) -> list[asyncpg.Record]:
    """Stored alert states, of one tenant or (None) of all."""
    return await connection.fetch(
        """
        SELECT rule, tenant_id, subject, state, since, value, sample, threshold, evaluated_at
        FROM query.alert_states
        WHERE $1::text IS NULL OR tenant_id = $1
        ORDER BY rule, tenant_id, subject
        """,
        tenant_id,
    )


async def save_alert_states(
    connection: asyncpg.Connection,
    *,
    states: list[tuple[str, str, str, str, datetime, float | None, int, float, datetime]],
) -> None:
    """Upsert (rule, tenant_id, subject, state, since, value, sample, threshold, evaluated_at)."""
    await connection.executemany(
        """
        INSERT INTO query.alert_states
            (rule, tenant_id, subject, state, since, value, sample, threshold, evaluated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (rule, tenant_id, subject) DO UPDATE SET
            state = EXCLUDED.state, since = EXCLUDED.since, value = EXCLUDED.value,
            sample = EXCLUDED.sample, threshold = EXCLUDED.threshold,
            evaluated_at = EXCLUDED.evaluated_at
        """,
        states,
    )


async def queue_alert_changes(
    connection: asyncpg.Connection, *, changes: list[tuple[UUID, str, str, dict[str, object]]]
) -> None:
    """Queue (event_id, tenant_id, rule, document) for the alerts topic, in the caller's
    transaction: the outbox of the evaluation that made the changes."""
    await connection.executemany(
        "INSERT INTO query.alert_changes (event_id, tenant_id, rule, document) "
        "VALUES ($1, $2, $3, $4)",
        changes,
    )


async def pending_alert_changes(connection: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    """Queued alert changes not yet published, oldest first: (seq, tenant_id, rule, document)."""
    return await connection.fetch(
        "SELECT seq, tenant_id, rule, document::text AS document FROM query.alert_changes "
        "WHERE published_at IS NULL ORDER BY seq LIMIT $1",
        limit,
    )


async def mark_alert_changes_published(connection: asyncpg.Connection, *, seqs: list[int]) -> None:
    await connection.execute(
        "UPDATE query.alert_changes SET published_at = now() WHERE seq = ANY($1::bigint[])", seqs
    )


async def prune_published_alert_changes(
    connection: asyncpg.Connection, *, older_than_days: float, limit: int
) -> int:
    """Deletes up to `limit` alert changes published more than `older_than_days` ago (the
    outbox's unpublished rows stay); returns how many."""
    status = await connection.execute(
        """
        DELETE FROM query.alert_changes WHERE seq IN (
            SELECT seq FROM query.alert_changes
            WHERE published_at < now() - make_interval(secs => $1::float8 * 86400)
            LIMIT $2
        )
        """,
        older_than_days, limit,
    )
    return int(status.split()[-1])


async def try_lock_alert_evaluation(connection: asyncpg.Connection) -> bool:
    """Whether this transaction may evaluate the alerts: one query replica at a time does."""
    return bool(await connection.fetchval("SELECT pg_try_advisory_xact_lock(7311042009)"))
