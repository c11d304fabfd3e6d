"""Exports to S3-compatible object storage: each tenant's training examples and the feedback
events and logged responses they came from, as JSONL and Parquet with a manifest, incremental
by the time rows were stored.

An increment of one tenant's stream covers rows stored in `(exported_to, until]`, where
`until` is at least `settle` in the past and before the oldest transaction still open (so none of
them can commit rows into a stretch already exported). Its objects are

    <prefix>/<tenant>/<stream>/<from>--<until>.jsonl
    <prefix>/<tenant>/<stream>/<from>--<until>.parquet
    <prefix>/<tenant>/<stream>/<from>--<until>.manifest.json

(times as `20261201T101500.000000Z`). The objects are written first and `exported_to` is
advanced after: a crash in between writes the same increment again under the same names (its
end read back from the manifest it left), with the same rows; data files a run left without
their manifest are deleted by the next, which writes that stretch again. Streams:
- `examples`: the published documents of examples created or revised in the stretch (a
  revision is exported again; keep the highest `revision` of each `example_id`), and in the
  manifest the examples retracted in it (erasure, opt-out, a retracted signal);
- `feedback`: every stored feedback event (retractions included), one row each;
- `responses`: every logged response.
Texts are redacted like every text that leaves the trainer; rows where the event's user, or
the user whose conversation it is, has opted out of training use are left out.
Parquet columns are the JSONL keys; nested values are JSON text, so every file of a stream has
one schema. Credentials come from settings and are never logged or written.

Erasure: an erased user's rows are gone from the trainer at once, so no later increment holds
them; the objects written before are rewritten by `erase_exported`, which every export run
calls after its increments (under the same lock): each increment of the tenant whose JSONL or
Parquet holds a row of an erased user (`feedback` and `responses` rows by `user_id`, the rows
the trainer deletes; `examples` rows retracted for erasure) is written again under the same
names without those rows, and its manifest with the new counts, ids and checksums and an
`erasure` note (`rewritten_at`, `rows_removed`; never who). The files go first and the manifest
last, and an erasure is marked applied (`trainer.erased_users.objects_erased_for`) only after
every increment of its tenant is done, so a run that fails halfway is completed by the next.
A user who came back between the erasure and the rewrite loses those new rows from the objects
too (never the other way round). Copies of objects made outside the store (a reader's download,
a bucket replica, object versions if the bucket keeps them) are the reader's to erase: the
rewrite reaches only the current objects.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from feedbackloop.settings import Settings
from services.trainer.examples.build import published_document
from services.trainer.examples.redaction import redact
from services.trainer.repository import _NOBODY_OPTED_OUT

logger = logging.getLogger(__name__)

STREAMS = ("examples", "feedback", "responses")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# An advisory lock so one trainer replica exports at a time.
_EXPORT_LOCK_KEY = 7_311_042_407


@dataclass(frozen=True)
class ObjectStore:
    """Where exports go. `secret_access_key` never appears in a repr or a log line."""

    endpoint: str
    bucket: str
    prefix: str
    region: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    allow_http: bool = False

    def client(self) -> Any:
        from obstore.store import S3Store

        # Without credentials, unsigned requests (an anonymous store), never the machine's own.
        credentials: dict[str, Any] = (
            {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}
            if self.access_key_id else {"skip_signature": True}
        )
        return S3Store(
            self.bucket, endpoint=self.endpoint, region=self.region, **credentials,
            client_options={"allow_http": self.allow_http, "connect_timeout": "5s",
                            "timeout": "120s"},
            # A store that is away fails the run within a minute; the job tries again.
            retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=60)},
        )

    def key(self, *parts: str) -> str:
        return "/".join(part.strip("/") for part in (self.prefix, *parts) if part.strip("/"))


def object_store(settings: Settings) -> ObjectStore | None:
    """The configured store, or None when exports to object storage are off."""
    if not settings.object_export_endpoint:
        return None
    return ObjectStore(
        endpoint=settings.object_export_endpoint,
        bucket=settings.object_export_bucket,
        prefix=settings.object_export_prefix,
        region=settings.object_export_region,
        access_key_id=settings.object_export_access_key_id.get_secret_value(),
        secret_access_key=settings.object_export_secret_access_key.get_secret_value(),
        allow_http=settings.object_export_allow_http,
    )


@dataclass(frozen=True)
class Increment:
    tenant_id: str
    stream: str
    since: datetime
    until: datetime
    rows: int
    keys: tuple[str, ...]


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


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


# Text columns of the event streams, redacted like every text that leaves the trainer.
_TEXT_COLUMNS = frozenset({"prompt", "context", "output", "action_data", "comment", "correction",
                           "replay", "inline_prompt", "inline_output"})


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value).text
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    return value


async def _rows(
    connection: asyncpg.Connection, stream: str, tenant_id: str, since: datetime, until: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, retractions) of one tenant's stream stored in `(since, until]`, oldest first."""
    if stream == "examples":
        found = await connection.fetch(
            """
            SELECT record, revision, created_at FROM trainer.examples
            WHERE tenant_id = $1 AND updated_at > $2 AND updated_at <= $3
              AND duplicate_of IS NULL
            ORDER BY updated_at, example_id
            """, tenant_id, since, until)
        retracted = await connection.fetch(
            """
            SELECT example_id, conversation_id, reason, created_at AS retracted_at
            FROM trainer.example_retractions
            WHERE tenant_id = $1 AND created_at > $2 AND created_at <= $3 ORDER BY seq
            """, tenant_id, since, until)
        return (
            [published_document(row["record"], revision=row["revision"],
                                created_at=row["created_at"]) for row in found],
            [{k: str(v) if k == "example_id" else v for k, v in dict(row).items()}
             for row in retracted],
        )
    # Neither the event's user nor the user whose conversation it is has opted out, now.
    query = {
        "feedback": f"""
            SELECT f.* FROM trainer.feedback f
            LEFT JOIN trainer.responses r USING (tenant_id, response_id)
            WHERE f.tenant_id = $1 AND f.stored_at > $2 AND f.stored_at <= $3
              AND {_NOBODY_OPTED_OUT}
            ORDER BY f.stored_at, f.event_id""",
        "responses": """
            SELECT t.* FROM trainer.responses t
            WHERE t.tenant_id = $1 AND t.stored_at > $2 AND t.stored_at <= $3
              AND NOT EXISTS (SELECT 1 FROM trainer.consent c WHERE c.tenant_id = t.tenant_id
                              AND NOT c.training_allowed AND c.user_id = t.user_id)
            ORDER BY t.stored_at, t.response_id""",
    }[stream]
    rows = []
    for row in await connection.fetch(query, tenant_id, since, until):
        item = {key: str(value) if key == "event_id" else
                _redacted(value) if key in _TEXT_COLUMNS else value
                for key, value in row.items()}
        if stream == "feedback":
            item["type"] = "feedback.retracted" if item.get("retraction") else "feedback.submitted"
        rows.append(item)
    return rows, []


