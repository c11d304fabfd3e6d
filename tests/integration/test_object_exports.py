"""Exports to object storage against a real S3 store (SeaweedFS) and real PostgreSQL: each
tenant's examples, feedback and responses as JSONL and Parquet with a manifest, incremental by
the time rows were stored, opted-out users left out, credentials never logged."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import obstore
import orjson
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from feedbackloop.contract import decode_event
from feedbackloop.embedded import SeaweedS3, free_port, free_seaweed_ports
from feedbackloop.migrations import available_migrations
from feedbackloop.observability import JobMetrics
from feedbackloop.pipeline.jobs import JobRunner
from feedbackloop.postgres import create_pool, reset_after_schema_change
from services.trainer.exports.object_erasure import ErasureRewriteFailed, erase_exported
from services.trainer.exports.object_exports import _export_cut, export_due
from services.trainer.exports.object_files import stream_schema
from services.trainer.exports.object_rows import _PAGES
from services.trainer.exports.object_store import ObjectStore
from services.trainer.handlers import write_effects
from services.trainer.jobs.object_export import object_export_job
from services.trainer.processing import process_message
from tests.infra import create_database

pytestmark = pytest.mark.integration
SECRET = "s3-secret-that-must-never-be-logged"
OPTED_OUT = "f" * 64


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    s3_port, port_base = free_seaweed_ports()
    store = SeaweedS3(tmp_path_factory.mktemp("s3") / "seaweed", s3_port=s3_port,
                      port_base=port_base, bucket="exports")
    store.start()
    try:
        yield store
    finally:
        store.stop()


def _store(seaweed: SeaweedS3, prefix: str) -> ObjectStore:
    return ObjectStore(endpoint=seaweed.endpoint, bucket=seaweed.bucket, prefix=prefix,
                       region="us-east-1", access_key_id="feedbackloop", secret_access_key=SECRET,
                       allow_http=True)


def _doc(kind: str, tenant: str, user: str, payload: dict[str, Any], minute: int) -> dict:
    return {"event_id": str(uuid.uuid4()), "type": kind, "tenant_id": tenant,
            "occurred_at": f"2026-11-20T10:{minute:02d}:00Z",
            "received_at": "2026-11-20T11:00:00Z", "user_id": user, "payload": payload}


def _conversation(tenant: str, n: int, user: str, vote: str = "up") -> list[dict]:
    return [
        _doc("response.logged", tenant, user, {
            "response_id": f"r{n}", "model": "m", "action_type": "todo",
            "prompt": [{"role": "user", "content": f"Add item {n}"}],
            "output": f"Added item {n}."}, n),
        _doc("feedback.submitted", tenant, user, {"response_id": f"r{n}", "thumb": vote}, n + 1),
    ]


async def _apply(pool: Any, docs: list[dict]) -> None:
    effects = [process_message(decode_event(orjson.dumps(doc))) for doc in docs]
    async with pool.acquire() as connection, connection.transaction():
        await write_effects(connection, [e for e in effects if e is not None])


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[Any]:
    pool = await create_pool(await create_database(postgres_url), min_size=1, max_size=4)
    yield pool
    await pool.close()


def _objects(store: ObjectStore) -> dict[str, bytes]:
    client = store.client()
    keys = [item["path"] for batch in obstore.list(client, prefix=store.prefix) for item in batch]
    return {key: bytes(obstore.get(client, key).bytes()) for key in keys}


def _later() -> datetime:
    # Every row committed so far was stored before now (PostgreSQL's now() is its
    # transaction's start); with no settle time, the cut is the present.
    return datetime.now(UTC)


async def test_increments_hold_each_stream_once_as_jsonl_and_parquet_with_a_manifest(
    pool: Any, seaweed: SeaweedS3
) -> None:
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    await _apply(pool, [
        *(doc for n in range(6) for doc in _conversation("acme", n, "a" * 64)),
        *_conversation("globex", 0, "b" * 64),
        _doc("user.consent_changed", "acme", OPTED_OUT, {"training_allowed": False}, 30),
        *_conversation("acme", 40, OPTED_OUT),
    ])
    first = await export_due(pool, store, now=_later(), settle=timedelta(0))
    assert first is not None
    assert sorted((i.tenant_id, i.stream, i.rows) for i in first) == [
        ("acme", "examples", 12), ("acme", "feedback", 6), ("acme", "responses", 6),
        ("globex", "examples", 2), ("globex", "feedback", 1), ("globex", "responses", 1),
    ]
    objects = _objects(store)
    assert len(objects) == 6 * 3
    for increment in first:
        jsonl, parquet, manifest_key = increment.keys
        lines = [orjson.loads(line) for line in objects[jsonl].splitlines()]
        table = pq.read_table(io.BytesIO(objects[parquet])).to_pylist()
        manifest = orjson.loads(objects[manifest_key])
        assert len(lines) == len(table) == manifest["rows"] == increment.rows
        assert {f["key"]: f["sha256"] for f in manifest["files"]} == {
            key: hashlib.sha256(objects[key]).hexdigest() for key in (jsonl, parquet)}
        assert all(line["tenant_id"] == increment.tenant_id for line in lines)
        assert OPTED_OUT not in objects[jsonl].decode(), "an opted-out user's rows were exported"
    feedback = next(i for i in first if (i.tenant_id, i.stream) == ("acme", "feedback"))
    assert {row["type"] for row in (orjson.loads(x) for x in objects[feedback.keys[0]].splitlines())
            } == {"feedback.submitted"}

    # Nothing new: nothing written. A flip and a retraction: only they, in the next increment.
    assert await export_due(pool, store, now=_later(), settle=timedelta(0)) == []
    await _apply(pool, [
        _doc("feedback.submitted", "acme", "a" * 64, {"response_id": "r1", "thumb": "down"}, 50),
        _doc("feedback.retracted", "acme", "a" * 64, {"response_id": "r2", "kind": "thumb"}, 51),
    ])
    second = await export_due(pool, store, now=_later(), settle=timedelta(0))
    assert second is not None
    by_stream = {i.stream: i for i in second if i.tenant_id == "acme"}
    assert set(by_stream) == {"examples", "feedback"}
    assert by_stream["feedback"].rows == 2
    # The empty run moved the watermark too: increments follow one another without a gap.
    assert by_stream["examples"].since > next(
        i.until for i in first if (i.tenant_id, i.stream) == ("acme", "examples"))
    objects = _objects(store)
    revised = [orjson.loads(x) for x in objects[by_stream["examples"].keys[0]].splitlines()]
    assert {(d["response_id"], d["kind"], d["label"], d["revision"]) for d in revised} >= {
        ("r1", "kto", False, 2)}
    manifest = orjson.loads(objects[by_stream["examples"].keys[-1]])
    assert {r["conversation_id"] for r in manifest["retracted"]} >= {"r2"}


async def test_a_run_that_stopped_before_its_watermark_is_written_again_under_the_same_names(
    pool: Any, seaweed: SeaweedS3
) -> None:
    """A run that wrote its increments and stopped before the watermark moved, after an earlier
    attempt had left a data file without its manifest: the next run writes the same increments
    under the same names (their end read back from the manifests) and deletes the leftover, so
    no object repeats another's rows and every data file is one a manifest names."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    await _apply(pool, _conversation("acme", 1, "a" * 64))
    first = await export_due(pool, store, now=_later(), settle=timedelta(0))
    assert first is not None and len(first) == 3
    written = _objects(store)
    jsonl = next(i for i in first if i.stream == "feedback").keys[0]
    leftover = jsonl.rsplit("--", 1)[0] + "--20261130T000000.000000Z.jsonl"
    client = store.client()
    obstore.put(client, leftover, written[jsonl])
    await pool.execute("DELETE FROM trainer.object_exports")  # the watermark never moved
    again = await export_due(pool, store, now=_later(), settle=timedelta(0))
    assert again is not None
    assert sorted(i.keys for i in again) == sorted(i.keys for i in first)
    assert set(_objects(store)) == set(written), "the leftover is gone, nothing new was named"


