"""Training data for ML engineers: the tenant's training examples streamed as JSONL, in the
same formats as `feedbackloop export` (see `services.trainer.exports`), and the failure
patterns of down-voted replies with their explanations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from services.query.deps import Reader, State
from services.query.timerange import aware, check_order
from services.trainer import reads as trainer
from services.trainer.export_stream import jsonl_lines
from services.trainer.failure_patterns import DownVote, group_failures
from services.trainer.reads import ExampleFilter

router = APIRouter(prefix="/v1")

FormatName = Literal[
    "openai-sft", "openai-preference", "trl-sft", "trl-preference", "trl-kto", "eval-cases", "raw"
]






@router.get(
    "/training/export",
    tags=["training"],
    response_class=StreamingResponse,
    responses={200: {"content": {"application/jsonl": {}}, "description": "one example a line"}},
)
async def export_training_examples(
    state: State,
    caller: Reader,
    export_format: Annotated[FormatName, Query(alias="format")],
    split: Literal["train", "eval"] | None = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    action_type: Annotated[str | None, Query(max_length=100)] = None,
    model: Annotated[str | None, Query(max_length=100)] = None,
    min_quality: Annotated[float | None, Query(ge=0, le=1)] = None,
    context: Literal["none", "system"] = "none",
) -> StreamingResponse:
    """The caller's tenant's examples (PII redacted, duplicates and opted-out users left out)
    whose feedback occurred in `[from, to)`, oldest first, one JSON object a line. Filters:
    split, action type, model, minimum quality (the strength of the human signal, 0-1).
    `context=system` puts the retrieved documents in a system message (chat formats)."""
    start, end = aware(start), aware(end)
    check_order(start, end)
    selection = ExampleFilter(
        tenant_id=caller.tenant_id, split=split, since=start, until=end,
        action_type=action_type, model=model, min_quality=min_quality,
    )

    # The first line is read before the answer starts, so a value PostgreSQL refuses (a NUL
    # character in a filter) is a 422 problem, not a 200 that breaks off mid-stream.
    connection = await state.pool.acquire()
    lines = jsonl_lines(connection, selection=selection, export_format=export_format,
                        context=context)
    try:
        first = await anext(lines, None)
    except BaseException:
        await lines.aclose()
        await state.pool.release(connection)
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield first
            async for line in lines:
                yield line
        finally:
            await lines.aclose()
            await state.pool.release(connection)

    filename = f"{caller.tenant_id}-{export_format}-{split or 'all'}.jsonl"
    return StreamingResponse(
        body(),
        media_type="application/jsonl",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


class FailurePatternItem(BaseModel):
    action_type: str
    prompt: str
    output: str
    count: int
    first_seen: datetime
    last_seen: datetime
    response_ids: list[str]
    explanations: list[str]


class FailurePatternReport(BaseModel):
    start: datetime
    end: datetime
    min_count: int
    down_votes_read: int
    patterns: list[FailurePatternItem]


# The most recent down-votes read per request: grouping is done in memory.
_MAX_DOWN_VOTES = 5_000


@router.get("/training/failure-patterns", tags=["training"])
async def failure_patterns(
    state: State,
    caller: Reader,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    action_type: Annotated[str | None, Query(max_length=100)] = None,
    min_count: Annotated[int, Query(ge=1, le=10_000)] = 3,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FailurePatternReport:
    """Down-voted (prompt, reply, action type) groups seen at least `min_count` times in
    `[from, to)` (default: the last 30 days), near duplicates grouped, most frequent first,
    with up to three failure explanations each (PII redacted). Reads the most recent 5,000
    down-votes of the range."""
    end = aware(end) or datetime.now(UTC)
    start = aware(start) or end - timedelta(days=30)
    check_order(start, end)
    rows = await trainer.down_voted_replies(
        state.pool, tenant_id=caller.tenant_id, since=start, until=end,
        action_type=action_type, limit=_MAX_DOWN_VOTES,
    )
    votes = [
        DownVote(
            response_id=row["response_id"], occurred_at=row["occurred_at"],
            prompt=row["prompt"], output=row["output"], action_type=row["action_type"],
            explanation=row["explanation"],
        )
        for row in rows
        if row["prompt"] and row["output"]
    ]
    patterns = group_failures(votes, min_count=min_count)[:limit]
    return FailurePatternReport(
        start=start, end=end, min_count=min_count, down_votes_read=len(rows),
        patterns=[FailurePatternItem(**vars(pattern)) for pattern in patterns],
    )
