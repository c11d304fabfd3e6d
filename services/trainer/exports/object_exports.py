"""Exports to S3-compatible object storage: each tenant's training examples and the feedback
events and logged responses they came from, as JSONL and Parquet with a manifest, incremental
by the time rows were stored.

An increment of one tenant's stream covers rows stored in `(exported_to, until]`, where
`until` is at least `settle` before the database's clock and a microsecond before the oldest
client transaction still open began (its rows are stored at its start, so none of them can
commit rows into a stretch already exported). Its objects are

    <prefix>/<tenant>/<stream>/<from>--<until>.part-00001.jsonl
    <prefix>/<tenant>/<stream>/<from>--<until>.part-00001.parquet
    ...
    <prefix>/<tenant>/<stream>/<from>--<until>.manifest.json

(times as `20261201T101500.000000Z`; `<tenant>` the id with "%" and "/" percent-encoded,
`object_store.tenant_folder`): parts of at most `part_rows` rows
(`FEEDBACKLOOP_OBJECT_EXPORT_PART_ROWS`), each read, written and uploaded before the next is
read (`object_rows`, `object_parts`); the manifest last, listing every part. Memory holds one
part's rows; what grows with the increment is held whole: every row's id, the retracted list,
each part's users' filter and the serialized manifest (about 9 MiB of ids and 4.5 MiB of
manifest per 100,000 rows; measured peak for 300,000 rows: 2232 MiB written whole, 573 MiB in
parts of 50,000). The objects are written first and `exported_to` is advanced after: a crash
in between writes the same increment again under the same names (its end read back from the
manifest it left, which is deleted before any part it names is written again, or from the
names of the parts an attempt that stopped after that left), with the same rows; data files
a run left without their manifest (parts of a run that stopped halfway) are
deleted by the next once it has written that stretch again, as are parts a manifest no longer
names, and by an erasure before it (`object_erasure`). Streams:
- `examples`: the published documents of examples created or revised in the stretch (a
  revision is exported again; keep the highest `revision` of each `example_id`), and in the
  manifest the examples retracted in it (erasure, opt-out, a retracted signal);
- `feedback`: every stored feedback event (retractions included), one row each;
- `responses`: every logged response.
Texts are redacted like every text that leaves the trainer; rows where the event's user, or
the user whose conversation it is, has opted out of training use are left out.
Parquet columns are the JSONL keys, in one Arrow schema per stream (`object_files`), so every
part of a stream reads with every other. Credentials come from settings and are never logged
or written.

Erasure: an erased user's rows are gone from the trainer at once, so no later increment holds
them; the objects written before are rewritten by `erase_exported`, which every export run
calls after its increments, also when one failed (under the same lock; `object_erasure`):
each part of the tenant whose JSONL or Parquet holds a row of an erased user (`feedback` and
`responses` rows by `user_id`, the rows the trainer deletes; `examples` rows retracted for erasure; only parts
whose manifest entry may hold them are downloaded) is written again under the same names
without those rows, and its manifest with the new counts, ids and checksums and an `erasure`
note (`rewritten_at`, `rows_removed`; never who). The files go first and the manifest
last, and an erasure is marked applied (`trainer.erased_users.objects_erased_for`) only after
every increment of its tenant is done, so a run that fails halfway is completed by the next.
A user who came back between the erasure and the rewrite loses those new rows from the objects
too (never the other way round). Copies of objects made outside the store (a reader's download,
a bucket replica, object versions if the bucket keeps them) are the reader's to erase: the
rewrite reaches only the current objects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from feedbackloop.settings import Settings
from services.trainer.exports.object_erasure import erase_exported
from services.trainer.exports.object_parts import (
    increment_manifest,
    part_ids,
    read_manifest,
    write_part,
)
from services.trainer.exports.object_rows import STREAMS, retractions, stream_parts
from services.trainer.exports.object_store import ObjectStore, get_json, list_keys, put_json

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# An advisory lock so one trainer replica exports at a time.
_EXPORT_LOCK_KEY = 7_311_042_407
# Rows per part when the caller names no size: the setting's default, defined there once.
DEFAULT_PART_ROWS: int = Settings.model_fields["object_export_part_rows"].default


@dataclass(frozen=True)
class Increment:
    tenant_id: str
    stream: str
    since: datetime
    until: datetime
    rows: int
    keys: tuple[str, ...]


def _check_part_rows(part_rows: int) -> None:
    if part_rows < 1:
        raise ValueError(f"part_rows must be at least 1, not {part_rows}")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _leftover_until(keys: Sequence[str], start: str, since: datetime) -> datetime | None:
    """The earliest end named by the stretch's parts (`<start><until>.part-...`), left by a
    run that stopped after its manifest was deleted; None when there are none (a name that is
    not an end after `since` is none)."""
    ends = []
    for key in keys:
        end, found, _ = key.removeprefix(start).partition(".part-")
        try:
            moment = datetime.strptime(end, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            continue
        if found and moment > since:
            ends.append(moment)
    return min(ends, default=None)


async def _resume(
    client: Any, store: ObjectStore, *, tenant_id: str, stream: str, since: datetime,
    until: datetime,
) -> tuple[datetime, list[str]]:
    """The end of the increment starting at `since`: the one an earlier run wrote a manifest
    for when it stopped before the watermark moved, else the one named by the data files an
    earlier attempt left without their manifest (it stopped halfway after deleting it), else
    `until`; so every attempt at a stretch writes it under the same names and no rows of it
    are written under two. Also every object an earlier run wrote from `since`, to delete once
    the increment is written if its manifest does not name them (they would repeat its
    rows).

    The earlier manifests are deleted here, before any part they name is written again: a
    manifest never names a file whose rows its ids and users' filters do not describe. Until
    the new manifest is written the stretch's files are named by none, and an erasure deletes
    them (`object_erasure`; the next run then takes a new end, nothing of the old one being
    left); the next run writes the stretch again."""
    import obstore

    # Listing is by folder (the store's prefixes are paths), so the names are matched here.
    start = store.stream_key(tenant_id, stream, f"{_stamp(since)}--")
    found = [key for key in await list_keys(client, store.stream_key(tenant_id, stream) + "/")
             if key.startswith(start)]
    manifests = sorted(key for key in found if key.endswith(".manifest.json"))
    if manifests:
        written = read_manifest(await get_json(client, manifests[0]), manifests[0])
        until = min(until, datetime.fromisoformat(written["stored_until"]))
    elif (left := _leftover_until(found, start, since)) is not None:
        until = min(until, left)
    for key in manifests:
        await obstore.delete_async(client, key)
    return until, [key for key in found if key not in manifests]


async def _write_increment(
    pool: asyncpg.Pool, client: Any, base: str, *, tenant_id: str, stream: str,
    since: datetime, until: datetime, part_rows: int,
) -> tuple[int, list[str]]:
    """Writes the increment's parts, one at a time, then its manifest; returns its rows and
    the keys written (none when the stretch holds nothing)."""
    parts: list[dict[str, Any]] = []
    ids: list[Any] = []
    async for rows in stream_parts(pool, stream, tenant_id=tenant_id, since=since,
                                   until=until, part_rows=part_rows):
        parts.append(await write_part(client, base, len(parts) + 1, stream, rows))
        ids += part_ids(rows)
        del rows  # the next part is read into memory this one leaves
    retracted = await retractions(pool, stream, tenant_id=tenant_id, since=since, until=until)
    if not parts and not retracted:
        return 0, []
    manifest = increment_manifest(tenant_id=tenant_id, stream=stream, since=since, until=until,
                                  parts=parts, ids=ids, retracted=retracted)
    await put_json(client, f"{base}.manifest.json", manifest)
    return manifest["rows"], [entry["key"] for entry in manifest["files"]] + [
        f"{base}.manifest.json"]


async def export_increment(
    pool: asyncpg.Pool, store: ObjectStore, *, tenant_id: str, stream: str, until: datetime,
    client: Any | None = None, part_rows: int = DEFAULT_PART_ROWS,
) -> Increment | None:
    """Exports one tenant's stream up to `until`, in parts of at most `part_rows` rows; None
    when nothing was stored since the last increment (the watermark still moves)."""
    import obstore

    _check_part_rows(part_rows)
    client = client or store.client()
    since = await pool.fetchval(
        "SELECT exported_to FROM trainer.object_exports WHERE tenant_id = $1 AND stream = $2",
        tenant_id, stream) or _EPOCH
    if until <= since:
        return None
    until, found = await _resume(client, store, tenant_id=tenant_id, stream=stream,
                                 since=since, until=until)
    base = store.stream_key(tenant_id, stream, f"{_stamp(since)}--{_stamp(until)}")
    rows, keys = await _write_increment(pool, client, base, tenant_id=tenant_id, stream=stream,
                                        since=since, until=until, part_rows=part_rows)
    for key in sorted(set(found) - set(keys)):
        await obstore.delete_async(client, key)
    await pool.execute(
        """
        INSERT INTO trainer.object_exports (tenant_id, stream, exported_to, objects)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (tenant_id, stream) DO UPDATE SET exported_to = EXCLUDED.exported_to,
            objects = trainer.object_exports.objects + EXCLUDED.objects, updated_at = now()
        """, tenant_id, stream, until, len(keys))
    if not keys:
        return None
    return Increment(tenant_id, stream, since, until, rows, tuple(keys))


async def _export_cut(lock: asyncpg.Connection, *, now: datetime | None,
                      settle: timedelta) -> datetime:
    # stored_at is when a writing transaction began: cut before the oldest one still open, so
    # rows it commits later cannot land in a stretch already exported. A microsecond before:
    # its own rows are stored at its start exactly, and a stretch ends with its last instant
    # (`<= until`), so they fall after this stretch, in the next, once they are committed.
    # The present is the database's clock, read in the same statement (the one stored_at is
    # on), and only client transactions count: autovacuum and WAL senders write no rows.
    cut: datetime = await lock.fetchval(
        """
        SELECT least(clock_timestamp() - $1::interval, $2::timestamptz, (
            SELECT min(xact_start) FROM pg_stat_activity
            WHERE datname = current_database() AND backend_type = 'client backend'
              AND pid <> pg_backend_pid()))
            - interval '1 microsecond'
        """, settle, None if now is None else now - settle)
    return cut


async def _export_all(
    pool: asyncpg.Pool, store: ObjectStore, client: Any, *, until: datetime,
    tenants: Sequence[str], part_rows: int,
) -> list[Increment]:
    done = []
    for tenant_id in tenants:
        for stream in STREAMS:
            increment = await export_increment(
                pool, store, tenant_id=tenant_id, stream=stream, until=until, client=client,
                part_rows=part_rows)
            if increment is not None:
                done.append(increment)
    return done


async def export_due(
    pool: asyncpg.Pool, store: ObjectStore, *, settle: timedelta, now: datetime | None = None,
    tenants: Sequence[str] | None = None, part_rows: int = DEFAULT_PART_ROWS,
) -> list[Increment] | None:
    """One increment per tenant and stream, up to `settle` before the database's clock (and
    before `now - settle` when `now` is given), in parts of at most `part_rows` rows; None
    when another replica is exporting (an advisory lock held for the run). The erasures are
    applied to the objects after the increments, and also when an increment failed: then the
    increment's failure is raised after them (an erasure's failure is logged, and raised when
    the increments succeeded)."""
    _check_part_rows(part_rows)
    client = store.client()
    async with pool.acquire() as lock:
        if not await lock.fetchval("SELECT pg_try_advisory_lock($1)", _EXPORT_LOCK_KEY):
            return None
        try:
            until = await _export_cut(lock, now=now, settle=settle)
            if tenants is None:
                tenants = [row["tenant_id"] for row in await lock.fetch(
                    "SELECT tenant_id FROM trainer.responses UNION "
                    "SELECT tenant_id FROM trainer.feedback UNION "
                    "SELECT tenant_id FROM trainer.examples ORDER BY 1")]
            failure: Exception | None = None
            done: list[Increment] = []
            try:
                done = await _export_all(pool, store, client, until=until, tenants=tenants,
                                         part_rows=part_rows)
            except Exception as error:
                failure = error
            try:
                rewrites = await erase_exported(pool, store, client=client)
            except Exception:
                if failure is None:
                    raise
                logger.exception("erasure rewrite after a failed increment failed too")
                rewrites = []
            if failure is not None:
                raise failure
            for rewrite in rewrites:
                logger.info("rewrote %s without %d rows of erased users", rewrite.manifest_key,
                            rewrite.rows_removed)
            return done
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1)", _EXPORT_LOCK_KEY)