async def test_a_store_that_refuses_is_retried_and_its_secret_never_logged(
    pool: Any, seaweed: SeaweedS3, caplog: pytest.LogCaptureFixture
) -> None:
    await _apply(pool, _conversation("acme", 1, "a" * 64))
    gone = ObjectStore(endpoint=f"http://127.0.0.1:{free_port()}", bucket="exports",
                       prefix="x", region="us-east-1", access_key_id="feedbackloop",
                       secret_access_key=SECRET, allow_http=True)
    assert SECRET not in repr(gone)
    with caplog.at_level(logging.INFO):
        running = JobRunner([object_export_job(pool, gone, interval=0.2, settle=timedelta(0))],
                            JobMetrics(CollectorRegistry()))
        running.start()
        deadline = asyncio.get_running_loop().time() + 90
        while len([r for r in caplog.records if "export to" in r.getMessage()]) < 2:
            assert not running.ended(), "a refusing store must not end the export job"
            assert asyncio.get_running_loop().time() < deadline, "no failure was reported"
            await asyncio.sleep(0.1)
        await running.stop()
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    # The watermark did not move: the same rows go out once the store answers.
    done = await export_due(pool, _store(seaweed, f"t-{uuid.uuid4().hex[:8]}"), now=_later(),
                            settle=timedelta(0))
    assert done is not None and {(i.stream, i.rows) for i in done} == {
        ("examples", 2), ("feedback", 1), ("responses", 1)}


async def test_rows_stored_within_the_settle_time_wait_for_the_next_increment(
    pool: Any, seaweed: SeaweedS3
) -> None:
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    await _apply(pool, _conversation("acme", 1, "a" * 64))
    assert await export_due(pool, store, now=datetime.now(UTC), settle=timedelta(hours=1)) == []
    assert _objects(store) == {}
    done = await export_due(pool, store, now=datetime.now(UTC), settle=timedelta(0))
    assert done is not None and {(i.stream, i.rows) for i in done} == {
        ("examples", 2), ("feedback", 1), ("responses", 1)}


async def test_event_streams_are_redacted_and_forget_a_conversation_whose_user_opted_out(
    pool: Any, seaweed: SeaweedS3
) -> None:
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    owner, voter = "9" * 64, "8" * 64
    await _apply(pool, [
        *_conversation("acme", 1, "a" * 64),
        _doc("feedback.submitted", "acme", "a" * 64, {"response_id": "r1", "comment": {
            "text": "write to jo@example.com"}}, 3),
        *_conversation("acme", 5, owner),
        _doc("feedback.submitted", "acme", voter, {"response_id": "r5", "thumb": "down"}, 8),
        _doc("user.consent_changed", "acme", owner, {"training_allowed": False}, 20),
    ])
    done = await export_due(pool, store, now=_later(), settle=timedelta(0))
    assert done is not None
    objects = _objects(store)
    feedback = next(i for i in done if i.stream == "feedback")
    rows = [orjson.loads(line) for line in objects[feedback.keys[0]].splitlines()]
    assert {row["response_id"] for row in rows} == {"r1"}, "r5's owner opted out"
    assert any(row["comment"] and row["comment"]["text"] == "write to [EMAIL]" for row in rows)
    assert b"jo@example.com" not in b"".join(objects.values())


