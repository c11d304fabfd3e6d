"""Postgres plumbing: pools, and which failures are transient (retry) or deterministic (DLQ)."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson


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
# Serialization failure, deadlock, lock timeout; and a schema or table not there yet (a
# consumer started before migrations ran must wait for them, not dead-letter real events).
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "42P01", "3F000"})


def is_transient(error: BaseException) -> bool:
    """True when retrying the same work later can succeed: Postgres down, restarting, overloaded.

    Everything else from Postgres (bad data, constraint violations) fails again on every retry.
    """
    if isinstance(error, (OSError, asyncio.TimeoutError, ConnectionError)):
        return True
    if isinstance(error, (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)):
        return True
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", None) or ""
        return state in _TRANSIENT_SQLSTATES or state[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return False
