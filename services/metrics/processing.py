"""Metrics: each feedback event as counts in a one-minute bucket. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from feedbackloop.contract import Event, FeedbackSubmitted, ResponseLogged

UNKNOWN = "unknown"
COUNTERS = (
    "thumbs_up",
    "thumbs_down",
    "rating_sum",
    "rating_count",
    "comments",
    "corrections",
    "replays_useful",
    "replays_not_useful",
)


@dataclass(frozen=True)
class ResponseDims:
    tenant_id: str
    response_id: str
    action_type: str
    model: str


@dataclass(frozen=True)
class FeedbackCounts:
    """One feedback event's contribution to its bucket. `action_type`/`model` are the ones
    carried inline, used only until (unless) the response is logged."""

    tenant_id: str
    event_id: object
    response_id: str
    bucket: datetime
    action_type: str | None
    model: str | None
    counts: tuple[int, ...]  # in COUNTERS order


MetricsEffect = ResponseDims | FeedbackCounts


def minute_bucket(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def feedback_counts(event: FeedbackSubmitted) -> tuple[int, ...]:
    p = event.payload
    useful = p.replay.useful if p.replay else None
    values = {
        "thumbs_up": int(p.thumb == "up"),
        "thumbs_down": int(p.thumb == "down"),
        "rating_sum": p.rating or 0,
        "rating_count": int(p.rating is not None),
        "comments": int(p.comment is not None),
        "corrections": int(p.correction is not None),
        "replays_useful": int(useful is True),
        "replays_not_useful": int(useful is False),
    }
    return tuple(values[name] for name in COUNTERS)


def process_message(event: Event) -> MetricsEffect | None:
    match event:
        case ResponseLogged(payload=p):
            return ResponseDims(event.tenant_id, p.response_id, p.action_type, p.model)
        case FeedbackSubmitted(payload=p):
            return FeedbackCounts(
                tenant_id=event.tenant_id,
                event_id=event.event_id,
                response_id=p.response_id,
                bucket=minute_bucket(event.occurred_at),
                action_type=p.action_type,
                model=p.model,
                counts=feedback_counts(event),
            )
    return None
