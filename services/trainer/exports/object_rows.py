"""The rows of an export to object storage: one tenant's stream stored in `(since, until]`,
oldest first, read a part at a time.

Each part is read in its own short read-only transaction, by keyset (the sort key of the last
row read, which the index of migration 0025 holds in that order, so a page starts where the
last ended however many rows share a time), so a first export of a large tenant holds one
part's rows in memory (its ids are kept for the manifest) and keeps no transaction open while
parts are uploaded (an open transaction would hold back every cut
taken from the oldest one, the learner's and the next export's). Parts need no shared
snapshot: a row stored in the stretch never moves into it again (any later write stores a
time after the cut), so one revised or deleted meanwhile is either in an earlier part or in
none, never in two; a revision reaches the next increment, a deletion is an erasure's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg

from services.trainer.examples.build import published_document
from services.trainer.examples.redaction import redact
from services.trainer.exports.object_files import table_columns
from services.trainer.repository import _NOBODY_OPTED_OUT

STREAMS = ("examples", "feedback", "responses")

# Text columns of the event streams, redacted like every text that leaves the trainer.
_TEXT_COLUMNS = frozenset({"prompt", "context", "output", "action_data", "comment", "correction",
                           "replay", "inline_prompt", "inline_output"})

# $1 tenant, $2 the stored time of the last row read (the increment's start before the first
# part), $3 the increment's end, $4 the id of the last row read (NULL before the first part:
# then the row comparison is true exactly when the time is after $2), $5 the part's size.
# The event streams read exactly the columns their Parquet schema names, so a column added to a
# table is not exported (and stops nothing) until the schema names it.
def _selected(stream: str, alias: str) -> str:
    return ", ".join(f"{alias}.{column}" for column in table_columns(stream))


_PAGES: dict[str, tuple[str, str, str]] = {
    "examples": ("updated_at", "example_id", """
        SELECT record, revision, created_at, updated_at, example_id FROM trainer.examples
        WHERE tenant_id = $1 AND updated_at >= $2 AND updated_at <= $3
          AND (updated_at, example_id) > ($2, $4) AND duplicate_of IS NULL
        ORDER BY updated_at, example_id LIMIT $5"""),
    # Neither the event's user nor the user whose conversation it is has opted out, now.
    "feedback": ("stored_at", "event_id", f"""
        SELECT {_selected("feedback", "f")} FROM trainer.feedback f
        LEFT JOIN trainer.responses r USING (tenant_id, response_id)
        WHERE f.tenant_id = $1 AND f.stored_at >= $2 AND f.stored_at <= $3
          AND (f.stored_at, f.event_id) > ($2, $4) AND {_NOBODY_OPTED_OUT}
        ORDER BY f.stored_at, f.event_id LIMIT $5"""),
    "responses": ("stored_at", "response_id", f"""
        SELECT {_selected("responses", "t")} FROM trainer.responses t
        WHERE t.tenant_id = $1 AND t.stored_at >= $2 AND t.stored_at <= $3
          AND (t.stored_at, t.response_id) > ($2, $4)
          AND NOT EXISTS (SELECT 1 FROM trainer.consent c WHERE c.tenant_id = t.tenant_id
                          AND NOT c.training_allowed AND c.user_id = t.user_id)
        ORDER BY t.stored_at, t.response_id LIMIT $5"""),
}


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value).text
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    return value


def _exported_row(stream: str, row: asyncpg.Record) -> dict[str, Any]:
    if stream == "examples":
        return published_document(row["record"], revision=row["revision"],
                                  created_at=row["created_at"])
    item = {key: str(value) if key == "event_id" else
            _redacted(value) if key in _TEXT_COLUMNS else value
            for key, value in row.items()}
    if stream == "feedback":
        item["type"] = "feedback.retracted" if item.get("retraction") else "feedback.submitted"
    return item


async def stream_parts(
    pool: asyncpg.Pool, stream: str, *, tenant_id: str, since: datetime, until: datetime,
    part_rows: int,
) -> AsyncIterator[list[dict[str, Any]]]:
    """The stream's rows stored in `(since, until]`, oldest first, at most `part_rows` at a
    time; the next part is read only when the caller asks for it."""
    stored, key, query = _PAGES[stream]
    after: tuple[datetime, Any] = (since, None)
    while True:
        async with pool.acquire() as connection, connection.transaction(readonly=True):
            found = await connection.fetch(query, tenant_id, after[0], until, after[1],
                                           part_rows)
        if not found:
            return
        full, after = len(found) == part_rows, (found[-1][stored], found[-1][key])
        part = [_exported_row(stream, row) for row in found]
        del found  # one part in memory: the records go before the part is handed on
        yield part
        del part
        if not full:
            return


async def retractions(
    pool: asyncpg.Pool, stream: str, *, tenant_id: str, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """The examples retracted in `(since, until]` (erasure, opt-out, a retracted signal), for
    the `examples` stream's manifest; none for the others."""
    if stream != "examples":
        return []
    async with pool.acquire() as connection:
        retracted = await connection.fetch(
            """
            SELECT example_id, conversation_id, reason, created_at AS retracted_at
            FROM trainer.example_retractions
            WHERE tenant_id = $1 AND created_at > $2 AND created_at <= $3 ORDER BY seq
            """, tenant_id, since, until)
    return [{k: str(v) if k == "example_id" else v for k, v in dict(row).items()}
            for row in retracted]
