"""Export snapshots: what one export wrote, kept so that exporting the snapshot again writes
the same bytes, whatever feedback arrived meanwhile.

A snapshot holds each exported example's published document, its line and the (hashed) users
it came from. Erasure deletes an erased user's rows from every snapshot at once (the trainer's
erasure path); a user who has opted out of training use since is left out when the snapshot is
exported, and the manifest names each line left out and why.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: uuid.UUID
    tenant_id: str
    export_format: str
    filters: dict[str, Any]
    lines: int
    created_at: datetime


async def create_snapshot(
    connection: asyncpg.Connection,
    *,
    tenant_id: str,
    export_format: str,
    filters: dict[str, Any],
    documents: Sequence[dict[str, Any]],
) -> Snapshot:
    """Keeps `documents` (in the order written) as a new snapshot, in one transaction."""
    snapshot_id = uuid.uuid4()
    async with connection.transaction():
        created_at = await connection.fetchval(
            """
            INSERT INTO trainer.export_snapshots
                (snapshot_id, tenant_id, export_format, filters, lines)
            VALUES ($1, $2, $3, $4, $5) RETURNING created_at
            """,
            snapshot_id, tenant_id, export_format, filters, len(documents))
        await connection.execute(
            """
            INSERT INTO trainer.snapshot_examples
                (snapshot_id, line, tenant_id, example_id, user_ids, document)
            SELECT $1, d.line, $2, d.example_id, e.user_ids, d.document
            FROM unnest($3::int[], $4::uuid[], $5::json[]) AS d(line, example_id, document)
            -- An example erased or opted out while the export ran is not kept: its line
            -- reads as left out when the snapshot is exported.
            JOIN trainer.examples e ON e.example_id = d.example_id
            """,
            snapshot_id, tenant_id, list(range(1, len(documents) + 1)),
            [uuid.UUID(str(d["example_id"])) for d in documents], list(documents))
    return Snapshot(snapshot_id, tenant_id, export_format, filters, len(documents), created_at)


async def load_snapshot(
    connection: asyncpg.Connection, snapshot_id: uuid.UUID
) -> tuple[Snapshot, list[dict[str, Any]], list[dict[str, Any]]] | None:
    """(the snapshot, its documents to export in order, the lines left out with why); None
    when there is no such snapshot."""
    header = await connection.fetchrow(
        "SELECT * FROM trainer.export_snapshots WHERE snapshot_id = $1", snapshot_id)
    if header is None:
        return None
    rows = await connection.fetch(
        """
        SELECT s.line, s.example_id, s.document,
               EXISTS (SELECT 1 FROM trainer.consent c
                       WHERE c.tenant_id = s.tenant_id AND NOT c.training_allowed
                         AND c.user_id = ANY(s.user_ids)) AS opted_out
        FROM trainer.snapshot_examples s WHERE s.snapshot_id = $1 ORDER BY s.line
        """, snapshot_id)
    snapshot = Snapshot(header["snapshot_id"], header["tenant_id"], header["export_format"],
                        header["filters"], header["lines"], header["created_at"])
    present = {row["line"] for row in rows}
    removed = [{"line": row["line"], "example_id": str(row["example_id"]), "reason": "opt_out"}
               for row in rows if row["opted_out"]]
    removed += [{"line": line, "example_id": None, "reason": "erasure"}
                for line in range(1, snapshot.lines + 1) if line not in present]
    documents = [row["document"] for row in rows if not row["opted_out"]]
    return snapshot, documents, sorted(removed, key=lambda item: item["line"])