async def test_an_erasure_rewrites_the_objects_exported_before_it(
    pool: Any, seaweed: SeaweedS3
) -> None:
    """The erased user's feedback and responses rows and the examples of their conversations
    leave every JSONL and Parquet file written before the erasure; the manifests follow the
    files; the kept user's rows stay byte for byte; a second run rewrites nothing."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    erased, kept = "e" * 64, "k" * 64

    def conversation(n: int, user: str, words: str) -> list[dict]:
        docs = _conversation("acme", n, user)
        docs[0]["payload"]["prompt"] = [{"role": "user", "content": words}]
        return docs

    await _apply(pool, [*conversation(1, erased, "erased user's first words"),
                        *conversation(2, kept, "kept user's words")])
    await export_due(pool, store, now=_later(), settle=timedelta(0))
    await _apply(pool, conversation(3, erased, "erased user's second words"))
    await export_due(pool, store, now=_later(), settle=timedelta(0))
    before = _objects(store)
    assert b"erased user's" in b"".join(before.values())
    assert erased.encode() in b"".join(before.values())

    await _apply(pool, [_doc("user.erasure_requested", "acme", erased, {}, 40)])
    done = await export_due(pool, store, now=_later(), settle=timedelta(0))
    assert done is not None
    after = _objects(store)
    everything = b"".join(after.values())
    assert b"erased user's" not in everything
    assert erased.encode() not in everything
    assert b"kept user's words" in everything
    rewritten = 0
    for key, body in after.items():
        if key.endswith(".jsonl"):
            assert erased.encode() not in body
            continue
        if key.endswith(".parquet"):
            assert erased not in str(pq.read_table(io.BytesIO(body)).to_pylist())
            continue
        manifest = orjson.loads(body)
        lines = ([orjson.loads(x) for x in after[manifest["files"][0]["key"]].splitlines()]
                 if manifest["files"] else [])
        assert manifest["rows"] == len(lines)
        assert manifest["ids"] == [row.get("example_id") or row.get("event_id") for row in lines]
        for entry in manifest["files"]:
            assert entry["sha256"] == hashlib.sha256(after[entry["key"]]).hexdigest()
            assert entry["bytes"] == len(after[entry["key"]])
        if "erasure" in manifest:
            rewritten += 1
            assert manifest["erasure"]["rows_removed"] >= 1
            assert erased not in body.decode()
    # First increment: examples, feedback and responses each held the erased user's rows;
    # second: only theirs.
    assert rewritten == 6
    # The kept user's rows are as they were: the files of the first increment keep their lines.
    first_feedback = sorted(k for k in before if "/feedback/" in k and k.endswith(".jsonl"))[0]
    assert [line for line in before[first_feedback].splitlines() if kept.encode() in line] == \
        after[first_feedback].splitlines()
    async with pool.acquire() as connection:
        assert await connection.fetchval(
            "SELECT objects_erased_for = erased_at FROM trainer.erased_users") is True
    # Applied once: the next run leaves every object as it is.
    assert await export_due(pool, store, now=_later(), settle=timedelta(0)) == []
    assert _objects(store) == after


async def test_one_tenants_unreadable_object_holds_back_only_its_own_erasure(
    pool: Any, seaweed: SeaweedS3
) -> None:
    """globex's manifest is corrupt: acme's erasure is rewritten and marked done, globex's
    stays pending, and the run reports which tenant failed."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    acme_user, globex_user = "e" * 64, "g" * 64
    await _apply(pool, [*_conversation("acme", 1, acme_user),
                        *_conversation("globex", 1, globex_user)])
    await export_due(pool, store, now=_later(), settle=timedelta(0))
    client = store.client()
    broken = next(key for key in _objects(store)
                  if "/globex/feedback/" in key and key.endswith(".manifest.json"))
    obstore.put(client, broken, b"{not json")
    await _apply(pool, [_doc("user.erasure_requested", "acme", acme_user, {}, 40),
                        _doc("user.erasure_requested", "globex", globex_user, {}, 40)])
    with pytest.raises(ErasureRewriteFailed, match="globex") as failed:
        await export_due(pool, store, now=_later(), settle=timedelta(0))
    assert "acme" not in str(failed.value).split("could not")[0]
    acme = b"".join(body for key, body in _objects(store).items() if "/acme/" in key)
    assert acme_user.encode() not in acme
    done = {row["tenant_id"]: row["applied"] for row in await pool.fetch(
        "SELECT tenant_id, objects_erased_for = erased_at AS applied FROM trainer.erased_users")}
    assert done == {"acme": True, "globex": None}


def _parts(objects: dict[str, bytes], manifest: dict) -> list[list[dict]]:
    """Each part's JSONL rows, in the manifest's order, checked against its Parquet file and
    against the sizes and checksums the manifest gives."""
    found = []
    for part in manifest["parts"]:
        jsonl, parquet = (entry["key"] for entry in part["files"])
        assert jsonl.endswith(f".part-{part['part']:05d}.jsonl")
        for entry in part["files"]:
            assert entry["sha256"] == hashlib.sha256(objects[entry["key"]]).hexdigest()
            assert entry["bytes"] == len(objects[entry["key"]])
        lines = [orjson.loads(line) for line in objects[jsonl].splitlines()]
        assert len(lines) == part["rows"] == pq.read_metadata(
            io.BytesIO(objects[parquet])).num_rows
        found.append(lines)
    assert manifest["files"] == [entry for part in manifest["parts"] for entry in part["files"]]
    assert manifest["rows"] == sum(len(lines) for lines in found)
    assert manifest["ids"] == [row.get("example_id") or row.get("event_id")
                               for lines in found for row in lines]
    return found


