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

import obstore
import orjson
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from feedbackloop.contract import decode_event
from feedbackloop.embedded import SeaweedS3, free_port, free_seaweed_ports
from feedbackloop.observability import JobMetrics
from feedbackloop.pipeline.jobs import JobRunner
from feedbackloop.postgres import create_pool
from services.trainer.exports.object_exports import ErasureRewriteFailed, ObjectStore, export_due
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
    `feedback` (no manifest, the watermark not moved) is done again by the next, which names
    a later end: its parts hold every row once, and the stopped run's parts are gone."""
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
    objects = _objects(store)
    assert set(objects) == _named(objects) | {k for k in objects if k.endswith(".manifest.json")}
    assert not any(key.startswith(feedback.keys[0].rsplit(".part-", 1)[0]) for key in objects)
    for stream, table in (("feedback", "trainer.feedback"), ("responses", "trainer.responses")):
        ids = [row.get("event_id") for key, body in sorted(objects.items())
               if f"/{stream}/" in key and key.endswith(".jsonl")
               for row in map(orjson.loads, body.splitlines())]
        assert sorted(ids) == sorted(str(row["event_id"]) for row in await pool.fetch(
            f"SELECT event_id FROM {table}")), f"{stream}: every row exactly once"
    resumed = {i.stream: i for i in again}
    assert [p["rows"] for p in orjson.loads(objects[resumed["feedback"].keys[-1]])["parts"]] == [
        3, 3, 2]
    assert resumed["feedback"].since == feedback.since
    assert resumed["examples"].rows == 2, "examples went on from where they had reached"


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
