"""All SQL of the experiments schema. Private: other packages use `reads.py` and `admin.py`."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

_COLUMNS = """tenant_id, name, experiment_id, salt, spec, status, created_at, started_at,
              stopped_at, concluded_at, conclusion, winner"""


async def insert(connection: asyncpg.Connection, *, tenant_id: str, name: str,
                 experiment_id: UUID, salt: str, spec: dict[str, Any]) -> asyncpg.Record | None:
    """The new row, or None when the tenant already has an experiment of this name."""
    row: asyncpg.Record | None = await connection.fetchrow(
        f"""
        INSERT INTO experiments.experiments (tenant_id, name, experiment_id, salt, spec)
        VALUES ($1, $2, $3, $4, $5::text::jsonb)
        ON CONFLICT (tenant_id, name) DO NOTHING
        RETURNING {_COLUMNS}
        """,
        tenant_id, name, experiment_id, salt, orjson.dumps(spec).decode(),
    )
    return row


async def fetch_one(connection: asyncpg.Connection, tenant_id: str, name: str,
                    *, for_update: bool = False) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM experiments.experiments WHERE tenant_id = $1 AND name = $2"
        + (" FOR UPDATE" if for_update else ""),
        tenant_id, name,
    )
    return row


async def fetch_all(connection: asyncpg.Connection, tenant_id: str | None,
                    statuses: list[str] | None) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await connection.fetch(
        f"""
        SELECT {_COLUMNS} FROM experiments.experiments
        WHERE ($1::text IS NULL OR tenant_id = $1)
          AND ($2::text[] IS NULL OR status = ANY($2))
        ORDER BY tenant_id, created_at, name
        """,
        tenant_id, statuses,
    )
    return rows


async def update_status(connection: asyncpg.Connection, *, tenant_id: str, name: str,
                        action: str, from_status: str, to_status: str, actor: str,
                        at: datetime, note: str | None, winner: str | None) -> asyncpg.Record:
    row: asyncpg.Record = await connection.fetchrow(
        f"""
        UPDATE experiments.experiments SET
            status = $3,
            started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, $4) ELSE started_at END,
            stopped_at = CASE WHEN $3 = 'stopped' THEN $4
                              WHEN $3 = 'running' THEN NULL ELSE stopped_at END,
            concluded_at = CASE WHEN $3 = 'concluded' THEN $4 ELSE concluded_at END,
            conclusion = CASE WHEN $3 = 'concluded' THEN $5 ELSE conclusion END,
            winner = CASE WHEN $3 = 'concluded' THEN $6 ELSE winner END
        WHERE tenant_id = $1 AND name = $2
        RETURNING {_COLUMNS}
        """,
        tenant_id, name, to_status, at, note, winner,
    )
    await connection.execute(
        """
        INSERT INTO experiments.transitions
            (tenant_id, name, at, action, from_status, to_status, actor, note)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        """,
        tenant_id, name, at, action, from_status, to_status, actor, note,
    )
    return row


async def fetch_transitions(connection: asyncpg.Connection, tenant_id: str,
                            name: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await connection.fetch(
        """
        SELECT at, action, from_status, to_status, actor, note FROM experiments.transitions
        WHERE tenant_id = $1 AND name = $2 ORDER BY at
        """,
        tenant_id, name,
    )
    return rows