def _named(objects: dict[str, bytes]) -> set[str]:
    return {entry["key"] for key, body in objects.items() if key.endswith(".manifest.json")
            for entry in orjson.loads(body)["files"]}


async def test_an_increment_in_parts_holds_every_row_once_and_a_run_stopped_between_parts_resumes(
    pool: Any, seaweed: SeaweedS3
) -> None:
    """Parts of at most 3 rows: several per stream, each row in exactly one, the manifest's
    counts, ids and checksums those of the files. A run stopped after the second part of
    `feedback` (no manifest, the watermark not moved) is done again by the next under the
    same names (its end read from the parts' names), the rows stored since in the increment
    after: every row is in exactly one part."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    await _apply(pool, [doc for n in range(7) for doc in _conversation("acme", n, f"{n}" * 64)])
    with pytest.raises(ValueError, match="part_rows must be at least 1"):
        await export_due(pool, store, now=_later(), settle=timedelta(0), part_rows=0)
    assert _objects(store) == {}
    assert await pool.fetchval("SELECT count(*) FROM trainer.object_exports") == 0
    first = await export_due(pool, store, now=_later(), settle=timedelta(0), part_rows=3)
    assert first is not None
    objects = _objects(store)
    manifests = {i.stream: orjson.loads(objects[i.keys[-1]]) for i in first}
    assert {s: [p["rows"] for p in m["parts"]] for s, m in manifests.items()} == {
        "examples": [3, 3, 3, 3, 2], "feedback": [3, 3, 1], "responses": [3, 3, 1]}
    for increment in first:
        rows = [row for lines in _parts(objects, manifests[increment.stream]) for row in lines]
        assert increment.rows == len(rows)
        assert increment.keys == (*(e["key"] for e in manifests[increment.stream]["files"]),
                                  increment.keys[-1])
    stored = {str(row["event_id"]) for row in await pool.fetch(
        "SELECT event_id FROM trainer.feedback")}
    assert sorted(manifests["feedback"]["ids"]) == sorted(stored)

    # Stopped in `feedback` after its second part: examples were done, responses not begun.
    feedback = next(i for i in first if i.stream == "feedback")
    client = store.client()
    for key in (feedback.keys[-1], *feedback.keys[4:6],
                *next(i for i in first if i.stream == "responses").keys):
        obstore.delete(client, key)
    await pool.execute("DELETE FROM trainer.object_exports WHERE stream <> 'examples'")
    await _apply(pool, _conversation("acme", 20, "a" * 64))
    again = await export_due(pool, store, now=_later(), settle=timedelta(0), part_rows=3)
    assert again is not None
    resumed = {i.stream: i for i in again}
    assert resumed["feedback"].keys == feedback.keys, "the same stretch, under the same names"
    assert resumed["feedback"].rows == feedback.rows == 7
    assert resumed["responses"].rows == 8, "nothing of its stretch was left: a new end"
    assert resumed["examples"].rows == 2, "examples went on from where they had reached"
    later = await export_due(pool, store, now=_later(), settle=timedelta(0), part_rows=3)
    assert later is not None
    assert [(i.stream, i.rows, i.since) for i in later] == [
        ("feedback", 1, resumed["feedback"].until)]
    objects = _objects(store)
    assert set(objects) == _named(objects) | {k for k in objects if k.endswith(".manifest.json")}
    for stream, table in (("feedback", "trainer.feedback"), ("responses", "trainer.responses")):
        ids = [row.get("event_id") for key, body in sorted(objects.items())
               if f"/{stream}/" in key and key.endswith(".jsonl")
               for row in map(orjson.loads, body.splitlines())]
        assert sorted(ids) == sorted(str(row["event_id"]) for row in await pool.fetch(
            f"SELECT event_id FROM {table}")), f"{stream}: every row exactly once"
    assert [p["rows"] for p in orjson.loads(objects[feedback.keys[-1]])["parts"]] == [3, 3, 1]


async def test_an_erasure_downloads_only_the_parts_that_may_hold_the_users_rows(
    pool: Any, seaweed: SeaweedS3
) -> None:
    """Parts of 2 rows: every part without the erased user's rows is made unreadable, and the
    rewrite still succeeds (it never downloaded them) and leaves them byte for byte; the parts
    with the user's rows lose them, their manifest entries follow. An increment whose manifest
    predates parts (no `parts`) is read whole, as before."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    erased = "e" * 64
    await _apply(pool, [*_conversation("acme", 1, erased),
                        *(doc for n in range(2, 7) for doc in _conversation("acme", n, f"{n}" * 64)),
                        *_conversation("globex", 1, erased), *_conversation("globex", 2, "k" * 64)])
    cut = _later()
    await export_due(pool, store, now=cut, settle=timedelta(0), tenants=["globex"])
    await export_due(pool, store, now=cut, settle=timedelta(0), tenants=["acme"], part_rows=2)
    client = store.client()
    untouched: dict[str, bytes] = {}
    for key, body in _objects(store).items():
        if "/globex/" in key and key.endswith(".manifest.json"):
            # As written before parts: one JSONL and one Parquet file, no `parts`.
            manifest = orjson.loads(body)
            assert len(manifest.pop("parts")) == 1
            obstore.put(client, key, orjson.dumps(manifest))
        elif "/acme/" in key and key.endswith(".jsonl") and erased.encode() not in body and (
                b'"response_id":"r1"' not in body):
            untouched[key] = b"{not json"
            obstore.put(client, key, untouched[key])
    assert len(untouched) >= 7
    await _apply(pool, [_doc("user.erasure_requested", "acme", erased, {}, 40),
                        _doc("user.erasure_requested", "globex", erased, {}, 40)])
    assert await export_due(pool, store, now=_later(), settle=timedelta(0), part_rows=2) \
        is not None
    after = _objects(store)
    assert {key: after[key] for key in untouched} == untouched
    assert erased.encode() not in b"".join(after.values())
    rewritten = set()
    for key, body in after.items():
        if not key.endswith(".manifest.json") or "erasure" not in (manifest := orjson.loads(body)):
            continue
        rewritten.add(tuple(key.split("/")[1:3]))
        offset = 0
        for part in manifest.get("parts") or [{"rows": manifest["rows"],
                                               "files": manifest["files"]}]:
            jsonl = part["files"][0]["key"]
            lines = [orjson.loads(x) for x in after[jsonl].splitlines()] if (
                jsonl not in untouched) else None
            if lines is not None:
                assert part["rows"] == len(lines)
                assert manifest["ids"][offset:offset + len(lines)] == [
                    row.get("example_id") or row.get("event_id") for row in lines]
                assert all(row.get("response_id") != "r1" for row in lines)
                for entry in part["files"]:
                    assert entry["sha256"] == hashlib.sha256(after[entry["key"]]).hexdigest()
            offset += part["rows"]
        assert offset == manifest["rows"] == len(manifest["ids"])
    assert len(rewritten) == 6, "each stream of both tenants held the erased user's rows"
    assert {row["tenant_id"]: row["applied"] for row in await pool.fetch(
        "SELECT tenant_id, objects_erased_for = erased_at AS applied FROM trainer.erased_users")
    } == {"acme": True, "globex": True}


