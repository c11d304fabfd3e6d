"""Postgres plumbing: pools, which failures are transient (retry) or deterministic (DLQ), and
the erasure tombstones every schema that keeps user data shares (migration 0011)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Literal

import asyncpg
import orjson

from feedbackloop.contract import UserErased

ErasingSchema = Literal["profiles", "learner", "trainer", "metrics"]
SignalTable = Literal["profiles.feedback", "trainer.feedback"]


async def _init_connection(connection: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=60
    )
    assert pool is not None
    return pool


_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58")  # connection, resources, operator, system
# Serialization failure, deadlock, lock not available.
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
# The schema is not ready or has just changed: an undefined table, column, function, type or
# schema, or a cached plan the change invalidated. A consumer that meets these runs ahead of (or
# during) a migration; it must wait for the migration, not dead-letter good events.
_SCHEMA_SQLSTATES = frozenset({"42P01", "42703", "42883", "42704", "3F000"})


def is_schema_change(error: BaseException) -> bool:
    """True when the database's schema is behind the code or changed under a cached plan.

    Retrying can succeed once the migration has run, but only on connections whose statement
    and type caches are reset (`reset_after_schema_change`).
    """
    if isinstance(error, asyncpg.exceptions.OutdatedSchemaCacheError):
        return True
    if isinstance(error, asyncpg.PostgresError):
        return (getattr(error, "sqlstate", None) or "") in _SCHEMA_SQLSTATES
    return False


async def reset_after_schema_change(pool: asyncpg.Pool) -> None:
    """Replace the pool's connections, so no prepared statement or type codec from the old
    schema is used again (idle ones at once, busy ones when they are released)."""
    await pool.expire_connections()


def is_transient(error: BaseException) -> bool:
    """True when retrying the same work later can succeed: Postgres down, restarting,
    overloaded, or its schema not yet (or just) migrated.

    Everything else from Postgres (bad data, constraint violations) fails again on every retry.
    """
    if isinstance(error, (OSError, asyncio.TimeoutError, ConnectionError)):
        return True
    if isinstance(error, (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)):
        return True
    if is_schema_change(error):
        return True
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", None) or ""
        return state in _CONFLICT_SQLSTATES or state[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return False


async def record_tombstones(
    connection: asyncpg.Connection, schema: ErasingSchema, erasures: Sequence[UserErased]
) -> None:
    """Tombstones in `<schema>.erased_users` (the latest erasure of each user wins): the user's
    events that occurred before the erasure and arrive after it are dropped by the tombstone's
    trigger (migration 0011), so they cannot recreate the rows the erasure removed."""
    await connection.executemany(
        f"""
        INSERT INTO {schema}.erased_users (tenant_id, user_digest, erased_at)
        VALUES ($1, public.erased_user_digest($2), $3)
        ON CONFLICT (tenant_id, user_digest) DO UPDATE
        SET erased_at = GREATEST({schema}.erased_users.erased_at, EXCLUDED.erased_at)
        """,
        [(e.tenant_id, e.user_id, e.erased_at) for e in erasures],
    )


async def mark_current_signals(
    connection: asyncpg.Connection, table: SignalTable, identity: tuple[str, ...],
    signals: Sequence[tuple[str, ...]],
) -> None:
    """Of each signal in `signals` (the values of its `identity` columns, in that order),
    exactly the latest event in `table` by (occurred_at, event_id) is `current`, unless it is a
    retraction. Recomputed from the stored rows, so any arrival order gives the same result;
    the caller serializes one signal's events (they share a partition and a response lock)."""
    if not signals:
        return
    columns = ", ".join(identity)
    of_f = ", ".join(f"f.{name}" for name in identity)
    arrays = ", ".join(f"${i}::text[]" for i in range(1, len(identity) + 1))
    same_signal = " AND ".join(f"f.{name} = latest.{name}" for name in identity)
    await connection.execute(
        f"""
        WITH touched AS (
            SELECT * FROM unnest({arrays}) AS t({columns})
        ),
        latest AS (
            SELECT DISTINCT ON ({of_f}) {of_f}, f.event_id
            FROM {table} f
            JOIN touched USING ({columns})
            ORDER BY {of_f}, f.occurred_at DESC, f.event_id DESC
        )
        UPDATE {table} f
        SET current = (f.event_id = latest.event_id AND NOT f.retraction)
        FROM latest
        WHERE {same_signal}
          AND f.current IS DISTINCT FROM (f.event_id = latest.event_id AND NOT f.retraction)
        """,
        *[[signal[i] for signal in signals] for i in range(len(identity))],
    )
