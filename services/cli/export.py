"""`feedbackloop export`: training examples to a JSONL file an ML engineer can train on.

    feedbackloop export --tenant acme --format openai-sft --split train --since 2026-11-01 \\
        --out train.jsonl

Writes the tenant's stored examples (PII already redacted, duplicates and opted-out users
already left out) in the chosen format, with a progress bar on stderr, then checks the file
against the format's rules (see `services.trainer.exports`). Exit status 0 when the file is
valid, 1 when it was written but breaks a rule (say, fewer than 10 examples for OpenAI), 2 on
bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from feedbackloop.postgres import create_pool
from feedbackloop.settings import Settings
from services.cli.local_system import missing
from services.trainer import repository
from services.trainer.export_stream import ExportTally, jsonl_lines, selection_for
from services.trainer.exports import EXPORT_FORMATS, file_errors, line_errors


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
    parser.add_argument("--tenant", required=True, help="the tenant whose examples to export")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="export_format")
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
    parser.add_argument("--out", required=True, type=Path, help="the JSONL file to write")
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
        share = self.done / self.total if self.total else 1.0
        filled = round(self.width * min(share, 1.0))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} examples")
        self.stream.flush()

    def close(self) -> None:
        self.draw()
        self.stream.write("\n")


async def _export(arguments: argparse.Namespace, database_url: str, stderr: TextIO) -> int:
    selection = repository.ExampleFilter(
        tenant_id=arguments.tenant, split=arguments.split, since=arguments.since,
        until=arguments.until, action_type=arguments.action_type, model=arguments.model,
        min_quality=arguments.min_quality,
    )
    pool = await create_pool(database_url, min_size=1, max_size=1)
    tally = ExportTally()
    errors: list[str] = []
    written = 0
    try:
        async with pool.acquire() as connection:
            total = await repository.count_examples(
                connection, selection=selection_for(selection, arguments.export_format)
            )
            progress = ProgressBar(total, stderr)
            with arguments.out.open("wb") as out:
                async for line in jsonl_lines(
                    connection, selection=selection, export_format=arguments.export_format,
                    tally=tally,
                ):
                    out.write(line)
                    written += 1
                    errors += [
                        f"line {written}: {error}"
                        for error in line_errors(orjson.loads(line), arguments.export_format)
                    ]
                    progress.advance()
            progress.done = tally.read
            progress.close()
    finally:
        await pool.close()
    errors += file_errors(written, arguments.export_format)
    stderr.write(
        f"wrote {written} examples to {arguments.out}"
        + (f" ({tally.skipped} not representable in {arguments.export_format})"
           if tally.skipped else "")
        + "\n"
    )
    if errors:
        stderr.write("the file breaks the format's rules:\n")
        for error in errors[:20]:
            stderr.write(f"  {error}\n")
        return 1
    return 0


def run_export(arguments: argparse.Namespace, settings: Settings) -> int:
    """Runs `feedbackloop export` with parsed arguments; returns the exit status."""
    url = settings.database_url.get_secret_value()
    if not url:
        sys.stderr.write(missing("database", "FEEDBACKLOOP_DATABASE_URL", settings) + "\n")
        return 2
    if arguments.since and arguments.until and arguments.since >= arguments.until:
        sys.stderr.write("--since must be before --until\n")
        return 2
    return asyncio.run(_export(arguments, url, sys.stderr))
