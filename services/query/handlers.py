"""Query routes: analytics and user feedback history, scoped to the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from feedbackloop.http.problems import ProblemException
from feedbackloop.identity import hash_user_id
from services.metrics import reads as metrics
from services.profiles import reads as profiles
from services.profiles.segments import (
    Decision,
    SuggestionVerdict,
    action_type_verdicts,
    assign_segment,
    category_verdicts,
)
from services.query.deps import Reader, State
from services.query.processing import approval_counts
from services.query.timerange import time_range

router = APIRouter(prefix="/v1")


class ApprovalGroup(BaseModel):
    group: str
    up: int
    down: int
    total: int
    approval_rate: float | None
    ci_low: float
    ci_high: float


class ApprovalReport(BaseModel):
    group_by: str
    start: datetime
    end: datetime
    groups: list[ApprovalGroup]


class ActionTypeVerdicts(BaseModel):
    action_type: str
    accepted: int
    rejected: int
    neutral: int
    total: int


class FeedbackItem(BaseModel):
    event_id: UUID
    response_id: str
    action_type: str
    model: str | None
    kind: str
    verdict: str
    thumb: str | None
    rating: int | None
    comment: str | None
    reasons: list[str]
    correction: str | None
    occurred_at: datetime
    current: bool = Field(
        description="This event is the signal's state now: the latest of the user's events of "
        "this kind on this response, and not a retraction."
    )
    retraction: bool = Field(
        description="The user took back their signal of this kind (verdict neutral)."
    )


class SegmentStory(BaseModel):
    segment: str
    reasons: list[str]
    evidence: dict[str, float]


class Suggestion(BaseModel):
    """A kind of suggestion and what the user's feedback made of it."""

    kind: Literal["action_type", "category"]
    name: str
    accepted: int
    rejected: int
    rejection_rate: float | None
    status: Literal["avoid", "prefer", "neutral"]


class RecommendationStory(BaseModel):
    sessions: int
    decisions: int
    chosen: int
    interactions: int
    avg_satisfaction: float | None
    avg_decision_seconds: float | None


class FeedbackSummary(BaseModel):
    user_id: str
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    training_allowed: bool
    totals: dict[str, int] = Field(description="Verdicts of the current signals.")
    by_action_type: list[ActionTypeVerdicts]
    current: list[FeedbackItem] = Field(
        description="The user's current signals, newest first: one per response and kind."
    )
    history: list[FeedbackItem] = Field(
        description="Every feedback event, newest first, changes and retractions included."
    )
    segment: SegmentStory
    avoided: list[Suggestion]
    preferred: list[Suggestion]
    recommendation_categories: list[Suggestion]
    recommendations: RecommendationStory






@router.get("/analytics/approval", tags=["analytics"])
async def approval(
    state: State,
    caller: Reader,
    group_by: Literal["action_type", "model", "tenant"] = "action_type",
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> ApprovalReport:
    """Thumbs up and down per group over `[from, to)` (default: the last 30 days), with the
    approval rate and its Wilson 95% interval."""
    start, end = time_range(start, end)
    rows = await metrics.approval_by_group(
        state.pool, tenant_id=caller.tenant_id, group_by=group_by, start=start, end=end
    )
    groups = [
        ApprovalGroup(group=row["grp"], **approval_counts(int(row["up"]), int(row["down"])))
        for row in rows
    ]
    return ApprovalReport(group_by=group_by, start=start, end=end, groups=groups)


@router.get("/users/{user_id}/feedback-summary", tags=["users"])
async def feedback_summary(
    user_id: Annotated[str, Path(min_length=1, max_length=256)],
    state: State,
    caller: Reader,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FeedbackSummary:
    """The user's feedback story: their current signals, the history of every change, what
    they accepted and rejected per action type (current verdicts: a flipped thumb counts as its
    new verdict, a retracted one not at all), their segment and why, and what is now avoided or
    preferred because of their feedback (rules in `services/profiles/segments.py`). `user_id`
    is your raw user id; it is hashed the same way ingest hashed it."""
    user_hash = hash_user_id(state.hmac_secret, caller.tenant_id, user_id)
    tenant = caller.tenant_id
    verdicts = await profiles.user_verdicts_by_action_type(
        state.pool, tenant_id=tenant, user_id=user_hash)
    history = await profiles.user_feedback_history(
        state.pool, tenant_id=tenant, user_id=user_hash, limit=limit)
    current = await profiles.user_feedback_history(
        state.pool, tenant_id=tenant, user_id=user_hash, limit=limit, current_only=True)
    profile = await profiles.user_profile(state.pool, tenant_id=tenant, user_id=user_hash)
    if profile is None and not history:
        raise ProblemException(404, "no feedback is recorded for this user")
    decisions = await profiles.decisions(state.pool, tenant_id=tenant, user_id=user_hash)
    outcomes = await profiles.user_recommendation_totals(
        state.pool, tenant_id=tenant, user_id=user_hash)
    return _summary(user_id, profile, verdicts, history, current, decisions, outcomes)


def _summary(
    user_id: str, profile: asyncpg.Record | None, verdicts: list[asyncpg.Record],
    history: list[asyncpg.Record], current: list[asyncpg.Record], decisions: list[Decision],
    outcomes: asyncpg.Record,
) -> FeedbackSummary:
    """The summary from the user's rows: the segment and the marked suggestions are the
    profile rules' (`services/profiles/segments.py`) over their decisions."""
    assignment = assign_segment(decisions)
    marked = action_type_verdicts(verdicts) + category_verdicts(decisions)
    by_action = [ActionTypeVerdicts(**dict(row)) for row in verdicts]
    totals: dict[str, Any] = {
        name: sum(getattr(item, name) for item in by_action)
        for name in ("accepted", "rejected", "neutral", "total")
    }
    return FeedbackSummary(
        user_id=user_id,
        first_seen_at=profile["first_seen_at"] if profile else None,
        last_seen_at=profile["last_seen_at"] if profile else None,
        training_allowed=profile["training_allowed"] if profile else True,
        totals=totals,
        by_action_type=by_action,
        current=[FeedbackItem(**dict(row)) for row in current],
        history=[FeedbackItem(**dict(row)) for row in history],
        segment=SegmentStory(segment=assignment.segment, reasons=assignment.reasons,
                             evidence=assignment.evidence),
        avoided=[_suggestion(item) for item in marked if item.status == "avoid"],
        preferred=[_suggestion(item) for item in marked if item.status == "prefer"],
        recommendation_categories=[_suggestion(item) for item in marked
                                   if item.kind == "category"],
        recommendations=RecommendationStory(**dict(outcomes)),
    )


def _suggestion(verdict: SuggestionVerdict) -> Suggestion:
    return Suggestion(kind=verdict.kind, name=verdict.name, accepted=verdict.accepted,
                      rejected=verdict.rejected, rejection_rate=verdict.rejection_rate,
                      status=verdict.status)
