"""Analytics' pure part: metric definitions, bucket alignment, Newcombe's interval."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.metrics.rollups import align_range, bucket_count
from services.query.trends import METRICS, metric_point, newcombe_difference


def test_newcombe_matches_the_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 vs 48/80.
    difference = newcombe_difference(56, 70, 48, 80)
    assert difference is not None
    assert difference.value == pytest.approx(0.2)
    assert (round(difference.ci_low, 4), round(difference.ci_high, 4)) == (0.0524, 0.3339)


def test_newcombe_at_the_boundaries_and_without_trials() -> None:
    extreme = newcombe_difference(10, 10, 0, 10)
    assert extreme is not None and extreme.value == 1.0
    assert 0.5 < extreme.ci_low < 1.0 and extreme.ci_high == 1.0
    assert newcombe_difference(0, 0, 3, 4) is None


def test_a_small_difference_on_small_samples_includes_zero() -> None:
    difference = newcombe_difference(3, 4, 2, 4)
    assert difference is not None and difference.ci_low < 0 < difference.ci_high


def test_metric_points() -> None:
    approval = metric_point(METRICS["approval"], {"thumbs_up": 8, "thumbs_down": 2})
    assert (approval.value, approval.denominator) == (0.8, 10)
    assert approval.ci_low is not None and approval.ci_low < 0.8 < (approval.ci_high or 0)
    rank = metric_point(METRICS["avg_chosen_rank"], {"chosen_rank_sum": 7, "chosen_rank_count": 4})
    assert (rank.value, rank.ci_low) == (1.75, None)
    empty = metric_point(METRICS["satisfaction"], {"satisfaction_sum": 0, "satisfaction_count": 0})
    assert empty.value is None
    # More choices than sessions in one bucket (sessions started earlier): the interval stays valid.
    conversion = metric_point(METRICS["conversion"], {"choices": 5, "sessions": 4})
    assert conversion.value == 1.25 and conversion.ci_high == 1.0


def test_ranges_widen_to_whole_buckets() -> None:
    start, end = datetime(2026, 1, 1, 10, 30, tzinfo=UTC), datetime(2026, 1, 2, 3, 0, 1, tzinfo=UTC)
    assert align_range(start, end, "hour") == (
        datetime(2026, 1, 1, 10, tzinfo=UTC), datetime(2026, 1, 2, 4, tzinfo=UTC)
    )
    assert align_range(start, end, "day") == (
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC)
    )
    aligned = align_range(start, end, "minute")
    assert aligned == (start, datetime(2026, 1, 2, 3, 1, tzinfo=UTC))
    assert bucket_count(*align_range(start, end, "hour"), "hour") == 18
