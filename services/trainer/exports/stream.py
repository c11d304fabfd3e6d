"""Stored examples as JSONL lines of an export format, read through a cursor: what the
`feedbackloop export` command writes and the query service streams."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import orjson

from services.trainer.examples.records import published_document
from services.trainer.exports.filters import ExampleFilter, stream_example_rows
from services.trainer.exports.formats import FORMAT_KINDS, ContextMode, format_example


@dataclass
class ExportTally:
    """How many examples were read, and how many could not be written in the format."""

    read: int = 0
    skipped: int = 0


def selection_for(selection: ExampleFilter, export_format: str) -> ExampleFilter:
    """The filter narrowed to the kinds the format holds."""
    return replace(selection, kinds=FORMAT_KINDS[export_format])


async def published_documents(
    connection: asyncpg.Connection, *, selection: ExampleFilter, chunk: int = 500
) -> AsyncIterator[dict[str, Any]]:
    """The selected examples' published documents, oldest first, read through a cursor so an
    export of any size holds one chunk in memory. Must run inside a transaction."""
    async for row in stream_example_rows(connection, selection=selection, chunk=chunk):
        yield published_document(
            row["record"], revision=row["revision"], created_at=row["created_at"]
        )


async def export_rows(
    connection: asyncpg.Connection,
    *,
    selection: ExampleFilter,
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
        async for document in published_documents(
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
    selection: ExampleFilter,
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
