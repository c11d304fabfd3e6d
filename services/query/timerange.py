"""The `from`/`to` query parameters every query route shares."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from feedbackloop.http.problems import ProblemException

DEFAULT_SPAN = timedelta(days=30)


def aware(value: datetime | None) -> datetime | None:
    """Naive timestamps in a query are read as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def check_order(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and start >= end:
        raise ProblemException(
            422,
            "`from` must be before `to`.",
            errors=[{"loc": ["query", "from"], "msg": "must be before `to`", "type": "value_error"}],
        )


def time_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """`[from, to)` in UTC, defaulting to the 30 days up to now; 422 if `from` is not before."""
    end = aware(end).astimezone(UTC) if end else datetime.now(UTC)  # type: ignore[union-attr]
    start = aware(start).astimezone(UTC) if start else end - DEFAULT_SPAN  # type: ignore[union-attr]
    check_order(start, end)
    return start, end
