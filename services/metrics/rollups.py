"""The metrics rollups' time structure, pure: the minute, hour and day buckets the metrics
consumer writes, how a range is widened to whole buckets, and how any range is read exactly from
the coarsest rollups that hold it. No I/O; used by this service's reads and by analytics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

IntervalName = Literal["minute", "hour", "day"]
INTERVALS: dict[str, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}

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
