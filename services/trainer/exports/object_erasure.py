"""Erasure in objects already exported: every increment of a tenant with an erasure not yet
applied to its objects is written again under the same names without the erased users' rows
(see `object_exports` for the contract).

Only the parts that may hold an erased row are downloaded: an `examples` part when its ids
include an example retracted for erasure (a manifest written before parts has its ids too), a
`feedback` or `responses` part when its `users` filter may hold an erased user's digest. A
`feedback` or `responses` manifest written before parts has no filter: its files are
downloaded, and the manifest is written again with its part and the part's filter (version 2),
whether or not it held an erased row, so it is read in full once.

Data files under a tenant's streams that no manifest names (the parts of a run that stopped
before its manifest, or of a second attempt at a stretch, whose earlier manifest goes first)
are described by nothing a rewrite could trust: they are deleted before the erasure is marked
applied. The watermark never moved past their stretch, so the next run writes it again from
the trainer, where the erased rows are gone.

In memory: one manifest at a time (its ids, filters and retracted list: what grows with its
increment), one part's two files, and the keys of the stream's files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.trainer.exports.object_files import (
    file_entry,
    without_erased_jsonl,
    without_erased_parquet,
)
from services.trainer.exports.object_parts import (
    manifest_parts,
    part_entry,
    part_ids,
    read_manifest,
    with_parts,
)
from services.trainer.exports.object_rows import STREAMS
from services.trainer.exports.object_store import (
    ObjectStore,
    get_bytes,
    get_json,
    list_keys,
    put_json,
)
from services.trainer.exports.user_filter import may_hold

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rewrite:
    """An increment written again without erased users' rows."""

    tenant_id: str
    stream: str
    manifest_key: str
    rows_removed: int


class ErasureRewriteFailed(Exception):
    """Some tenants' objects could not be rewritten after an erasure (the others' were)."""


@dataclass(frozen=True)
class _Erased:
    """What one tenant's rewrite removes: users by digest, examples by id."""

    stream: str
    users: frozenset[str]
    examples: frozenset[str]

    def may_be_in(self, part: dict[str, Any], ids: list[Any]) -> bool:
        if self.stream == "examples":
            return not self.examples.isdisjoint(str(i) for i in ids)
        return "users" not in part or may_hold(part["users"], self.users)

    def to_filter(self, manifest: dict[str, Any]) -> bool:
        """A `feedback` or `responses` manifest without a users' filter, read in full once
        and written again with one."""
        return self.stream != "examples" and "parts" not in manifest


async def _erase_part(
    client: Any, part: dict[str, Any], erased: _Erased
) -> tuple[dict[str, Any], list[Any]] | None:
    """The part written again without erased rows, with its ids; None when it has no JSONL
    (nothing to count its rows by)."""
    import obstore

    files, kept = [], None
    for entry in part["files"]:
        body = await get_bytes(client, entry["key"])
        if entry["key"].endswith(".jsonl"):
            new_body, kept = without_erased_jsonl(body, erased.stream, erased.users,
                                                  erased.examples)
        else:
            new_body, _ = without_erased_parquet(body, erased.stream, erased.users,
                                                 erased.examples)
        if new_body != body:
            await obstore.put_async(client, entry["key"], new_body)
        files.append(entry | file_entry(entry["key"], new_body))
    if kept is None:
        return None
    # Counted from the files as they are now, so a run that stopped between a file and the
    # manifest leaves nothing for the next to miscount.
    return part | part_entry(erased.stream, kept, files, part.get("part", 1)), part_ids(kept)


