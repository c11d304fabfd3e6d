"""The data files of an export to object storage, and the same files without erased users'
rows. Pure.

A part's rows are written twice: JSONL (one JSON object per line) and Parquet in the stream's
one Arrow schema (`stream_schema`: every column named with its type, all nullable), whose
columns are the JSONL keys by kind (`_COLUMNS`): a "text" column holds the value's string
(times as ISO 8601, ids as text), a "json" column the JSON text of every value (`json.loads`
reads each one back: a string is stored quoted, so `"[1]"` and `[1]` stay apart), "int",
"float" and "bool" their values; a missing value is null. So every part of a stream reads
together with every other (`pq.read_table([...])`, `pyarrow.dataset`) whichever columns a
part left empty. A row with a key its stream's schema does not name, or a value not of its
column's kind, is refused (`ValueError`): a new field is added here. The event streams read
only the table columns named here (`table_columns`), so a column added to a table is not
exported until it is named.
An erased row is an `examples` row whose `example_id` was retracted for erasure, or a
`feedback` or `responses` row whose `user_id` is an erased user's.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

# Each stream's columns in file order, by kind: "text" (strings; times as ISO 8601, ids as
# text), "json" (the JSON text of every value, strings included), "int", "float", "bool".
# The event streams' columns are their tables' (read by these names: `object_rows`).
_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    # The published document (feedbackloop.contract.TrainingExample).
    "examples": (
        ("type", "text"), ("schema_version", "int"), ("revision", "int"),
        ("example_id", "text"), ("tenant_id", "text"), ("kind", "text"), ("split", "text"),
        ("conversation_id", "text"), ("response_id", "text"), ("prompt", "json"),
        ("context", "json"), ("action_data", "json"), ("completion", "text"),
        ("label", "bool"), ("chosen", "text"), ("rejected", "text"), ("output", "text"),
        ("reference", "text"), ("quality", "float"), ("provenance", "json")),
    # trainer.feedback's columns, then the event's type.
    "feedback": (
        ("tenant_id", "text"), ("event_id", "text"), ("response_id", "text"),
        ("user_id", "text"), ("kind", "text"), ("thumb", "text"), ("rating", "int"),
        ("comment", "json"), ("correction", "text"), ("replay", "json"),
        ("inline_prompt", "json"), ("inline_output", "text"), ("inline_model", "text"),
        ("inline_action_type", "text"), ("occurred_at", "text"), ("session_id", "text"),
        ("person", "text"), ("retraction", "bool"), ("current", "bool"),
        ("stored_at", "text"), ("type", "text")),
    # trainer.responses' columns.
    "responses": (
        ("tenant_id", "text"), ("response_id", "text"), ("event_id", "text"),
        ("user_id", "text"), ("prompt", "json"), ("context", "json"), ("output", "text"),
        ("model", "text"), ("action_type", "text"), ("action_data", "json"),
        ("feature", "text"), ("language", "text"), ("prompt_version", "text"),
        ("experiment", "text"), ("variant", "text"), ("occurred_at", "text"),
        ("session_id", "text"), ("stored_at", "text")),
}


def stream_schema(stream: str) -> Any:
    """The stream's Arrow schema, the same for every part it writes."""
    import pyarrow as pa

    types = {"text": pa.string(), "json": pa.string(), "int": pa.int64(),
             "float": pa.float64(), "bool": pa.bool_()}
    return pa.schema([pa.field(name, types[kind], nullable=True)
                      for name, kind in _COLUMNS[stream]])


def table_columns(stream: str) -> tuple[str, ...]:
    """The event stream's table columns its schema names (all but the event's `type`)."""
    return tuple(name for name, _ in _COLUMNS[stream] if name != "type")


def _cell(kind: str, name: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "json":
        return orjson.dumps(value).decode()
    if kind == "text":
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, str | UUID):
            return str(value)
        raise ValueError(f"column {name} holds text, not {type(value).__name__}")
    return value


def _flat(stream: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row for Parquet in its stream's schema."""
    columns = dict(_COLUMNS[stream])
    unknown = sorted(set(row) - set(columns))
    if unknown:
        raise ValueError(f"the {stream} stream's Parquet schema has no column {unknown}")
    return {name: _cell(kind, name, row.get(name)) for name, kind in columns.items()}


def parquet_bytes(stream: str, rows: Sequence[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([_flat(stream, row) for row in rows],
                                        schema=stream_schema(stream)), buffer)
    return buffer.getvalue()


def jsonl_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(row, default=str) + b"\n" for row in rows)


def file_entry(key: str, body: bytes) -> dict[str, Any]:
    """A file as a manifest names it."""
    return {"key": key, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def row_id(row: dict[str, Any]) -> Any:
    """The id a manifest lists for a row."""
    return row.get("example_id") or row.get("event_id")


def user_digest(user_id: Any) -> str | None:
    # As public.erased_user_digest: the SHA-256 of the tenant-keyed HMAC, in hex.
    return hashlib.sha256(str(user_id).encode()).hexdigest() if user_id else None


def _erased_row(row: dict[str, Any], stream: str, users: frozenset[str],
                examples: frozenset[str]) -> bool:
    if stream == "examples":
        return str(row.get("example_id")) in examples
    return user_digest(row.get("user_id")) in users


def without_erased_jsonl(body: bytes, stream: str, users: frozenset[str],
                         examples: frozenset[str]) -> tuple[bytes, list[dict[str, Any]]]:
    """The JSONL without erased rows (lines kept byte for byte), and the rows kept."""
    lines: list[bytes] = []
    kept: list[dict[str, Any]] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        row = orjson.loads(line)
        if not _erased_row(row, stream, users, examples):
            lines.append(line + b"\n")
            kept.append(row)
    return b"".join(lines), kept


def without_erased_parquet(body: bytes, stream: str, users: frozenset[str],
                           examples: frozenset[str]) -> tuple[bytes, int]:
    """The Parquet file without erased rows, in its own schema, and how many were removed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(body))
    column = "example_id" if stream == "examples" else "user_id"
    if column not in table.column_names:
        return body, 0
    keep = [not _erased_row({column: value}, stream, users, examples)
            for value in table.column(column).to_pylist()]
    if all(keep):
        return body, 0
    buffer = io.BytesIO()
    pq.write_table(table.filter(pa.array(keep, type=pa.bool_())), buffer)
    return buffer.getvalue(), keep.count(False)
