"""The parts of an increment exported to object storage, and its manifest.

An increment is written as parts of at most `part_rows` rows, each a JSONL and a Parquet
file (`<from>--<until>.part-00001.jsonl`, `.part-00001.parquet`, ...) uploaded before the next
part is read. The manifest (`<from>--<until>.manifest.json`, written after every part) keeps
what it always held for the whole increment (`rows`, `ids` in file order, `files` with their
sizes and sha256, `retracted`) and lists the `parts` in order, each with its `rows`, its two
`files` and, for `feedback` and `responses`, a `users` filter of the users' digests it holds
(see `user_filter`). Part `n`'s ids are `ids[sum of the earlier parts' rows:][:rows]`.

`manifest_version` 2 is this layout. Version 1 manifests (written before parts) have no
`parts`: their `files` are one part, without a users' filter; an erasure that reads one in full
writes it again as version 2, with its part's filter. Readers accept versions 1 and 2.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.trainer.exports.object_files import (
    file_entry,
    jsonl_bytes,
    parquet_bytes,
    row_id,
    user_digest,
)
from services.trainer.exports.user_filter import user_filter

MANIFEST_VERSION = 2
READABLE_VERSIONS = frozenset({1, 2})


class UnreadableManifest(ValueError):
    """A manifest of a version this code does not read (written by a newer one)."""


def read_manifest(manifest: Any, key: str) -> dict[str, Any]:
    """The manifest, when its version is one this code reads; else UnreadableManifest."""
    version = manifest.get("manifest_version") if isinstance(manifest, dict) else None
    if version not in READABLE_VERSIONS:
        raise UnreadableManifest(
            f"{key}: manifest_version {version!r} is not one this version reads "
            f"({sorted(READABLE_VERSIONS)})")
    return manifest


def part_entry(stream: str, rows: list[dict[str, Any]], files: list[dict[str, Any]],
               number: int) -> dict[str, Any]:
    """A part as its manifest lists it (without its ids: they are the manifest's)."""
    entry: dict[str, Any] = {"part": number, "rows": len(rows), "files": files}
    if stream != "examples":
        entry["users"] = user_filter(
            digest for digest in (user_digest(row.get("user_id")) for row in rows) if digest)
    return entry


async def write_part(client: Any, base: str, number: int, stream: str,
                     rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Uploads one part's JSONL and Parquet files; returns its manifest entry."""
    import obstore

    files = []
    for suffix, body in (("jsonl", jsonl_bytes(rows)), ("parquet", parquet_bytes(stream, rows))):
        key = f"{base}.part-{number:05d}.{suffix}"
        await obstore.put_async(client, key, body)
        files.append(file_entry(key, body))
    return part_entry(stream, rows, files, number)


def increment_manifest(
    *, tenant_id: str, stream: str, since: datetime, until: datetime,
    parts: list[dict[str, Any]], ids: list[Any], retracted: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "manifest_version": MANIFEST_VERSION, "tenant_id": tenant_id, "stream": stream,
        "stored_after": since.isoformat(), "stored_until": until.isoformat(),
        "rows": sum(part["rows"] for part in parts),
        "files": [entry for part in parts for entry in part["files"]],
        "retracted": retracted, "ids": ids, "parts": parts,
        "exported_at": datetime.now(UTC).isoformat(),
    }


def manifest_parts(manifest: dict[str, Any]) -> list[tuple[dict[str, Any], list[Any]]]:
    """Each part of the increment with its ids, in order; a manifest written before parts is
    one part (without a `users` filter) when it names files, none when it does not."""
    parts = manifest.get("parts")
    if parts is None:
        files = manifest.get("files", [])
        parts = [{"part": 1, "rows": manifest["rows"], "files": files}] if files else []
    found, offset = [], 0
    for part in parts:
        found.append((part, manifest.get("ids", [])[offset:offset + part["rows"]]))
        offset += part["rows"]
    return found


def with_parts(manifest: dict[str, Any],
               parts: list[tuple[dict[str, Any], list[Any]]]) -> dict[str, Any]:
    """The manifest with its parts (and so its rows, ids and files) replaced, in the current
    layout."""
    return manifest | {
        "manifest_version": MANIFEST_VERSION,
        "rows": sum(part["rows"] for part, _ in parts),
        "files": [entry for part, _ in parts for entry in part["files"]],
        "ids": [identifier for _, ids in parts for identifier in ids],
        "parts": [part for part, _ in parts],
    }


def part_ids(rows: list[dict[str, Any]]) -> list[Any]:
    return [row_id(row) for row in rows]