async def _erase_increment(
    client: Any, manifest_key: str, manifest: dict[str, Any], erased: _Erased
) -> int | None:
    """Rewrites one increment's parts that hold erased rows; returns how many rows it
    removed, None when it had nothing to rewrite."""
    parts, changed, filtered = [], False, erased.to_filter(manifest)
    for part, ids in manifest_parts(manifest):
        wanted = filtered or erased.may_be_in(part, ids)
        rewritten = await _erase_part(client, part, erased) if wanted else None
        if rewritten is not None and (filtered or rewritten[0]["files"] != part["files"]):
            changed = changed or rewritten[0]["files"] != part["files"]
            parts.append(rewritten)
        else:
            parts.append((part, ids))
    if not changed and not filtered:
        return None  # nothing of an erased user here, or rewritten by an earlier run already
    new = with_parts(manifest, parts)
    removed = manifest["rows"] - new["rows"]
    if changed:
        note = manifest.get("erasure") or {"rows_removed": 0}
        new["erasure"] = {"rewritten_at": datetime.now(UTC).isoformat(),
                          "rows_removed": note["rows_removed"] + removed}
    await put_json(client, manifest_key, new)
    return removed if changed else None


async def erase_exported(
    pool: asyncpg.Pool, store: ObjectStore, *, client: Any | None = None
) -> list[Rewrite]:
    """Rewrites the objects of every tenant with an erasure not yet applied to them (see
    `object_exports`); returns the increments rewritten. Call it under the export lock."""
    async with pool.acquire() as connection:
        pending = await connection.fetch(
            "SELECT tenant_id, user_digest, erased_at FROM trainer.erased_users "
            "WHERE objects_erased_for IS DISTINCT FROM erased_at ORDER BY tenant_id")
    if not pending:
        return []
    client = client or store.client()
    rewrites: list[Rewrite] = []
    failed: dict[str, str] = {}
    for tenant_id in sorted({row["tenant_id"] for row in pending}):
        # One tenant's unreadable object does not hold back the others' erasures; its own
        # stays pending (retried by the next run) and the run reports it.
        try:
            rewrites += await _erase_tenant(pool, client, store, tenant_id, pending)
        except Exception as error:
            logger.exception("erasure rewrite of tenant %s failed", tenant_id)
            failed[tenant_id] = f"{type(error).__name__}: {error}"
    if failed:
        raise ErasureRewriteFailed(
            "the exported objects of " + "; ".join(f"{t} ({why})" for t, why in sorted(failed.items()))
            + " could not be rewritten; their erasures stay pending, the other tenants' are done"
        )
    return rewrites


async def _delete_unnamed(client: Any, keys: Sequence[str], named: set[str]) -> None:
    """Deletes the data files no manifest names (see the module's docstring)."""
    import obstore

    for key in sorted(keys):
        if key.endswith((".jsonl", ".parquet")) and key not in named:
            logger.info("deleting %s: no manifest names it, so an erasure cannot trust it", key)
            await obstore.delete_async(client, key)


async def _erase_tenant(
    pool: asyncpg.Pool, client: Any, store: ObjectStore, tenant_id: str,
    pending: Sequence[asyncpg.Record],
) -> list[Rewrite]:
    rewrites = []
    users = frozenset(row["user_digest"] for row in pending if row["tenant_id"] == tenant_id)
    async with pool.acquire() as connection:
        examples = frozenset(str(row["example_id"]) for row in await connection.fetch(
            "SELECT example_id FROM trainer.example_retractions "
            "WHERE tenant_id = $1 AND reason = 'erasure'", tenant_id))
    for stream in STREAMS:
        erased = _Erased(stream, users, examples)
        keys = await list_keys(client, store.stream_key(tenant_id, stream) + "/")
        named: set[str] = set()  # one manifest in memory at a time, and the files named
        for manifest_key in sorted(key for key in keys if key.endswith(".manifest.json")):
            manifest = read_manifest(await get_json(client, manifest_key), manifest_key)
            named.update(entry["key"] for entry in manifest.get("files", []))
            removed = await _erase_increment(client, manifest_key, manifest, erased)
            if removed is not None:
                rewrites.append(Rewrite(tenant_id, stream, manifest_key, removed))
        await _delete_unnamed(client, keys, named)
    async with pool.acquire() as connection:
        # Only the erasures read: one recorded again meanwhile is applied by the next run.
        await connection.executemany(
            "UPDATE trainer.erased_users SET objects_erased_for = $3 "
            "WHERE tenant_id = $1 AND user_digest = $2 AND erased_at = $3",
            [(row["tenant_id"], row["user_digest"], row["erased_at"])
             for row in pending if row["tenant_id"] == tenant_id],
        )
    return rewrites