async def _resume(
    client: Any, store: ObjectStore, *, tenant_id: str, stream: str, since: datetime,
    until: datetime,
) -> datetime:
    """The end of the increment starting at `since`: the one an earlier run wrote a manifest
    for when it stopped before the watermark moved (so it is written again under the same
    names), else `until`. Data files an earlier run wrote from `since` without their manifest
    are deleted: no manifest names them, and they would repeat the new increment's rows."""
    import obstore

    # Listing is by folder (the store's prefixes are paths), so the names are matched here.
    start = store.key(tenant_id, stream, f"{_stamp(since)}--")
    found = [item["path"] async for batch in
             obstore.list(client, prefix=store.key(tenant_id, stream) + "/")
             for item in batch if item["path"].startswith(start)]
    manifests = sorted(key for key in found if key.endswith(".manifest.json"))
    if manifests:
        written = orjson.loads(bytes(await (await obstore.get_async(client, manifests[0]))
                                     .bytes_async()))
        until = min(until, datetime.fromisoformat(written["stored_until"]))
    base = store.key(tenant_id, stream, f"{_stamp(since)}--{_stamp(until)}")
    for key in found:
        if not key.startswith(base + "."):
            await obstore.delete_async(client, key)
    return until


async def export_increment(
    pool: asyncpg.Pool, store: ObjectStore, *, tenant_id: str, stream: str, until: datetime,
    client: Any | None = None,
) -> Increment | None:
    """Exports one tenant's stream up to `until`; None when nothing was stored since the last
    increment (the watermark still moves)."""
    import obstore

    client = client or store.client()
    async with pool.acquire() as connection:
        since = await connection.fetchval(
            "SELECT exported_to FROM trainer.object_exports WHERE tenant_id = $1 AND stream = $2",
            tenant_id, stream) or _EPOCH
        if until <= since:
            return None
        until = await _resume(client, store, tenant_id=tenant_id, stream=stream, since=since,
                              until=until)
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            rows, retracted = await _rows(connection, stream, tenant_id, since, until)
    keys: list[str] = []
    if rows or retracted:
        base = store.key(tenant_id, stream, f"{_stamp(since)}--{_stamp(until)}")
        files = []
        for suffix, body in (("jsonl", jsonl_bytes(rows)), ("parquet", parquet_bytes(rows))):
            if not rows:
                break
            await obstore.put_async(client, f"{base}.{suffix}", body)
            keys.append(f"{base}.{suffix}")
            files.append({"key": f"{base}.{suffix}", "bytes": len(body),
                          "sha256": hashlib.sha256(body).hexdigest()})
        manifest = {
            "manifest_version": 1, "tenant_id": tenant_id, "stream": stream,
            "stored_after": since.isoformat(), "stored_until": until.isoformat(),
            "rows": len(rows), "files": files, "retracted": retracted,
            "ids": [row.get("example_id") or row.get("event_id") for row in rows],
            "exported_at": datetime.now(UTC).isoformat(),
        }
        await obstore.put_async(client, f"{base}.manifest.json",
                                orjson.dumps(manifest, default=str, option=orjson.OPT_INDENT_2))
        keys.append(f"{base}.manifest.json")
    async with pool.acquire() as connection:
        await connection.execute(
            """
            INSERT INTO trainer.object_exports (tenant_id, stream, exported_to, objects)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (tenant_id, stream) DO UPDATE SET exported_to = EXCLUDED.exported_to,
                objects = trainer.object_exports.objects + EXCLUDED.objects, updated_at = now()
            """, tenant_id, stream, until, len(keys))
    if not keys:
        return None
    return Increment(tenant_id, stream, since, until, len(rows), tuple(keys))