async def test_an_increments_parts_share_one_parquet_schema_and_read_as_one_table(
    pool: Any, seaweed: SeaweedS3, tmp_path: Any
) -> None:
    """Parts of 2 rows: one `feedback` part of thumbs only, another with a rating and a
    comment; `examples` parts with and without kto or preference rows. Every part of a stream
    has the stream's schema, and they read together, as files and as a dataset."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    await _apply(pool, [doc for n in (1, 3) for doc in _conversation("acme", n, "a" * 64)])
    await _apply(pool, [
        *_conversation("acme", 5, "a" * 64)[:1],
        _doc("feedback.submitted", "acme", "a" * 64, {"response_id": "r5", "rating": 2}, 6),
        _doc("feedback.submitted", "acme", "b" * 64, {"response_id": "r5", "comment": {
            "text": "too short", "reasons": ["incomplete"]}}, 7),
        _doc("feedback.submitted", "acme", "c" * 64, {"response_id": "r5", "correction": {
            "text": "Added item 5 to the groceries list."}}, 8)])
    done = await export_due(pool, store, now=_later(), settle=timedelta(0), part_rows=2)
    assert done is not None
    objects = _objects(store)
    for increment in done:
        manifest = orjson.loads(objects[increment.keys[-1]])
        assert manifest["manifest_version"] == 2
        paths = []
        for part in manifest["parts"]:
            key = part["files"][1]["key"]
            paths.append(tmp_path / key.replace("/", "_"))
            paths[-1].write_bytes(objects[key])
            assert pq.read_schema(paths[-1]).remove_metadata() == stream_schema(increment.stream)
        assert len(paths) >= 2
        table = pq.read_table([str(path) for path in paths])
        assert table.num_rows == manifest["rows"] == ds.dataset(
            [str(path) for path in paths], format="parquet").to_table().num_rows
        rows = table.to_pylist()
        assert [row.get("example_id") or row["event_id"] for row in rows] == manifest["ids"]
        parts = [pq.read_table(path).to_pylist() for path in paths]
        if increment.stream == "feedback":
            assert any(all(r["rating"] is None and r["comment"] is None for r in p)
                       for p in parts), "a part of thumbs only"
            assert {r["rating"] for r in rows} >= {2}
            assert any(r["comment"] and orjson.loads(r["comment"])["reasons"] == ["incomplete"]
                       for r in rows)
        if increment.stream == "examples":
            kinds = [{r["kind"] for r in p} for p in parts]
            assert any("kto" in k for k in kinds) and any("kto" not in k for k in kinds)
            assert any("preference" in k for k in kinds)
            assert any("preference" not in k for k in kinds)


async def test_the_page_query_follows_its_index_without_a_sort(pool: Any) -> None:
    """Each stream's page reads its keyset index (tenant, time, id) in order: a page starts
    where the last ended, however many rows share its time. The event streams' Parquet
    schemas name their tables' columns."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SET LOCAL enable_seqscan = off")
        for stream, (_, _, query) in _PAGES.items():
            plan = "\n".join(row[0] for row in await connection.fetch(
                "EXPLAIN " + query.replace("$1", "'acme'").replace("$2", "now()")
                .replace("$3", "now()").replace("$4", "'00000000-0000-0000-0000-000000000000'"
                                                 if stream == "feedback" else "'x'"
                                                 if stream == "responses" else
                                                 "'00000000-0000-0000-0000-000000000000'")
                .replace("$5", "100")))
            index = {"examples": "trainer_examples_by_updated_example",
                     "feedback": "trainer_feedback_by_stored_event",
                     "responses": "trainer_responses_by_stored_response"}[stream]
            assert index in plan, plan
            assert "Sort" not in plan, plan
        for stream in ("feedback", "responses"):
            columns = [row[0] for row in await connection.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "'trainer' AND table_name = $1 ORDER BY ordinal_position", stream)]
            assert [c for c in stream_schema(stream).names if c != "type"] == columns, stream


