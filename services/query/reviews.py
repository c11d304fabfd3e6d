"""Review reads: the review queue (low signals with the AI's and the agent's replies and their
word diff) and the agreement of reviewers who labelled the same responses. The console
renders these; they are API routes like any other (`read` scope, the caller's tenant only)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.query.console.agreement import label_agreement
from services.query.console.diff import word_diff
from services.query.deps import Reader, State
from services.query.timerange import time_range
from services.trainer import reads
from services.trainer.reads import QueueFilter, QueueSignal, QueueStatus

router = APIRouter(prefix="/v1/reviews", tags=["reviews"])


class DiffRun(BaseModel):
    op: str
    text: str


class ReviewerLabel(BaseModel):
    reviewer: str
    reviewer_name: str | None
    label: str
    value: str
    note: str | None
    occurred_at: datetime


class QueueItem(BaseModel):
    response_id: str
    last_signal_at: datetime
    down_votes: int
    low_ratings: int
    corrections: int
    replays: int
    response_logged: bool
    action_type: str | None
    model: str | None
    prompt: str
    ai_reply: str | None
    agent_reply: str | None
    agent_reply_kind: str | None
    diff: list[DiffRun]
    explanation: str | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    assignee: str | None
    assigned_by: str | None
    assigned_at: datetime | None
    labels: list[ReviewerLabel]


class ReviewQueue(BaseModel):
    start: datetime
    end: datetime
    signal: str
    status: str
    items: list[QueueItem]


class LabelAgreementReport(BaseModel):
    label: str
    method: str
    kappa: float | None
    observed_agreement: float | None
    reviewers: list[str]
    items: int
    disagreements: list[str]


class AgreementReport(BaseModel):
    labels: list[LabelAgreementReport]


@router.get("/queue")
async def review_queue(
    state: State,
    caller: Reader,
    signal: QueueSignal = "all",
    status: QueueStatus = "all",
    action_type: Annotated[str | None, Query(max_length=100)] = None,
    model: Annotated[str | None, Query(max_length=100)] = None,
    response_id: Annotated[str | None, Query(max_length=200)] = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 25,
) -> ReviewQueue:
    """Responses with low signals in `[from, to)` (default: the last 30 days), most recent
    first: `signal` = `down` (thumbs down), `low` (ratings 1-2), `corrected` (a correction or
    an agent's reply), or `all`; `status` = `open` (not marked reviewed), `reviewed`, `all`.
    Each with the prompt, the AI's reply, the latest agent reply and their word diff, the
    latest failure explanation, the review state and every reviewer's labels. Reads the
    newest 5,000 matching signals."""
    start, end = time_range(start, end)
    rows = await reads.review_queue(state.pool, QueueFilter(
        tenant_id=caller.tenant_id, since=start, until=end, signal=signal, status=status,
        action_type=action_type, model=model, response_id=response_id, limit=limit,
    ))
    labels: dict[str, list[ReviewerLabel]] = defaultdict(list)
    for row in await reads.review_labels(
        state.pool, tenant_id=caller.tenant_id, response_ids=[r["response_id"] for r in rows]
    ):
        labels[row["response_id"]].append(ReviewerLabel(**{
            k: row[k] for k in ReviewerLabel.model_fields
        }))
    items = []
    for row in rows:
        ai, agent = row["output"], row["agent_reply"]
        runs = word_diff(ai, agent) if ai is not None and agent is not None else []
        items.append(QueueItem(
            response_id=row["response_id"], last_signal_at=row["last_at"],
            down_votes=row["down_votes"], low_ratings=row["low_ratings"],
            corrections=row["corrections"], replays=row["replays"],
            response_logged=row["response_logged"], action_type=row["action_type"],
            model=row["model"], prompt=reads.prompt_text(row["prompt"]), ai_reply=ai,
            agent_reply=agent, agent_reply_kind=row["agent_kind"],
            diff=[DiffRun(op=run.op, text=run.text) for run in runs],
            explanation=row["explanation"], reviewed_by=row["reviewed_by_name"],
            reviewed_at=row["reviewed_at"], assignee=row["assignee"],
            assigned_by=row["assigned_by_name"], assigned_at=row["assigned_at"],
            labels=labels.get(row["response_id"], []),
        ))
    return ReviewQueue(start=start, end=end, signal=signal, status=status, items=items)


@router.get("/agreement")
async def agreement(state: State, caller: Reader) -> AgreementReport:
    """Per label, how far reviewers who answered the same responses agree: Cohen's kappa when
    two reviewers labelled, Fleiss' kappa for three or more (over responses with at least two
    answers), the observed agreement, and the responses whose answers differ. Reviewers are
    named by their keys' names."""
    answers: dict[str, dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    for row in await reads.label_answers(state.pool, tenant_id=caller.tenant_id):
        name = row["reviewer_name"] or row["reviewer"]
        answers[row["label"]][row["response_id"]][f"{name} ({row['reviewer'][:8]})"] = row["value"]
    reports = []
    for label in sorted(answers):
        result = label_agreement(label, answers[label])
        reports.append(LabelAgreementReport(
            label=result.label, method=result.method, kappa=result.kappa,
            observed_agreement=result.observed, reviewers=result.reviewers,
            items=result.items, disagreements=result.disagreements,
        ))
    return AgreementReport(labels=reports)
