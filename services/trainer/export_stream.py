"""Stored examples as JSONL lines of an export format, read through a cursor: what the
`feedbackloop export` command writes and the query service streams."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import orjson

from services.trainer import repository
from services.trainer.exports import FORMAT_KINDS, ContextMode, format_example


@dataclass
class ExportTally:
    """How many examples were read, and how many could not be written in the format."""

    read: int = 0
    skipped: int = 0


def selection_for(selection: repository.ExampleFilter, export_format: str) -> repository.ExampleFilter:
    """The filter narrowed to the kinds the format holds."""
    return replace(selection, kinds=FORMAT_KINDS[export_format])


async def export_rows(
    connection: asyncpg.Connection,
    *,
    selection: repository.ExampleFilter,
    export_format: str,
    tally: ExportTally | None = None,
    context: ContextMode = "none",
) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yields (published document, line of the format) per exportable example, oldest first.

    Opens its own read-only transaction on `connection` (a cursor needs one); the caller owns
    the connection. `tally`, when given, is updated as rows are produced.
    """
    tally = tally or ExportTally()
    async with connection.transaction(readonly=True):
        async for document in repository.stream_examples(
            connection, selection=selection_for(selection, export_format)
        ):
            tally.read += 1
            line = format_example(document, export_format, context=context)
            if line is None:
                tally.skipped += 1
                continue
            yield document, line


async def jsonl_lines(
    connection: asyncpg.Connection,
    *,
    selection: repository.ExampleFilter,
    export_format: str,
    tally: ExportTally | None = None,
    context: ContextMode = "none",
) -> AsyncGenerator[bytes, None]:
    """`export_rows`' lines, each one newline-terminated JSON object."""
    async for _, line in export_rows(
        connection, selection=selection, export_format=export_format, tally=tally,
        context=context,
    ):
        yield orjson.dumps(line) + b"\n"
