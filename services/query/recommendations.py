"""Query routes for the recommendation loop: learned segment weights and recommendation
outcomes (conversion, chosen rank, satisfaction, decision time), scoped to the caller's
tenant. The SQL is the learner's (`services/learner/reads.py`), the owner of the schema."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.learner import reads as learner
from services.query.deps import Reader, State
from services.query.processing import wilson_interval
from services.query.timerange import time_range

router = APIRouter(prefix="/v1")


class WeightsVersion(BaseModel):
    version: int
    weights: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    confidence: float
    sample_size: int
    rank_effects: dict[str, float]
    fit_seconds: float
    fitted_at: datetime
    published: bool
    kind: Literal["full", "incremental"] = "full"
    promoted: bool = True
    promotion: dict[str, Any] | None = None
    shift: dict[str, Any] | None = None


class SegmentWeightsOut(BaseModel):
    segment: str
    current: WeightsVersion | None
    history: list[WeightsVersion]


class SegmentWeightsReport(BaseModel):
    segments: list[SegmentWeightsOut]


@router.get("/segments/weights", tags=["recommendations"])
async def segment_weights(
    state: State, caller: Reader, history: Annotated[int, Query(ge=1, le=100)] = 10
) -> SegmentWeightsReport:
    """Each segment's current learned weights (version, sample size, 95% intervals per weight,
    confidence 0-1) and its newest `history` versions, newest first. `global` is the fit over
    every choice that the segments are pooled toward. A segment absent here is served the
    default (equal) weights.

    `current` is the newest promoted version, the one the rank API serves. Each version says
    its `kind` (`full`: a batched refit; `incremental`: a Newton step on the choices since the
    previous version), whether it was `promoted` and why (`promotion`: the off-policy
    estimates of its top-choice rate against the version then served, and the reason), and
    for incremental versions the `shift` test of its batch (`detected`, `statistic`,
    `threshold`, `change_at`)."""
    rows = await learner.weights_versions(state.pool, tenant_id=caller.tenant_id,
                                          history=history)
    by_segment: dict[str, list[WeightsVersion]] = {}
    for row in rows:
        fields = dict(row)
        segment = fields.pop("segment")
        fields.pop("factors")
        drift = fields.pop("drift") or {}
        fields["shift"] = drift.get("test")
        by_segment.setdefault(segment, []).append(WeightsVersion(**fields))
    return SegmentWeightsReport(
        segments=[
            SegmentWeightsOut(
                segment=segment,
                current=next((v for v in versions if v.promoted), None),
                history=versions,
            )
            for segment, versions in sorted(by_segment.items())
        ]
    )


class OutcomeGroup(BaseModel):
    group: str
    sessions: int
    decided: int
    converted: int
    conversion_rate: float | None
    ci_low: float
    ci_high: float
    avg_chosen_rank: float | None
    avg_satisfaction: float | None
    avg_decision_seconds: float | None


class OutcomeReport(BaseModel):
    group_by: str
    start: datetime
    end: datetime
    groups: list[OutcomeGroup]


@router.get("/analytics/recommendations", tags=["analytics"])
async def recommendation_outcomes(
    state: State,
    caller: Reader,
    group_by: learner.RecommendationGroup = "overall",
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> OutcomeReport:
    """Sessions started in `[from, to)` (default: the last 30 days) per group (`overall`,
    `segment`, `complexity`): conversion rate (sessions whose latest decision chose an option,
    over all sessions) with its Wilson 95% interval, average chosen rank, satisfaction and
    decision time."""
    start, end = time_range(start, end)
    rows = await learner.recommendation_outcomes(
        state.pool, tenant_id=caller.tenant_id, group_by=group_by, start=start, end=end
    )
    groups = []
    for row in rows:
        sessions, converted = int(row["sessions"]), int(row["converted"])
        low, high = wilson_interval(converted, sessions)
        groups.append(
            OutcomeGroup(
                group=row["grp"],
                sessions=sessions,
                decided=int(row["decided"]),
                converted=converted,
                conversion_rate=converted / sessions if sessions else None,
                ci_low=low,
                ci_high=high,
                avg_chosen_rank=row["avg_chosen_rank"],
                avg_satisfaction=row["avg_satisfaction"],
                avg_decision_seconds=row["avg_decision_seconds"],
            )
        )
    return OutcomeReport(group_by=group_by, start=start, end=end, groups=groups)