async def test_a_transaction_open_across_the_cut_lands_in_the_next_increment(
    pool: Any, seaweed: SeaweedS3
) -> None:
    """A transaction stores its rows at its start: when it is the oldest open one, the cut is
    its start, and its rows (read before they commit) must fall after the stretch, in the next
    increment, not be lost between the two."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    await _apply(pool, _conversation("acme", 1, "a" * 64))
    late = _conversation("acme", 2, "b" * 64)
    effects = [process_message(decode_event(orjson.dumps(doc))) for doc in late]
    async with pool.acquire() as open_one:
        transaction = open_one.transaction()
        await transaction.start()
        await write_effects(open_one, [e for e in effects if e is not None])
        first = await export_due(pool, store, now=_later(), settle=timedelta(0))
        await transaction.commit()
    assert first is not None
    assert {(i.stream, i.rows) for i in first} == {
        ("examples", 2), ("feedback", 1), ("responses", 1)}
    second = await export_due(pool, store, now=_later(), settle=timedelta(0))
    assert second is not None
    assert {(i.stream, i.rows) for i in second} == {
        ("examples", 2), ("feedback", 1), ("responses", 1)}
    objects = _objects(store)
    for increment in second:
        rows = [orjson.loads(x) for x in objects[increment.keys[0]].splitlines()]
        assert {row["response_id"] for row in rows} == {"r2"}
        assert increment.since == next(i.until for i in first if i.stream == increment.stream)


async def test_a_second_attempt_at_a_stretch_writing_fewer_parts_deletes_the_others(
    pool: Any, seaweed: SeaweedS3
) -> None:
    """A run wrote its increments and stopped before its watermark moved; then a user opted
    out. The next run writes the same stretch again (same end, read from the manifest) in
    fewer parts: the parts past them are gone, every data file is one a manifest names."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    await _apply(pool, [doc for n in range(7) for doc in _conversation("acme", n, f"{n}" * 64)])
    first = await export_due(pool, store, now=_later(), settle=timedelta(0), part_rows=3)
    assert first is not None
    feedback = next(i for i in first if i.stream == "feedback")
    assert sum(key.endswith(".jsonl") for key in feedback.keys) == 3
    await pool.execute("DELETE FROM trainer.object_exports")
    await _apply(pool, [_doc("user.consent_changed", "acme", "0" * 64,
                             {"training_allowed": False}, 30)])
    again = await export_due(pool, store, now=_later(), settle=timedelta(0), part_rows=3)
    assert again is not None
    resumed = next(i for i in again if i.stream == "feedback")
    assert resumed.keys[-1] == feedback.keys[-1], "the same stretch, under the same names"
    assert sum(key.endswith(".jsonl") for key in resumed.keys) == 2
    objects = _objects(store)
    assert not any(".part-00003." in key for key in objects if "/feedback/" in key)
    assert set(objects) == _named(objects) | {k for k in objects if k.endswith(".manifest.json")}


