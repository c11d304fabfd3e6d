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
advanced after: a crash in between writes the same increment again under the same names, with
the same rows. Streams:
- `examples`: the published documents of examples created or revised in the stretch (a
  revision is exported again; keep the highest `revision` of each `example_id`), and in the
  manifest the examples retracted in it (erasure, opt-out, a retracted signal);
- `feedback`: every stored feedback event (retractions included), one row each;
- `responses`: every logged response.
Texts are redacted like every text that leaves the trainer; rows where the event's user, or
the user whose conversation it is, has opted out of training use are left out (erased users'
rows are gone from the trainer already; objects written before an erasure are not rewritten).
Parquet columns are the JSONL keys; nested values are JSON text, so every file of a stream has
one schema. Credentials come from settings and are never logged or written.
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
            return done
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1)", _EXPORT_LOCK_KEY)
