"""The data files of an export to object storage, and the same files without erased users'
rows. Pure.

A part's rows are written twice: JSONL (one JSON object per line) and Parquet, whose columns
are the JSONL keys with nested values as JSON text and times as ISO 8601, so every file of a
stream has one schema. An erased row is an `examples` row whose `example_id` was retracted
for erasure, or a `feedback` or `responses` row whose `user_id` is an erased user's.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A row for Parquet: nested values as JSON text, times as ISO 8601."""
    return {
        key: orjson.dumps(value).decode() if isinstance(value, (dict, list)) else
        value.isoformat() if isinstance(value, datetime) else value
        for key, value in row.items()
    }


def parquet_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([_flat(row) for row in rows]), buffer)
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
