"""Analytics and alert routes: trends over the exact rollups, model comparison, alert state.

The alert evaluation that writes the alert states (and refreshes the analytics gauges) is a job
of its own (`alert_evaluator.alert_evaluation_job`), wired in `main.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from feedbackloop.http.problems import ProblemException
from services.metrics import reads as metrics
from services.metrics.rollups import IntervalName, align_range, bucket_count
from services.query import repository
from services.query.alerts import RULES
from services.query.deps import Reader, State
from services.query.processing import approval_counts
from services.query.timerange import time_range
from services.query.trends import MAX_POINTS, METRICS, MetricName, metric_point, newcombe_difference

GroupBy = Literal[
    "action_type", "model", "prompt_version", "variant", "language", "feature",
    "algorithm_version", "segment",
]


class TrendPoint(BaseModel):
    bucket: datetime
    numerator: int
    denominator: int
    value: float | None
    ci_low: float | None
    ci_high: float | None


class TrendSeries(BaseModel):
    group: str | None
    points: list[TrendPoint]


class TrendReport(BaseModel):
    metric: str
    definition: str
    interval: str
    group_by: str | None
    start: datetime
    end: datetime
    series: list[TrendSeries]


class ModelApproval(BaseModel):
    model: str
    up: int
    down: int
    total: int
    approval_rate: float | None
    ci_low: float
    ci_high: float


class ApprovalDifference(BaseModel):
    """approval(a) - approval(b), with Newcombe's hybrid score 95% interval."""

    value: float
    ci_low: float
    ci_high: float
    method: str = "newcombe-wilson"


class ModelComparison(BaseModel):
    action_type: str | None
    start: datetime
    end: datetime
    a: ModelApproval
    b: ModelApproval
    difference: ApprovalDifference | None


class AlertStatus(BaseModel):
    rule: str
    subject: str
    state: Literal["ok", "pending", "firing"]
    since: datetime
    value: float | None
    sample: int
    threshold: float
    evaluated_at: datetime


class AlertReport(BaseModel):
    rules: list[str]
    alerts: list[AlertStatus]


def _unprocessable(field: str, message: str) -> ProblemException:
    return ProblemException(
        422, message, errors=[{"loc": ["query", field], "msg": message, "type": "value_error"}]
    )


router = APIRouter(prefix="/v1")


@router.get("/analytics/trends", tags=["analytics"])
async def trends(
    state: State,
    caller: Reader,
    metric: MetricName,
    interval: IntervalName = "hour",
    group_by: GroupBy | None = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> TrendReport:
    """A metric per bucket over `[from, to)` (default: the last 30 days), widened to whole
    buckets of `interval` (UTC), read from the rollup of that resolution. Buckets with no
    data are absent. `group_by=variant` groups by `experiment/variant`."""
    definition = METRICS[metric]
    groups = metrics.GROUPS_OF[definition.family]
    if group_by is not None and group_by not in groups:
        raise _unprocessable("group_by", f"{metric} can be grouped by {', '.join(groups)}")
    start, end = align_range(*time_range(start, end), interval)
    if bucket_count(start, end, interval) > MAX_POINTS:
        raise _unprocessable("interval", f"more than {MAX_POINTS} buckets; use a coarser interval")
    rows = await metrics.rollup_series(
        state.pool, family=definition.family, tenant_id=caller.tenant_id,
        interval=interval, group_by=group_by, start=start, end=end,
    )
    series: dict[str | None, list[TrendPoint]] = {}
    for row in rows:
        point = metric_point(definition, row)
        if point.numerator == 0 and point.denominator == 0:
            continue
        series.setdefault(row["grp"], []).append(TrendPoint(bucket=row["bucket"], **vars(point)))
    return TrendReport(
        metric=metric, definition=definition.description, interval=interval,
        group_by=group_by, start=start, end=end,
        series=[
            TrendSeries(group=group, points=series[group])
            for group in sorted(series, key=lambda group: group or "")
        ],
    )


@router.get("/analytics/models/compare", tags=["analytics"])
async def compare_models(
    state: State,
    caller: Reader,
    a: Annotated[str, Query(min_length=1, max_length=100)],
    b: Annotated[str, Query(min_length=1, max_length=100)],
    action_type: Annotated[str | None, Query(max_length=100)] = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> ModelComparison:
    """Approval of models `a` and `b` with Wilson 95% intervals, and the difference a - b
    with Newcombe's 95% interval (null while either has no thumbs)."""
    if a == b:
        raise _unprocessable("b", "compare two different models")
    start, end = time_range(start, end)
    votes = await metrics.approval_of_models(
        state.pool, tenant_id=caller.tenant_id, models=[a, b], action_type=action_type,
        start=start, end=end,
    )
    (up_a, down_a), (up_b, down_b) = votes[a], votes[b]
    difference = newcombe_difference(up_a, up_a + down_a, up_b, up_b + down_b)
    return ModelComparison(
        action_type=action_type, start=start, end=end,
        a=_model_approval(a, up_a, down_a), b=_model_approval(b, up_b, down_b),
        difference=ApprovalDifference(**vars(difference)) if difference else None,
    )


@router.get("/alerts", tags=["alerts"])
async def alerts(state: State, caller: Reader) -> AlertReport:
    """Each alert of the caller's tenant as last evaluated: ok, pending (breached, not yet
    for long enough) or firing; since when, the value and the sample behind it."""
    rows = await repository.alert_states(state.pool, tenant_id=caller.tenant_id)
    return AlertReport(
        rules=list(RULES),
        alerts=[
            AlertStatus(**{k: row[k] for k in AlertStatus.model_fields}) for row in rows
        ],
    )


def _model_approval(model: str, up: int, down: int) -> ModelApproval:
    return ModelApproval(model=model, **approval_counts(up, down))