async def test_a_second_attempt_that_stops_halfway_leaves_no_manifest_and_an_erasure_deletes_its_parts(
    pool: Any, seaweed: SeaweedS3
) -> None:
    """A second attempt at a stretch deletes the earlier manifest before it writes a part
    again, so no manifest names a file its ids do not describe; it stops after its first part
    (a row it cannot read). A third attempt finds no manifest: it takes the end from the
    parts' names, so the stretch keeps the first attempt's names and no rows of it go out
    under two. Another attempt that stops halfway leaves data files no manifest names: an
    erasure deletes them before it marks itself applied, and the next run writes the stretch
    again, without the erased user's examples."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    erased = "e" * 64
    await _apply(pool, [*_conversation("acme", 1, erased),
                        *(doc for n in range(2, 6) for doc in _conversation("acme", n, f"{n}" * 64))])
    first = await export_due(pool, store, now=_later(), settle=timedelta(0), part_rows=3)
    assert first is not None
    examples = next(i for i in first if i.stream == "examples")
    part_one = _objects(store)[examples.keys[0]]
    client = store.client()

    async def stop_halfway() -> None:
        await pool.execute("DELETE FROM trainer.object_exports WHERE stream = 'examples'")
        await pool.execute("UPDATE trainer.examples SET record = record - 'provenance' "
                           "WHERE example_id = $1", last)
        obstore.put(client, examples.keys[0], b"stale")
        with pytest.raises(KeyError, match="provenance"):
            await export_due(pool, store, now=_later(), settle=timedelta(0), part_rows=3)
        await pool.execute("UPDATE trainer.examples SET record = record || jsonb_build_object("
                           "'provenance', '{}'::jsonb) WHERE example_id = $1", last)

    last = await pool.fetchval("SELECT example_id FROM trainer.examples "
                               "ORDER BY updated_at DESC, example_id DESC LIMIT 1")
    await stop_halfway()
    objects = _objects(store)
    assert examples.keys[-1] not in objects, "the earlier manifest went before its parts"
    assert objects[examples.keys[0]] == part_one, "the first part was written again"
    third = await export_due(pool, store, now=_later(), settle=timedelta(0), part_rows=3)
    assert third is not None
    resumed = next(i for i in third if i.stream == "examples")
    assert resumed.keys == examples.keys, "the first attempt's names, read from its parts'"
    assert resumed.rows == examples.rows
    assert {key for key in _objects(store) if "/examples/" in key} == set(examples.keys)

    await stop_halfway()
    await _apply(pool, [_doc("user.erasure_requested", "acme", erased, {}, 40)])
    rewrites = await erase_exported(pool, store)
    assert sorted((r.stream, r.rows_removed) for r in rewrites) == [
        ("feedback", 1), ("responses", 1)], "the user's rows the manifests named"
    objects = _objects(store)
    assert not any("/examples/" in key for key in objects), "parts no manifest names"
    assert erased.encode() not in b"".join(objects.values())
    assert set(objects) == _named(objects) | {k for k in objects if k.endswith(".manifest.json")}
    assert await pool.fetchval(
        "SELECT bool_and(objects_erased_for = erased_at) FROM trainer.erased_users") is True
    again = await export_due(pool, store, now=_later(), settle=timedelta(0), part_rows=3)
    assert again is not None
    resumed = next(i for i in again if i.stream == "examples")
    assert resumed.since == examples.since and resumed.rows == examples.rows - 2


async def test_an_old_event_manifest_read_in_full_once_gets_a_filter_the_next_erasure_uses(
    pool: Any, seaweed: SeaweedS3
) -> None:
    """`feedback` and `responses` manifests written before parts (version 1, no filter) are
    read in full by the first erasure, which writes them again with their part's filter; the
    next erasure reads them by that filter: it skips a part whose files were made unreadable
    when the filter proves the user is not in it, and finds the user whose rows are. An
    `examples` manifest written before parts is checked by its ids, never downloaded whole."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    first_erased, second_erased, kept = "e" * 64, "s" * 64, "k" * 64
    await _apply(pool, [*_conversation("acme", 1, first_erased),
                        *_conversation("acme", 2, second_erased),
                        *_conversation("acme", 3, kept)])
    await export_due(pool, store, now=_later(), settle=timedelta(0))
    await _apply(pool, _conversation("acme", 4, kept))
    await export_due(pool, store, now=_later(), settle=timedelta(0))
    client = store.client()
    for key, body in _objects(store).items():
        if key.endswith(".manifest.json"):
            manifest = orjson.loads(body)
            del manifest["parts"]
            obstore.put(client, key, orjson.dumps(manifest | {"manifest_version": 1}))
    await _apply(pool, [_doc("user.erasure_requested", "acme", first_erased, {}, 40)])
    await export_due(pool, store, now=_later(), settle=timedelta(0))
    objects = _objects(store)
    manifests = {key: orjson.loads(body) for key, body in objects.items()
                 if key.endswith(".manifest.json") and "/examples/" not in key}
    assert len(manifests) == 4
    for key, manifest in manifests.items():
        assert manifest["manifest_version"] == 2 and len(manifest["parts"]) == 1, key
        assert "users" in manifest["parts"][0]
    untouched = {}
    for key, body in objects.items():
        if key.endswith(".jsonl") and second_erased.encode() not in body and (
                b'"response_id":"r2"' not in body):
            untouched[key] = b"{not json"
            obstore.put(client, key, untouched[key])
    assert len(untouched) == 3, "the second increment's examples, feedback and response"
    # Its examples manifest is still version 1 (nothing erased in it): checked by its ids.
    second_examples = [manifest for key, body in objects.items() if "/examples/" in key
                       and key.endswith(".manifest.json") and "/19700101T" not in key
                       and (manifest := orjson.loads(body))["ids"]]
    assert len(second_examples) == 1 and "parts" not in second_examples[0]
    await _apply(pool, [_doc("user.erasure_requested", "acme", second_erased, {}, 41)])
    assert await export_due(pool, store, now=_later(), settle=timedelta(0)) is not None
    after = _objects(store)
    assert {key: after[key] for key in untouched} == untouched
    assert second_erased.encode() not in b"".join(after.values())
    assert kept.encode() in b"".join(after[k] for k in after if k not in untouched)
    assert await pool.fetchval(
        "SELECT bool_and(objects_erased_for = erased_at) FROM trainer.erased_users") is True