@dataclass(frozen=True)
class Rewrite:
    """An increment written again without erased users' rows."""

    tenant_id: str
    stream: str
    manifest_key: str
    rows_removed: int


def _digest(user_id: Any) -> str | None:
    # As public.erased_user_digest: the SHA-256 of the tenant-keyed HMAC, in hex.
    return hashlib.sha256(str(user_id).encode()).hexdigest() if user_id else None


def _erased_row(row: dict[str, Any], stream: str, users: frozenset[str],
                examples: frozenset[str]) -> bool:
    if stream == "examples":
        return str(row.get("example_id")) in examples
    return _digest(row.get("user_id")) in users


def _without_erased_jsonl(body: bytes, stream: str, users: frozenset[str],
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


def _without_erased_parquet(body: bytes, stream: str, users: frozenset[str],
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


async def _erase_increment(
    client: Any, manifest_key: str, stream: str, users: frozenset[str],
    examples: frozenset[str],
) -> int | None:
    """Rewrites one increment without erased rows; returns how many rows it removed, None
    when it had nothing to rewrite."""
    import obstore

    manifest = orjson.loads(bytes(await (await obstore.get_async(client, manifest_key))
                                  .bytes_async()))
    files = []
    kept: list[dict[str, Any]] | None = None
    for entry in manifest.get("files", []):
        key = entry["key"]
        body = bytes(await (await obstore.get_async(client, key)).bytes_async())
        if key.endswith(".jsonl"):
            new_body, kept = _without_erased_jsonl(body, stream, users, examples)
        else:
            new_body, _ = _without_erased_parquet(body, stream, users, examples)
        if new_body != body:
            await obstore.put_async(client, key, new_body)
        files.append(entry | {"bytes": len(new_body),
                              "sha256": hashlib.sha256(new_body).hexdigest()})
    if kept is None or files == manifest.get("files", []):
        return None  # nothing of an erased user here, or rewritten by an earlier run already
    # Counted from the files as they are now, so a run that stopped between a file and the
    # manifest leaves nothing for the next to miscount.
    removed = manifest["rows"] - len(kept)
    note = manifest.get("erasure") or {"rows_removed": 0}
    manifest |= {
        "files": files,
        "rows": len(kept),
        "ids": [row.get("example_id") or row.get("event_id") for row in kept],
        "erasure": {"rewritten_at": datetime.now(UTC).isoformat(),
                    "rows_removed": note["rows_removed"] + removed},
    }
    await obstore.put_async(client, manifest_key,
                            orjson.dumps(manifest, default=str, option=orjson.OPT_INDENT_2))
    return removed


async def erase_exported(
    pool: asyncpg.Pool, store: ObjectStore, *, client: Any | None = None
) -> list[Rewrite]:
    """Rewrites the objects of every tenant with an erasure not yet applied to them (see the
    module); returns the increments rewritten. Call it under the export lock."""

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


class ErasureRewriteFailed(Exception):
    """Some tenants' objects could not be rewritten after an erasure (the others' were)."""


async def _erase_tenant(
    pool: asyncpg.Pool, client: Any, store: ObjectStore, tenant_id: str,
    pending: Sequence[asyncpg.Record],
) -> list[Rewrite]:
    import obstore

    rewrites = []
    users = frozenset(row["user_digest"] for row in pending if row["tenant_id"] == tenant_id)
    async with pool.acquire() as connection:
        examples = frozenset(str(row["example_id"]) for row in await connection.fetch(
            "SELECT example_id FROM trainer.example_retractions "
            "WHERE tenant_id = $1 AND reason = 'erasure'", tenant_id))
    for stream in STREAMS:
        prefix = store.key(tenant_id, stream) + "/"
        keys: list[str] = [item["path"] async for batch in obstore.list(client, prefix=prefix)
                           for item in batch if item["path"].endswith(".manifest.json")]
        for manifest_key in sorted(keys):
            removed = await _erase_increment(client, manifest_key, stream, users, examples)
            if removed is not None:
                rewrites.append(Rewrite(tenant_id, stream, manifest_key, removed))
    async with pool.acquire() as connection:
        # Only the erasures read: one recorded again meanwhile is applied by the next run.
        await connection.executemany(
            "UPDATE trainer.erased_users SET objects_erased_for = $3 "
            "WHERE tenant_id = $1 AND user_digest = $2 AND erased_at = $3",
            [(row["tenant_id"], row["user_digest"], row["erased_at"])
             for row in pending if row["tenant_id"] == tenant_id],
        )
    return rewrites


async def export_due(
    pool: asyncpg.Pool, store: ObjectStore, *, now: datetime, settle: timedelta,
    tenants: Sequence[str] | None = None,
) -> list[Increment] | None:
    """One increment per tenant and stream, up to `now - settle`; None when another replica is
    exporting (an advisory lock held for the run)."""
    client = store.client()
    async with pool.acquire() as lock:
        if not await lock.fetchval("SELECT pg_try_advisory_lock($1)", _EXPORT_LOCK_KEY):
            return None
        try:
            # stored_at is when a writing transaction began: cut before the oldest one still
            # open, so rows it commits later cannot land in a stretch already exported.
            until = await lock.fetchval(
                """
                SELECT least($1::timestamptz, (
                    SELECT min(xact_start) FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid()))
                """, now - settle)
            if tenants is None:
                tenants = [row["tenant_id"] for row in await lock.fetch(
                    "SELECT tenant_id FROM trainer.responses UNION "
                    "SELECT tenant_id FROM trainer.feedback UNION "
                    "SELECT tenant_id FROM trainer.examples ORDER BY 1")]
            done = []
            for tenant_id in tenants:
                for stream in STREAMS:
                    increment = await export_increment(pool, store, tenant_id=tenant_id,
                                                       stream=stream, until=until, client=client)
                    if increment is not None:
                        done.append(increment)
            for rewrite in await erase_exported(pool, store, client=client):
                logger.info("rewrote %s without %d rows of erased users", rewrite.manifest_key,
                            rewrite.rows_removed)
            return done
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1)", _EXPORT_LOCK_KEY)
