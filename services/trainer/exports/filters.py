"""The SQL of export selections: which stored examples an export wants, counted or read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class ExampleFilter:
    """Which stored examples an export wants. `kinds` empty: every kind."""

    tenant_id: str
    kinds: tuple[str, ...] = ()
    response_ids: tuple[str, ...] | None = None
    split: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    action_type: str | None = None
    model: str | None = None
    min_quality: float | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses = ["tenant_id = $1", "duplicate_of IS NULL"]
        arguments: list[Any] = [self.tenant_id]
        for column, operator, value in (
            ("kind", "= ANY", list(self.kinds) or None),
            ("response_id", "= ANY", None if self.response_ids is None else list(self.response_ids)),
            ("split", "=", self.split),
            ("occurred_at", ">=", self.since),
            ("occurred_at", "<", self.until),
            ("action_type", "=", self.action_type),
            ("model", "=", self.model),
            ("quality", ">=", self.min_quality),
        ):
            if value is not None:
                arguments.append(value)
                placeholder = f"${len(arguments)}"
                clauses.append(
                    f"{column} = ANY({placeholder}::text[])"
                    if operator == "= ANY"
                    else f"{column} {operator} {placeholder}"
                )
        return " AND ".join(clauses), arguments


async def count_examples(connection: asyncpg.Connection, *, selection: ExampleFilter) -> int:
    where, arguments = selection.where()
    return int(
        await connection.fetchval(f"SELECT count(*) FROM trainer.examples WHERE {where}", *arguments)
    )


async def stream_example_rows(
    connection: asyncpg.Connection, *, selection: ExampleFilter, chunk: int = 500
) -> AsyncIterator[asyncpg.Record]:
    """The selected examples' `record`, `revision` and `created_at`, oldest first, read through a cursor so an
    export of any size holds one chunk in memory. Must run inside a transaction."""
    where, arguments = selection.where()
    cursor = connection.cursor(
        f"""
        SELECT record, revision, created_at FROM trainer.examples WHERE {where}
        ORDER BY occurred_at, example_id
        """,
        *arguments,
        prefetch=chunk,
    )
    async for row in cursor:
        yield row
