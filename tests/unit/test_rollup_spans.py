"""`rollup_spans`: any `[start, end)` as whole day, hour and minute buckets that hold exactly
the minutes a read of the minute rollup would select, and few of them whatever the range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.metrics.rollups import INTERVALS, align_range, rollup_spans

MINUTE = timedelta(minutes=1)
moments = st.datetimes(
    min_value=datetime(2025, 12, 1), max_value=datetime(2026, 3, 1), timezones=st.just(UTC)
)


def _minutes_selected(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The minute buckets `start <= bucket < end`, as the half-open run they form."""
    first = align_range(start, start, "minute")[1]
    last = align_range(end, end, "minute")[1]
    return first, max(first, last)


@given(moments, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=70)))
def test_spans_cover_exactly_the_selected_minutes(start: datetime, length: timedelta) -> None:
    end = start + length
    spans = rollup_spans(start, end)
    first, last = _minutes_selected(start, end)
    covered = sorted((low, high) for _, low, high in spans)
    # Contiguous and disjoint, from the first selected minute to the last.
    assert [low for low, _ in covered[1:]] == [high for _, high in covered[:-1]]
    if first == last:
        assert spans == []
    else:
        assert (covered[0][0], covered[-1][1]) == (first, last)
    for interval, low, high in spans:
        assert low < high
        assert align_range(low, high, interval) == (low, high)  # whole buckets only
    hours = sum((high - low) // INTERVALS["hour"] for i, low, high in spans if i == "hour")
    minutes = sum((high - low) // MINUTE for i, low, high in spans if i == "minute")
    assert hours <= 46 and minutes <= 118
    assert len(spans) <= 5


def test_thirty_unaligned_days_read_mostly_days() -> None:
    end = datetime(2026, 1, 31, 13, 45, 30, tzinfo=UTC)
    spans = rollup_spans(end - timedelta(days=30), end)
    assert spans == [
        ("day", datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC)),
        ("hour", datetime(2026, 1, 1, 14, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)),
        ("minute", datetime(2026, 1, 1, 13, 46, tzinfo=UTC), datetime(2026, 1, 1, 14, tzinfo=UTC)),
        ("hour", datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 1, 31, 13, tzinfo=UTC)),
        ("minute", datetime(2026, 1, 31, 13, tzinfo=UTC), datetime(2026, 1, 31, 13, 46, tzinfo=UTC)),
    ]


def test_aligned_and_tiny_ranges() -> None:
    day = datetime(2026, 1, 5, tzinfo=UTC)
    assert rollup_spans(day, day + timedelta(days=2)) == [("day", day, day + timedelta(days=2))]
    assert rollup_spans(day, day + timedelta(hours=3)) == [("hour", day, day + timedelta(hours=3))]
    # Within one minute, after its start: no minute bucket is selected.
    assert rollup_spans(day + timedelta(seconds=1), day + timedelta(seconds=59)) == []
    # A minute's start is selected by any range around it, however short.
    assert rollup_spans(day - timedelta(seconds=1), day + timedelta(seconds=1)) == [
        ("minute", day, day + MINUTE)
    ]
