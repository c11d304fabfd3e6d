"""Query routes: analytics and user feedback history, scoped to the caller's tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from feedbackloop.http.problems import ProblemException
from feedbackloop.identity import hash_user_id
from services.query import repository
from services.query.deps import Reader, State
from services.query.processing import approval_rate, wilson_interval

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


class FeedbackSummary(BaseModel):
    user_id: str
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    training_allowed: bool
    totals: dict[str, int]
    by_action_type: list[ActionTypeVerdicts]
    history: list[FeedbackItem]


def _time_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = end.astimezone(UTC) if end else datetime.now(UTC)
    start = start.astimezone(UTC) if start else end - timedelta(days=30)
    if start >= end:
        raise ProblemException(
            422,
            "`from` must be before `to`.",
            errors=[{"loc": ["query", "from"], "msg": "must be before `to`", "type": "value_error"}],
        )
    return start, end


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


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
    start, end = _time_range(_aware(start), _aware(end))
    rows = await repository.approval_by_group(
        state.pool, tenant_id=caller.tenant_id, group_by=group_by, start=start, end=end
    )
    groups = []
    for row in rows:
        up, down = int(row["up"]), int(row["down"])
        low, high = wilson_interval(up, up + down)
        groups.append(
            ApprovalGroup(
                group=row["grp"],
                up=up,
                down=down,
                total=up + down,
                approval_rate=approval_rate(up, down),
                ci_low=low,
                ci_high=high,
            )
        )
    return ApprovalReport(group_by=group_by, start=start, end=end, groups=groups)


@router.get("/users/{user_id}/feedback-summary", tags=["users"])
async def feedback_summary(
    user_id: Annotated[str, Path(min_length=1, max_length=256)],
    state: State,
    caller: Reader,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FeedbackSummary:
    """The user's feedback history and what they accepted and rejected, per action type.
    `user_id` is your raw user id; it is hashed the same way ingest hashed it."""
    user_hash = hash_user_id(state.hmac_secret, caller.tenant_id, user_id)
    verdicts = await repository.user_verdicts_by_action_type(
        state.pool, tenant_id=caller.tenant_id, user_id=user_hash
    )
    history = await repository.user_feedback_history(
        state.pool, tenant_id=caller.tenant_id, user_id=user_hash, limit=limit
    )
    profile = await repository.user_profile(
        state.pool, tenant_id=caller.tenant_id, user_id=user_hash
    )
    if profile is None and not history:
        raise ProblemException(404, "no feedback is recorded for this user")
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
        history=[FeedbackItem(**dict(row)) for row in history],
    )
