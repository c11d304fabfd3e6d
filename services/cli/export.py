"""`feedbackloop export`: training examples to a file an ML engineer can train on.

    feedbackloop export --tenant acme --format openai-sft --split train --since 2026-11-01 \\
        --out train.jsonl
    feedbackloop export --tenant acme --format trl-kto --out kto.parquet
    feedbackloop export --tenant acme --format trl-preference --as hf-dataset --out dpo/
    feedbackloop export --tenant acme --format eval-cases --split eval --out eval.jsonl \\
        --url http://query:8001 --key $READ_KEY

Writes the tenant's stored examples (PII already redacted, duplicates and opted-out users
already left out) in the chosen format, as JSONL, Parquet or a Hugging Face dataset directory,
with a progress bar on stderr, and a manifest beside it (per line: the example id, revision,
split, quality and source events; the filters, counts, sha256 of every file, KTO balance and
warnings; see `services.trainer.exports.manifest`). Then checks every line against the format's
rules (see `services.trainer.exports.formats`). Reads the database, or with `--url` and `--key` the
query service's API from another machine. Exit status 0 when the file is valid, 1 when it was
written but breaks a rule (say, fewer than 10 examples for OpenAI), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from feedbackloop.postgres import create_pool
from feedbackloop.settings import Settings
from services.cli.export_files import OUTPUT_KINDS, open_output
from services.cli.local_system import missing
from services.trainer import reads as trainer
from services.trainer.exports import snapshots
from services.trainer.exports.formats import (
    CONTEXT_MODES,
    EXPORT_FORMATS,
    FORMAT_KINDS,
    file_errors,
    format_example,
    line_errors,
)
from services.trainer.exports.manifest import ExportManifest


def _timestamp(value: str) -> datetime:
    """ISO 8601 date or time; without a zone it is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds `export` to the `feedbackloop` command's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export", help="export training examples as JSONL",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tenant", default=None,
                        help="the tenant whose examples to export (with --url: the key's)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, dest="export_format",
                        help="the export format (with --from-snapshot: the snapshot's)")
    parser.add_argument("--split", choices=("train", "eval"), default=None,
                        help="train or eval (default: both)")
    parser.add_argument("--since", type=_timestamp, default=None,
                        help="feedback at or after this time (ISO 8601)")
    parser.add_argument("--until", type=_timestamp, default=None,
                        help="feedback before this time (ISO 8601)")
    parser.add_argument("--action-type", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--min-quality", type=float, default=None,
                        help="minimum signal strength, 0-1 (0.75: thumbs and ratings 2 and 4)")
    parser.add_argument("--out", required=True, type=Path,
                        help="the file (or, with --as hf-dataset, the directory) to write")
    parser.add_argument("--as", choices=OUTPUT_KINDS, default=None, dest="output_kind",
                        help="jsonl (default), parquet (default for a .parquet --out) or "
                        "hf-dataset (a datasets.save_to_disk directory with a dataset card)")
    parser.add_argument("--context", choices=CONTEXT_MODES, default="none",
                        help="system: put the retrieved documents in a system message of the "
                        "prompt (chat formats)")
    parser.add_argument("--snapshot", action="store_true",
                        help="keep what this export writes as a snapshot (its id is in the "
                        "manifest) that --from-snapshot exports again, byte for byte")
    parser.add_argument("--from-snapshot", type=uuid.UUID, default=None,
                        help="export a snapshot again: its format, filters and examples, less "
                        "those of users who opted out or were erased since")
    parser.add_argument("--url", default=None,
                        help="export through this query service's API instead of the database")
    parser.add_argument("--key", default=None, help="a read key for --url")
    return parser


