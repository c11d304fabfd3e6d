"""The SQL of the training-examples outbox: example revisions and retractions not yet on the
topic, in the order they were queued (`jobs.relay` publishes them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg


@dataclass(frozen=True)
class OutboxItem:
    """An example revision or a retraction waiting to be published, in publishing order."""

    seq: int
    kind: str  # "example" | "retraction"
    example_id: UUID
    tenant_id: str
    conversation_id: str
    revision: int
    record: dict[str, Any] | None
    reason: str | None
    created_at: datetime


async def pending_outbox(connection: asyncpg.Connection, *, limit: int) -> list[OutboxItem]:
    """The oldest unpublished example revisions and retractions, in `seq` order."""
    rows = await connection.fetch(
        """
        (SELECT seq, 'example' AS kind, example_id, tenant_id, conversation_id, revision,
                record, NULL AS reason, created_at
         FROM trainer.examples
         WHERE published_revision < revision AND duplicate_of IS NULL
         ORDER BY seq LIMIT $1)
        UNION ALL
        (SELECT seq, 'retraction', example_id, tenant_id, conversation_id, 0, NULL, reason,
                created_at
         FROM trainer.example_retractions WHERE published_at IS NULL
         ORDER BY seq LIMIT $1)
        ORDER BY seq LIMIT $1
        """,
        limit,
    )
    return [OutboxItem(**dict(row)) for row in rows]


async def mark_published(connection: asyncpg.Connection, *, items: Sequence[OutboxItem]) -> None:
    """Marks what the broker acknowledged. A revision made meanwhile stays queued."""
    examples = [item for item in items if item.kind == "example"]
    await connection.execute(
        """
        UPDATE trainer.examples e
        SET published_revision = v.revision, published_at = now()
        FROM unnest($1::uuid[], $2::int[]) AS v(example_id, revision)
        WHERE e.example_id = v.example_id AND e.published_revision < v.revision
        """,
        [item.example_id for item in examples],
        [item.revision for item in examples],
    )
    await connection.execute(
        "UPDATE trainer.example_retractions SET published_at = now() WHERE seq = ANY($1::bigint[])",
        [item.seq for item in items if item.kind == "retraction"],
    )
