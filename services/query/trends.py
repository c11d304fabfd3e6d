"""Analytics' pure part: what each metric is, as a ratio of rollup sums, and the interval of
the difference between two proportions. No I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from services.query.processing import wilson_interval

MetricName = Literal["approval", "conversion", "avg_chosen_rank", "satisfaction"]
IntervalName = Literal["minute", "hour", "day"]
INTERVALS: dict[str, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
MAX_POINTS = 10_000


@dataclass(frozen=True)
class MetricDefinition:
    """A metric as `numerator / denominator` of rollup sums. A proportion gets a Wilson
    interval; a mean (of a rank, of a 1-5 score) does not."""

    family: Literal["feedback", "recommendation"]
    numerator: str
    denominator: tuple[str, ...]
    proportion: bool
    description: str


METRICS: dict[str, MetricDefinition] = {
    "approval": MetricDefinition(
        "feedback", "thumbs_up", ("thumbs_up", "thumbs_down"), True,
        "thumbs up / (thumbs up + thumbs down)",
    ),
    "conversion": MetricDefinition(
        "recommendation", "choices", ("sessions",), True,
        "sessions ending in a choice / sessions started, both counted in the bucket they "
        "happened in (a choice made in a later bucket than its session counts there)",
    ),
    "avg_chosen_rank": MetricDefinition(
        "recommendation", "chosen_rank_sum", ("chosen_rank_count",), False,
        "mean rank of the chosen option (1 = the top one)",
    ),
    "satisfaction": MetricDefinition(
        "recommendation", "satisfaction_sum", ("satisfaction_count",), False,
        "mean satisfaction (1-5) reported with choices",
    ),
}


@dataclass(frozen=True)
class Point:
    numerator: int
    denominator: int
    value: float | None
    ci_low: float | None
    ci_high: float | None


def metric_point(metric: MetricDefinition, sums: Mapping[str, int]) -> Point:
    """The metric's value over one bucket's sums; None where the denominator is zero."""
    numerator = int(sums[metric.numerator])
    denominator = sum(int(sums[name]) for name in metric.denominator)
    if denominator <= 0:
        return Point(numerator, denominator, None, None, None)
    if metric.proportion:
        # Conversion can exceed 1 in one bucket (choices of sessions started earlier).
        successes = min(numerator, denominator)
        low, high = wilson_interval(successes, denominator)
        return Point(numerator, denominator, numerator / denominator, low, high)
    return Point(numerator, denominator, numerator / denominator, None, None)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _floor(moment: datetime, step: timedelta) -> datetime:
    return _EPOCH + ((moment - _EPOCH) // step) * step


def _ceiling(moment: datetime, step: timedelta) -> datetime:
    return _EPOCH - ((_EPOCH - moment) // step) * step


def align_range(
    start: datetime, end: datetime, interval: IntervalName
) -> tuple[datetime, datetime]:
    """`[start, end)` widened to whole buckets of the interval (UTC): a bucket is counted
    whole or not at all, so the series read from the hour and day rollups is exact."""
    step = INTERVALS[interval]
    return _floor(start, step), _ceiling(end, step)


Span = tuple[IntervalName, datetime, datetime]


def rollup_spans(start: datetime, end: datetime) -> list[Span]:
    """The minute buckets in `[start, end)` (those with `start <= bucket < end`, as a read of
    the minute rollup would select them) as `(interval, low, high)` spans of whole buckets of
    the day, hour and minute rollups: whole days in the middle, whole hours beside them, the
    minutes left at the edges. Non-empty spans only; none when no minute starts in the range.

    Exact, because every hour and day bucket the metrics consumer writes is the UTC truncation
    of its minute buckets (and nothing else): a day bucket holds exactly its 1,440 minutes.
    Whatever the range, the spans hold at most its whole days, 46 hours and 118 minutes."""
    minute = INTERVALS["minute"]
    return _split(_ceiling(start, minute), _ceiling(end, minute), ("day", "hour", "minute"))


def _split(low: datetime, high: datetime, intervals: tuple[IntervalName, ...]) -> list[Span]:
    """`[low, high)` (minute-aligned) as whole buckets of the first interval, with the ends
    that do not fill one split into the finer intervals."""
    interval, finer = intervals[0], intervals[1:]
    if not finer:
        return [(interval, low, high)] if low < high else []
    step = INTERVALS[interval]
    inner_low, inner_high = _ceiling(low, step), _floor(high, step)
    if inner_low >= inner_high:
        return _split(low, high, finer)
    return [
        (interval, inner_low, inner_high),
        *_split(low, inner_low, finer),
        *_split(inner_high, high, finer),
    ]


def bucket_count(start: datetime, end: datetime, interval: IntervalName) -> int:
    return int((end - start) / INTERVALS[interval])


@dataclass(frozen=True)
class Difference:
    value: float
    ci_low: float
    ci_high: float


def newcombe_difference(
    successes_a: int, total_a: int, successes_b: int, total_b: int,
    z: float = 1.959963984540054,
) -> Difference | None:
    """p_a - p_b with Newcombe's hybrid score interval (method 10 of Newcombe 1998), built
    from the two Wilson intervals; None when either proportion has no trials."""
    if total_a <= 0 or total_b <= 0:
        return None
    p_a, p_b = successes_a / total_a, successes_b / total_b
    low_a, high_a = wilson_interval(successes_a, total_a, z)
    low_b, high_b = wilson_interval(successes_b, total_b, z)
    difference = p_a - p_b
    return Difference(
        value=difference,
        ci_low=max(-1.0, difference - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)),
        ci_high=min(1.0, difference + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)),
    )