class ProgressBar:
    """A one-line progress bar, redrawn at most ten times a second."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total, self.stream, self.width = total, stream, width
        self.done = 0
        self._drawn_at = 0.0

    def advance(self, count: int = 1) -> None:
        self.done += count
        if time.monotonic() - self._drawn_at >= 0.1:
            self.draw()

    def draw(self) -> None:
        self._drawn_at = time.monotonic()
        if not self.total:  # not known ahead (through the API)
            self.stream.write(f"\r{self.done} examples")
            self.stream.flush()
            return
        filled = round(self.width * min(self.done / self.total, 1.0))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} examples")
        self.stream.flush()

    def close(self) -> None:
        self.draw()
        self.stream.write("\n")


async def _documents_from_database(
    database_url: str, selection: trainer.ExampleFilter, export_format: str,
    progress: ProgressBar, tally: trainer.ExportTally,
) -> AsyncIterator[dict[str, Any]]:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection:
            narrowed = trainer.selection_for(selection, export_format)
            progress.total = await trainer.count_examples(connection, selection=narrowed)
            async with connection.transaction(readonly=True):
                async for document in trainer.published_documents(connection, selection=narrowed):
                    tally.read += 1
                    yield document
    finally:
        await pool.close()


async def _documents_from_api(
    arguments: argparse.Namespace, export_format: str, tally: trainer.ExportTally
) -> AsyncIterator[dict[str, Any]]:
    """The examples as the query service exports them raw, narrowed here to the format's kinds."""
    params = {name: value for name, value in {
        "format": "raw", "split": arguments.split,
        "from": arguments.since.isoformat() if arguments.since else None,
        "to": arguments.until.isoformat() if arguments.until else None,
        "action_type": arguments.action_type, "model": arguments.model,
        "min_quality": arguments.min_quality,
    }.items() if value is not None}
    kinds = FORMAT_KINDS[export_format]
    headers = {"Authorization": f"Bearer {arguments.key}"}
    async with httpx.AsyncClient(base_url=arguments.url, headers=headers, timeout=60) as client:
        async with client.stream("GET", "/v1/training/export", params=params) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                raise ExportFailed(f"the query service answered {response.status_code}: {body[:500]}")
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                document = orjson.loads(line)
                if kinds and document.get("kind") not in kinds:
                    continue
                tally.read += 1
                yield document


class ExportFailed(Exception):
    pass


async def _export(arguments: argparse.Namespace, database_url: str, stderr: TextIO) -> int:
    tally = trainer.ExportTally()
    progress = ProgressBar(0, stderr)
    snapshot: dict[str, Any] | None = None
    documents: AsyncIterator[dict[str, Any]]
    if arguments.from_snapshot:
        loaded = await _snapshot_documents(database_url, arguments.from_snapshot)
        if loaded is None:
            stderr.write(f"no snapshot {arguments.from_snapshot}\n")
            return 2
        header, kept, removed = loaded
        arguments.export_format = header.export_format
        arguments.context = header.filters.get("context", "none")
        filters = header.filters
        snapshot = {"id": str(header.snapshot_id), "created_at": header.created_at.isoformat(),
                    "lines": header.lines, "removed": removed}
        documents = _replayed(kept, progress, tally)
    else:
        filters = _filters(arguments)
        documents = (
            _documents_from_api(arguments, arguments.export_format, tally) if arguments.url
            else _documents_from_database(database_url, _selection(arguments),
                                          arguments.export_format, progress, tally)
        )
    export_format = arguments.export_format
    output = open_output(arguments.output_kind, arguments.out)
    manifest = ExportManifest(export_format, filters=filters)
    written: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        async for document in documents:
            line = format_example(document, export_format, context=arguments.context)
            progress.advance()
            if line is None:
                tally.skipped += 1
                continue
            manifest.add(document)
            output.add(document, line)
            written.append(document)
            errors += [f"line {len(written)}: {error}" for error in line_errors(line, export_format)]
    except ExportFailed as failure:
        stderr.write(f"\n{failure}\n")
        return 2
    progress.close()
    if arguments.snapshot:
        snapshot = await _keep_snapshot(database_url, filters, export_format, written)
    manifest.skipped = tally.skipped
    described = manifest.describe(created_at=datetime.now(UTC), files=output.close(),
                                  snapshot=snapshot)
    output.describe(described)
    return _report(arguments, described, output.manifest_path,
                   errors + file_errors(len(written), export_format), stderr)


def _report(arguments: argparse.Namespace, described: dict[str, Any], manifest_path: Path,
            errors: list[str], stderr: TextIO) -> int:
    skipped = described["counts"]["skipped"]
    stderr.write(
        f"wrote {described['counts']['examples']} examples to {arguments.out}"
        + (f" ({skipped} not representable in {described['format']})" if skipped else "")
        + f"; manifest {manifest_path}\n"
    )
    if described.get("snapshot"):
        snapshot = described["snapshot"]
        stderr.write(f"snapshot {snapshot['id']} ({len(snapshot['removed'])} line(s) of it "
                     "left out since: opted out or erased)\n")
    if "kto" in described:
        stderr.write(f"KTO balance: {orjson.dumps(described['kto']).decode()}\n")
    for warning in described["warnings"]:
        stderr.write(f"warning: {warning}\n")
    if errors:
        stderr.write("the file breaks the format's rules:\n")
        for error in errors[:20]:
            stderr.write(f"  {error}\n")
        return 1
    return 0


