"""Analytics' pure part: what each metric is, as a ratio of rollup sums, and the interval of
the difference between two proportions. No I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from services.query.processing import wilson_interval

MetricName = Literal["approval", "conversion", "avg_chosen_rank", "satisfaction"]
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
