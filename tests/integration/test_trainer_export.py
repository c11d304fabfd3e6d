"""Exports against real PostgreSQL: `feedbackloop export` writes a file that validates, and the
query service's endpoint streams the same JSONL, scoped to the key's tenant and filtered."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from feedbackloop.contract import decode_event
from feedbackloop.http.auth import ApiKeyVerifier
from feedbackloop.http.problems import install_problem_handlers
from feedbackloop.postgres import create_pool
from feedbackloop.settings import Settings
from services.cli.admin import create_key
from services.cli.export import add_export_parser, run_export
from services.query.deps import QueryState
from services.query.training import router
from services.trainer.exports.formats import validate_lines
from services.trainer.handlers import write_effects
from services.trainer.processing import process_message

pytestmark = pytest.mark.integration


def _events(tenant: str, count: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for n in range(count):
        base = {"tenant_id": tenant, "received_at": "2026-11-20T12:00:00Z",
                "user_id": f"{n:064x}", "session_id": f"chat-{n}"}
        docs.append(base | {
            "event_id": str(uuid.uuid4()), "type": "response.logged",
            "occurred_at": "2026-11-20T10:00:00Z",
            "payload": {"response_id": f"r{n}", "model": "gpt-4o-mini" if n % 3 else "llama",
                        "action_type": "todo" if n % 2 else "email",
                        "prompt": [{"role": "user", "content": f"Plan step {n} for jo{n}@ex.com"}],
                        "output": f"Step {n}: do the thing number {n}."},
        })
        docs.append(base | {
            "event_id": str(uuid.uuid4()), "type": "feedback.submitted",
            "occurred_at": f"2026-11-{1 + n:02d}T10:00:00Z",
            "payload": {"response_id": f"r{n}", "rating": 5 if n % 4 else 2},
        })
    return docs


@pytest.fixture(scope="module")
async def database(postgres_url: str) -> AsyncIterator[str]:
    from tests.infra import create_database

    url = await create_database(postgres_url)
    pool = await create_pool(url, min_size=1, max_size=1)
    effects = [
        process_message(decode_event(orjson.dumps(doc)))
        for doc in _events("acme", 24) + _events("globex", 3)
    ]
    async with pool.acquire() as connection, connection.transaction():
        await write_effects(connection, [effect for effect in effects if effect is not None])
    await pool.close()
    yield url


def _cli_arguments(*argv: str) -> Any:
    import argparse

    parser = argparse.ArgumentParser(prog="feedbackloop")
    add_export_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["export", *argv])


def test_cli_writes_a_valid_openai_file(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(database_url=database)
    out = tmp_path / "train.jsonl"
    status = run_export(
        _cli_arguments("--tenant", "acme", "--format", "openai-sft", "--since", "2026-11-03",
                       "--out", str(out)),
        settings,
    )
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    # Ratings 5 (n % 4 != 0) on 18 of 24 responses give SFT examples; --since drops n = 1.
    assert status == 0, capsys.readouterr().err
    assert len(lines) == 17
    assert validate_lines(lines, "openai-sft").valid
    assert all("@ex.com" not in line["messages"][0]["content"] for line in lines)
    err = capsys.readouterr().err
    assert "17/17 examples" in err and f"wrote 17 examples to {out}" in err

    few = tmp_path / "few.jsonl"
    status = run_export(
        _cli_arguments("--tenant", "globex", "--format", "openai-sft", "--out", str(few)), settings
    )
    assert status == 1  # 2 examples: written, but OpenAI needs 10
    assert len(few.read_bytes().splitlines()) == 2
    assert "at least 10 examples" in capsys.readouterr().err


@pytest.fixture(scope="module")
async def query(database: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    pool = await create_pool(database, min_size=1, max_size=2)
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(router)
    app.state.query = QueryState(
        pool=pool, verifier=ApiKeyVerifier(pool, cache_seconds=0), hmac_secret=b"x" * 32
    )
    _, key = await create_key(database, tenant_id="acme", name="ml", scopes=["read"])
    _, ingest_only = await create_key(database, tenant_id="acme", name="in", scopes=["ingest"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://query", headers={"Authorization": f"Bearer {key}"}
    ) as client:
        yield client, ingest_only
    await pool.close()


async def test_endpoint_streams_the_tenants_jsonl_with_filters(
    query: tuple[httpx.AsyncClient, str],
) -> None:
    client, ingest_only = query
    response = await client.get("/v1/training/export", params={"format": "trl-kto"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jsonl"
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert len(lines) == 24  # acme only: one KTO row per rated response
    assert [line["label"] for line in lines].count(False) == 6
    assert validate_lines(lines, "trl-kto").valid

    filtered = await client.get("/v1/training/export", params={
        "format": "raw", "action_type": "todo", "model": "gpt-4o-mini", "min_quality": 1.0,
        "from": "2026-11-05T00:00:00Z", "to": "2026-11-20T00:00:00Z",
    })
    documents = [orjson.loads(line) for line in filtered.content.splitlines()]
    assert documents and all(
        d["provenance"]["action_type"] == "todo" and d["provenance"]["model"] == "gpt-4o-mini"
        and d["quality"] == 1.0 and d["tenant_id"] == "acme" for d in documents
    )
    responses = {d["response_id"] for d in documents}
    expected = {f"r{n}" for n in range(4, 19) if n % 2 and n % 3 and n % 4}
    assert responses == expected

    forbidden = await client.get("/v1/training/export", params={"format": "raw"},
                                 headers={"Authorization": f"Bearer {ingest_only}"})
    assert forbidden.status_code == 403
    backwards = await client.get("/v1/training/export", params={
        "format": "raw", "from": "2026-11-05T00:00:00Z", "to": "2026-11-01T00:00:00Z"})
    assert backwards.status_code == 422


def _manifest_checks(manifest: dict[str, Any], lines: int, data_files: list[Path],
                     root: Path) -> None:
    import hashlib

    assert manifest["counts"]["examples"] == lines == len(manifest["examples"])
    assert [e["line"] for e in manifest["examples"]] == list(range(1, lines + 1))
    assert len({e["example_id"] for e in manifest["examples"]}) == lines
    assert all(e["source_event_ids"] and e["revision"] >= 1 for e in manifest["examples"])
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    for path in data_files:
        assert listed[str(path.relative_to(root))] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_parquet_and_a_manifest_with_the_kto_balance(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "kto.parquet"
    status = run_export(_cli_arguments("--tenant", "acme", "--format", "trl-kto", "--out",
                                       str(out)), Settings(database_url=database))
    err = capsys.readouterr().err
    assert status == 0, err
    table = pq.read_table(out).to_pylist()
    manifest = orjson.loads((tmp_path / "kto.parquet.manifest.json").read_bytes())
    _manifest_checks(manifest, len(table), [out], tmp_path)
    labels = [row["label"] for row in table]
    # Ratings 5 on 18 responses are desirable, ratings 2 on 6 undesirable.
    assert manifest["kto"]["desirable"] == labels.count(True) == 18
    assert manifest["kto"]["undesirable"] == labels.count(False) == 6
    weights = manifest["kto"]["trl"]
    assert weights["desirable_weight"] * 18 / (weights["undesirable_weight"] * 6) == 1.0
    assert [e["label"] for e in manifest["examples"]] == labels
    evaluated = manifest["counts"]["by_split"].get("eval", 0)
    assert evaluated < 100 and any("eval split holds" in w for w in manifest["warnings"]) \
        == bool(evaluated)
    assert "KTO balance" in err


def test_a_hugging_face_dataset_directory_with_a_card(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datasets import load_from_disk

    out = tmp_path / "dataset"
    status = run_export(_cli_arguments("--tenant", "acme", "--format", "trl-kto", "--as",
                                       "hf-dataset", "--out", str(out)),
                        Settings(database_url=database))
    assert status == 0, capsys.readouterr().err
    loaded = load_from_disk(str(out))
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert {split: len(loaded[split]) for split in loaded} == manifest["counts"]["by_split"]
    assert set(loaded[next(iter(loaded))].column_names) == {"prompt", "completion", "label"}
    data = [path for path in out.rglob("*") if path.is_file()
            and path.name not in ("manifest.json", "README.md")]
    _manifest_checks(manifest, sum(len(loaded[s]) for s in loaded), data, out)
    card = (out / "README.md").read_text()
    assert "trl-kto" in card and "Personal data" in card and "not every name" in card


def test_export_through_the_api_from_another_machine_gives_the_same_file(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import threading
    import time

    import uvicorn

    from feedbackloop.embedded import free_port

    async def build() -> tuple[FastAPI, str]:
        pool = await create_pool(database, min_size=1, max_size=2)
        app = FastAPI()
        install_problem_handlers(app)
        app.include_router(router)
        app.state.query = QueryState(pool=pool, verifier=ApiKeyVerifier(pool, cache_seconds=0),
                                     hmac_secret=b"x" * 32)
        _, key = await create_key(database, tenant_id="acme", name="remote", scopes=["read"])
        return app, key

    port = free_port()
    holder: dict[str, Any] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        app, holder["key"] = loop.run_until_complete(build())
        holder["server"] = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                         log_level="warning"))
        loop.run_until_complete(holder["server"].serve())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (holder.get("server") and holder["server"].started):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
        settings = Settings(database_url=database)
        assert run_export(_cli_arguments("--tenant", "acme", "--format", "openai-sft", "--out",
                                         str(local)), settings) == 0
        assert run_export(_cli_arguments("--format", "openai-sft", "--out", str(remote),
                                         "--url", f"http://127.0.0.1:{port}",
                                         "--key", holder["key"]), Settings()) == 0
        assert remote.read_bytes() == local.read_bytes()
        wrong = run_export(_cli_arguments("--format", "openai-sft", "--out", str(remote),
                                          "--url", f"http://127.0.0.1:{port}", "--key", "nope"),
                           Settings())
        assert wrong == 2 and "answered 401" in capsys.readouterr().err
    finally:
        holder["server"].should_exit = True
        thread.join(10)


def test_a_snapshot_exports_the_same_bytes_later_less_opt_outs_and_erasures(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from tests.infra import create_database

    async def seed(docs: list[dict[str, Any]], url: str | None = None) -> str:
        url = url or await create_database(postgres_url)
        pool = await create_pool(url, min_size=1, max_size=1)
        effects = [process_message(decode_event(orjson.dumps(doc))) for doc in docs]
        async with pool.acquire() as connection, connection.transaction():
            await write_effects(connection, [e for e in effects if e is not None])
        await pool.close()
        return url

    events = _events("acme", 12)
    database = asyncio.run(seed(events))
    settings = Settings(database_url=database)
    for export_format in ("raw", "trl-kto"):
        first = tmp_path / f"{export_format}-first.jsonl"
        assert run_export(_cli_arguments("--tenant", "acme", "--format", export_format,
                                         "--snapshot", "--out", str(first)), settings) == 0
        manifest = orjson.loads((tmp_path / f"{first.name}.manifest.json").read_bytes())
        snapshot_id = manifest["snapshot"]["id"]
        assert manifest["snapshot"]["lines"] == manifest["counts"]["examples"] > 0
        again = tmp_path / f"{export_format}-again.jsonl"
        assert run_export(_cli_arguments("--from-snapshot", snapshot_id, "--out", str(again)),
                          settings) == 0
        assert again.read_bytes() == first.read_bytes()

    # New feedback, an opt-out and an erasure later, the snapshot gives the same lines less
    # the two users', and its manifest says which and why.
    opted, erased = events[2]["user_id"], events[4]["user_id"]
    asyncio.run(seed([
        events[0] | {"event_id": str(uuid.uuid4()), "type": "feedback.submitted",
                     "occurred_at": "2026-11-30T10:00:00Z",
                     "payload": {"response_id": "r0", "rating": 1}},
        {"event_id": str(uuid.uuid4()), "type": "user.consent_changed", "tenant_id": "acme",
         "occurred_at": "2026-11-30T10:00:00Z", "received_at": "2026-11-30T10:00:00Z",
         "user_id": opted, "payload": {"training_allowed": False}},
        {"event_id": str(uuid.uuid4()), "type": "user.erasure_requested", "tenant_id": "acme",
         "occurred_at": "2026-11-30T10:00:00Z", "received_at": "2026-11-30T10:00:00Z",
         "user_id": erased, "payload": {}},
    ], database))
    later = tmp_path / "later.jsonl"
    assert run_export(_cli_arguments("--from-snapshot", snapshot_id, "--out", str(later)),
                      settings) == 0
    original = (tmp_path / "trl-kto-first.jsonl").read_bytes().splitlines()
    removed = orjson.loads((tmp_path / "later.jsonl.manifest.json").read_bytes())["snapshot"][
        "removed"]
    assert sorted(r["reason"] for r in removed) == ["erasure", "opt_out"]
    gone = {r["line"] for r in removed}
    assert later.read_bytes().splitlines() == [
        line for number, line in enumerate(original, start=1) if number not in gone]
    assert "left out since" in capsys.readouterr().err