def _selection(arguments: argparse.Namespace) -> trainer.ExampleFilter:
    return trainer.ExampleFilter(
        tenant_id=arguments.tenant, split=arguments.split, since=arguments.since,
        until=arguments.until, action_type=arguments.action_type, model=arguments.model,
        min_quality=arguments.min_quality,
    )


async def _replayed(
    documents: list[dict[str, Any]], progress: ProgressBar, tally: trainer.ExportTally
) -> AsyncIterator[dict[str, Any]]:
    progress.total = len(documents)
    for document in documents:
        tally.read += 1
        yield document


async def _snapshot_documents(
    database_url: str, snapshot_id: uuid.UUID
) -> tuple[snapshots.Snapshot, list[dict[str, Any]], list[dict[str, Any]]] | None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection:
            return await snapshots.load_snapshot(connection, snapshot_id)
    finally:
        await pool.close()


async def _keep_snapshot(
    database_url: str, filters: dict[str, Any], export_format: str,
    documents: list[dict[str, Any]],
) -> dict[str, Any]:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection:
            kept = await snapshots.create_snapshot(
                connection, tenant_id=str(filters["tenant"]), export_format=export_format,
                filters=filters, documents=documents)
    finally:
        await pool.close()
    return {"id": str(kept.snapshot_id), "created_at": kept.created_at.isoformat(),
            "lines": kept.lines, "removed": []}


def _filters(arguments: argparse.Namespace) -> dict[str, Any]:
    return {
        "tenant": arguments.tenant, "split": arguments.split,
        "since": arguments.since.isoformat() if arguments.since else None,
        "until": arguments.until.isoformat() if arguments.until else None,
        "action_type": arguments.action_type, "model": arguments.model,
        "min_quality": arguments.min_quality, "context": arguments.context,
        "source": arguments.url or "database",
    }


def run_export(arguments: argparse.Namespace, settings: Settings) -> int:
    """Runs `feedbackloop export` with parsed arguments; returns the exit status."""
    if bool(arguments.url) != bool(arguments.key):
        sys.stderr.write("--url and --key go together: the query service and a read key\n")
        return 2
    arguments.output_kind = arguments.output_kind or (
        "parquet" if arguments.out.suffix == ".parquet" else "jsonl")
    if arguments.from_snapshot is None and arguments.export_format is None:
        sys.stderr.write("--format is needed (unless exporting --from-snapshot)\n")
        return 2
    if (arguments.snapshot or arguments.from_snapshot) and arguments.url:
        sys.stderr.write("snapshots are kept in the database: not with --url\n")
        return 2
    if not arguments.url and not arguments.tenant and arguments.from_snapshot is None:
        sys.stderr.write("--tenant is needed when exporting from the database\n")
        return 2
    url = settings.database_url.get_secret_value()
    if not url and not arguments.url:
        sys.stderr.write(missing("database", "FEEDBACKLOOP_DATABASE_URL", settings) + "\n")
        return 2
    if arguments.since and arguments.until and arguments.since >= arguments.until:
        sys.stderr.write("--since must be before --until\n")
        return 2
    return asyncio.run(_export(arguments, url, sys.stderr))


def run_object_export(arguments: argparse.Namespace, settings: Settings) -> int:
    """`feedbackloop export-objects`: one export run to object storage now, what is due."""
    from services.trainer.exports.object_exports import export_due
    from services.trainer.exports.object_store import object_store

    database_url = settings.database_url.get_secret_value()
    if not database_url:
        sys.stderr.write(missing("database", "FEEDBACKLOOP_DATABASE_URL", settings) + "\n")
        return 2
    store = object_store(settings)
    if store is None:
        sys.stderr.write("no object storage: set FEEDBACKLOOP_OBJECT_EXPORT_ENDPOINT (make run "
                         "exports to its SeaweedFS)\n")
        return 2

    async def run() -> int:
        pool = await create_pool(database_url, min_size=1, max_size=2)
        try:
            done = await export_due(
                pool, store, settle=timedelta(seconds=settings.object_export_settle_seconds),
                tenants=arguments.tenant, part_rows=settings.object_export_part_rows,
            )
        finally:
            await pool.close()
        if done is None:
            sys.stderr.write("another export is running; nothing done\n")
            return 1
        for increment in done:
            print(f"{increment.tenant_id:<16} {increment.stream:<10} {increment.rows:>7} rows  "
                  f"s3://{store.bucket}/{increment.keys[-1]}")
        print(f"{len(done)} increment(s) exported")
        return 0

    return asyncio.run(run())