async def test_a_column_added_to_a_table_is_not_exported_and_stops_nothing(
    pool: Any, seaweed: SeaweedS3
) -> None:
    """A column the schema does not name (a later ALTER TABLE) is simply not read: the export
    and the erasure rewrite go on. When an increment does fail, the erasure is still applied
    to the objects before the failure is raised."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    erased = "e" * 64
    await _apply(pool, [*_conversation("acme", 1, erased), *_conversation("acme", 2, "k" * 64)])
    await pool.execute("ALTER TABLE trainer.feedback ADD COLUMN mood text DEFAULT 'calm'")
    await pool.execute("ALTER TABLE trainer.responses ADD COLUMN cost numeric DEFAULT 1.5")
    await reset_after_schema_change(pool)  # as the consumers do after a schema change
    done = await export_due(pool, store, now=_later(), settle=timedelta(0))
    assert done is not None
    assert {(i.stream, i.rows) for i in done} == {
        ("examples", 4), ("feedback", 2), ("responses", 2)}
    objects = _objects(store)
    for increment in done:
        rows = [orjson.loads(line) for line in objects[increment.keys[0]].splitlines()]
        assert not {"mood", "cost"} & {key for row in rows for key in row}
        assert pq.read_schema(io.BytesIO(objects[increment.keys[1]])).remove_metadata() == \
            stream_schema(increment.stream)

    # Then an increment fails (a row it cannot read): the erasure is applied all the same.
    await _apply(pool, [*_conversation("acme", 3, "k" * 64),
                        _doc("user.erasure_requested", "acme", erased, {}, 40)])
    await pool.execute("UPDATE trainer.examples SET record = record - 'provenance'")
    with pytest.raises(KeyError, match="provenance"):
        await export_due(pool, store, now=_later(), settle=timedelta(0))
    after = _objects(store)
    assert erased.encode() not in b"".join(after.values())
    assert {key for key in after if after[key] != objects.get(key)} >= {
        next(i for i in done if i.stream == "feedback").keys[0]}, "rewritten without the user"
    assert await pool.fetchval(
        "SELECT bool_and(objects_erased_for = erased_at) FROM trainer.erased_users") is True


async def test_json_columns_hold_json_text_of_every_value_and_text_columns_strings(
    pool: Any, seaweed: SeaweedS3
) -> None:
    """A JSON column's every value reads back with json.loads, a string included, so the
    string "[1]" and the list [1] stay apart; the examples' completions are text."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    await _apply(pool, [*_conversation("acme", 1, "a" * 64), *_conversation("acme", 2, "b" * 64)])
    await pool.execute("""UPDATE trainer.responses SET action_data = CASE response_id
        WHEN 'r1' THEN '"[1]"'::jsonb ELSE '[1]'::jsonb END""")
    done = await export_due(pool, store, now=_later(), settle=timedelta(0))
    assert done is not None
    objects = _objects(store)
    tables = {i.stream: pq.read_table(io.BytesIO(objects[i.keys[1]])).to_pylist() for i in done}
    action_data = {row["response_id"]: row["action_data"] for row in tables["responses"]}
    assert action_data == {"r1": '"[1]"', "r2": "[1]"}
    assert [orjson.loads(action_data[r]) for r in ("r1", "r2")] == ["[1]", [1]]
    for row in tables["examples"]:
        assert isinstance(row["completion"], str) and row["completion"].startswith("Added item")
        assert isinstance(orjson.loads(row["prompt"]), list)
        assert isinstance(orjson.loads(row["provenance"]), dict)


async def test_the_cut_is_the_database_clock_less_the_settle_time(pool: Any) -> None:
    """The present is the database's, read in the cut's statement: a caller's clock ahead of
    it never moves the cut past it."""
    async with pool.acquire() as lock:
        before = await lock.fetchval("SELECT clock_timestamp()")
        cut = await _export_cut(lock, now=None, settle=timedelta(0))
        ahead = await _export_cut(lock, now=datetime(2100, 1, 1, tzinfo=UTC),
                                  settle=timedelta(0))
        after = await lock.fetchval("SELECT clock_timestamp()")
        settled = await _export_cut(lock, now=None, settle=timedelta(hours=1))
    assert before - timedelta(microseconds=1) <= cut < after
    assert ahead < after
    assert settled < before - timedelta(minutes=59)


async def test_a_tenant_id_with_a_slash_gets_a_folder_of_its_own(
    pool: Any, seaweed: SeaweedS3
) -> None:
    """`acme/feedback` is not a folder inside `acme`'s; "%" is encoded too, so `a%2Fb` and
    `a/b` stay apart; an id without either keeps its name."""
    store = _store(seaweed, f"t-{uuid.uuid4().hex[:8]}")
    tenants = ["acme", "acme/feedback", "a/b", "a%2Fb"]
    await _apply(pool, [doc for n, tenant in enumerate(tenants)
                        for doc in _conversation(tenant, n, f"{n}" * 64)])
    done = await export_due(pool, store, now=_later(), settle=timedelta(0))
    assert done is not None and len(done) == 12
    folders = {"acme": "acme", "acme/feedback": "acme%2Ffeedback", "a/b": "a%2Fb",
               "a%2Fb": "a%252Fb"}
    objects = _objects(store)
    for increment in done:
        for key in increment.keys:
            assert key.startswith(
                f"{store.prefix}/{folders[increment.tenant_id]}/{increment.stream}/"), key
    for key, body in objects.items():
        if key.endswith(".manifest.json"):
            tenant = key.removeprefix(store.prefix + "/").split("/")[0]
            assert folders[orjson.loads(body)["tenant_id"]] == tenant, key
    assert len(objects) == 4 * 3 * 3


async def test_migration_0025_keeps_its_own_indexes_and_refuses_others_under_their_names(
    pool: Any
) -> None:
    """Run again over the indexes it built (as over ones an operator built first, the same),
    0025 passes; an index of one of its names with another definition, or INVALID, stops it
    with what to do."""
    sql = next(m.sql for m in available_migrations() if m.version == 25)
    async with pool.acquire() as connection:
        await connection.execute(sql)
        await connection.execute(
            "DROP INDEX trainer.trainer_feedback_by_stored_event; "
            "CREATE INDEX trainer_feedback_by_stored_event ON trainer.feedback (tenant_id, stored_at)")
        with pytest.raises(asyncpg.RaiseError, match=r"trainer_feedback_by_stored_event is "
                           r"\"CREATE INDEX .*\(tenant_id, stored_at\)\", not"):
            await connection.execute(sql)
        await connection.execute(
            "DROP INDEX trainer.trainer_feedback_by_stored_event; CREATE INDEX "
            "trainer_feedback_by_stored_event ON trainer.feedback (tenant_id, stored_at, event_id)")
        await connection.execute(
            "UPDATE pg_index SET indisvalid = false "
            "WHERE indexrelid = 'trainer.trainer_responses_by_stored_response'::regclass")
        with pytest.raises(asyncpg.RaiseError, match="trainer_responses_by_stored_response "
                           "is INVALID"):
            await connection.execute(sql)
