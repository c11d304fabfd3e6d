"""Metrics: each event as counts in a one-minute bucket, under its dimensions. Pure.

Two families of rollups, each with a subject that defines the dimensions and signals about it:

- feedback: `response.logged` defines a response's dimensions (action type, model, prompt
  version, experiment, variant, language, feature); `feedback.submitted` is counted under them.
- recommendation: `recommendation.session_started` defines a session's dimensions (algorithm
  version, segment, experiment, variant) and counts one session; `recommendation.choice` is
  counted under them (a choice or "none chosen", chosen rank, satisfaction, decision time).

A signal that arrives before its subject is counted under provisional dimensions (what its own
envelope carries, `unknown` otherwise) and moved when the subject arrives (the repository).

People change their minds: feedback with an identity (see `feedbackloop.contract.feedback`) is
counted as the identity's current state, not per event. Of the identity's events the latest by
`(occurred_at, event_id)` is counted and every other one is not; a `feedback.retracted` that is
the latest counts nothing. The current signal counts in the minute of its winning event (the
bucket rule below), so a flip moves the count from the old vote's minute to the new vote's, and
every rollup equals a recount of the current signals in any arrival order. Anonymous feedback
without a feedback key has no identity: each such event counts, as it always did.

Lateness: a signal lands in the minute of its `occurred_at`, clamped to
`[received_at - lateness, received_at]`. Nothing is ever dropped: an event reported later than
the window is counted, exactly once, in the oldest minute the window still allows, so the series
older than the window are final (alerts and Prometheus evaluated over them stay true) while every
total stays exact. A client clock running ahead cannot put counts into the future. Both bounds
come from the event itself, so a redelivery or a replay lands in the same bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Literal
from uuid import UUID

from feedbackloop.contract import (
    Choice,
    ErasureRequested,
    Event,
    ExperimentExposure,
    FeedbackRetracted,
    FeedbackSubmitted,
    ResponseLogged,
    SessionStarted,
    UserErased,
    signal_digest,
)
from services.metrics.exposures import ExposureSeen, exposure_seen

UNKNOWN = "unknown"
DEFAULT_LATENESS = timedelta(hours=48)
Family = Literal["feedback", "recommendation"]

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
FEEDBACK_DIMENSIONS = (
    "action_type", "model", "prompt_version", "experiment", "variant", "language", "feature",
)
RECOMMENDATION_COUNTERS = (
    "sessions",
    "choices",
    "none_chosen",
    "chosen_rank_sum",
    "chosen_rank_count",
    "satisfaction_sum",
    "satisfaction_count",
    "decision_ms_sum",
    "decision_count",
)
RECOMMENDATION_DIMENSIONS = ("algorithm_version", "segment", "experiment", "variant")
DIMENSIONS: dict[Family, tuple[str, ...]] = {
    "feedback": FEEDBACK_DIMENSIONS,
    "recommendation": RECOMMENDATION_DIMENSIONS,
}
COUNTERS_OF: dict[Family, tuple[str, ...]] = {
    "feedback": COUNTERS,
    "recommendation": RECOMMENDATION_COUNTERS,
}


def _known(value: str | None) -> str:
    return value if value else UNKNOWN


@dataclass(frozen=True)
class ResponseDims:
    """A logged response: the dimensions its feedback is counted under (the first one wins)."""

    family: ClassVar[Family] = "feedback"
    tenant_id: str
    response_id: str
    action_type: str
    model: str
    prompt_version: str = UNKNOWN
    experiment: str = UNKNOWN
    variant: str = UNKNOWN
    language: str = UNKNOWN
    feature: str = UNKNOWN

    @property
    def subject_id(self) -> str:
        return self.response_id

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(getattr(self, name) for name in FEEDBACK_DIMENSIONS)


@dataclass(frozen=True)
class FeedbackCounts:
    """One feedback event's contribution to its bucket. `action_type`/`model` (and the
    envelope's experiment/variant) are the ones carried inline, used only until (unless) the
    response is logged.

    `signal` names the event's identity (`signal_digest`), None for an event that is a signal
    of its own; with one, the contribution counts only while the event is the identity's latest
    by `(occurred_at, event_id)`. A retraction is such an event with no counts
    (`retracted`)."""

    family: ClassVar[Family] = "feedback"
    tenant_id: str
    event_id: UUID
    response_id: str
    bucket: datetime
    action_type: str | None
    model: str | None
    counts: tuple[int, ...]  # in COUNTERS order
    experiment: str | None = None
    variant: str | None = None
    signal: str | None = None
    occurred_at: datetime | None = None
    retracted: bool = False

    @property
    def subject_id(self) -> str:
        return self.response_id

    @property
    def order(self) -> tuple[datetime, UUID]:
        assert self.occurred_at is not None
        return (self.occurred_at, self.event_id)

    @property
    def provisional_dims(self) -> tuple[str, ...]:
        return (
            _known(self.action_type), _known(self.model), UNKNOWN, _known(self.experiment),
            _known(self.variant), UNKNOWN, UNKNOWN,
        )


@dataclass(frozen=True)
class SessionOpened:
    """A recommendation session: its dimensions (the first one wins) and, counted once per
    session in the minute it started, one session."""

    family: ClassVar[Family] = "recommendation"
    tenant_id: str
    session_id: str
    bucket: datetime
    algorithm_version: str
    segment: str
    experiment: str
    variant: str

    @property
    def subject_id(self) -> str:
        return self.session_id

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(getattr(self, name) for name in RECOMMENDATION_DIMENSIONS)

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(int(name == "sessions") for name in RECOMMENDATION_COUNTERS)


@dataclass(frozen=True)
class ChoiceCounts:
    """One choice event's contribution to its bucket, under its session's dimensions once the
    session is known (the envelope's experiment/variant until then)."""

    family: ClassVar[Family] = "recommendation"
    tenant_id: str
    event_id: UUID
    session_id: str
    bucket: datetime
    experiment: str | None
    variant: str | None
    counts: tuple[int, ...]  # in RECOMMENDATION_COUNTERS order

    @property
    def subject_id(self) -> str:
        return self.session_id

    @property
    def provisional_dims(self) -> tuple[str, ...]:
        return (UNKNOWN, UNKNOWN, _known(self.experiment), _known(self.variant))


SubjectDims = ResponseDims | SessionOpened
SignalCounts = FeedbackCounts | ChoiceCounts
MetricsEffect = SubjectDims | SignalCounts | ExposureSeen | UserErased


def minute_bucket(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def hour_bucket(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def day_bucket(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def event_bucket(event: Event, lateness: timedelta = DEFAULT_LATENESS) -> datetime:
    """The minute an event is counted in: its `occurred_at`, clamped into the lateness window
    `[received_at - lateness, received_at]` (see the module docstring)."""
    moment = min(max(event.occurred_at, event.received_at - lateness), event.received_at)
    return minute_bucket(moment)


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


def choice_counts(event: Choice) -> tuple[int, ...]:
    """Decision time is kept in whole milliseconds so that its sums stay exact integers."""
    p = event.payload
    decision_ms = (
        round(p.decision_time_seconds * 1000) if p.decision_time_seconds is not None else None
    )
    values = {
        "sessions": 0,
        "choices": int(not p.none_chosen),
        "none_chosen": int(p.none_chosen),
        "chosen_rank_sum": p.chosen_rank or 0,
        "chosen_rank_count": int(p.chosen_rank is not None),
        "satisfaction_sum": p.satisfaction or 0,
        "satisfaction_count": int(p.satisfaction is not None),
        "decision_ms_sum": decision_ms or 0,
        "decision_count": int(decision_ms is not None),
    }
    return tuple(values[name] for name in RECOMMENDATION_COUNTERS)


def process_message(
    event: Event, lateness: timedelta = DEFAULT_LATENESS
) -> MetricsEffect | None:
    """The event's effect on the rollups; None for events metrics does not count."""
    match event:
        case ResponseLogged(payload=p):
            return ResponseDims(
                tenant_id=event.tenant_id,
                response_id=p.response_id,
                action_type=p.action_type,
                model=p.model,
                prompt_version=_known(p.prompt_version),
                experiment=_known(event.experiment),
                variant=_known(event.variant),
                language=_known(p.language),
                feature=_known(p.feature),
            )
        case FeedbackSubmitted() | FeedbackRetracted():
            return _feedback_counts(event, lateness)
        case SessionStarted(payload=p):
            return SessionOpened(
                tenant_id=event.tenant_id,
                session_id=event.subject,
                bucket=event_bucket(event, lateness),
                algorithm_version=p.algorithm_version,
                segment=_known(p.segment),
                experiment=_known(event.experiment),
                variant=_known(event.variant),
            )
        case ExperimentExposure():
            return exposure_seen(event, event_bucket(event, lateness))
        case ErasureRequested():
            # The rollups hold counts, not people; the experiment units are the one place a
            # user's (digested) id is kept, and the erasure removes them.
            return UserErased.of(event)
        case Choice():
            return ChoiceCounts(
                tenant_id=event.tenant_id,
                event_id=event.event_id,
                session_id=event.subject,
                bucket=event_bucket(event, lateness),
                experiment=event.experiment,
                variant=event.variant,
                counts=choice_counts(event),
            )
    return None


def _feedback_counts(
    event: FeedbackSubmitted | FeedbackRetracted, lateness: timedelta
) -> FeedbackCounts:
    """A feedback event's counts; a retraction counts nothing and takes its signal's place."""
    response_id = event.payload.response_id
    if isinstance(event, FeedbackRetracted):
        action_type, model, counts = None, None, (0,) * len(COUNTERS)
    else:
        action_type, model = event.payload.action_type, event.payload.model
        counts = feedback_counts(event)
    person = event.person  # always set on a retraction: it names whose signal it takes back
    return FeedbackCounts(
        tenant_id=event.tenant_id,
        event_id=event.event_id,
        response_id=response_id,
        bucket=event_bucket(event, lateness),
        action_type=action_type,
        model=model,
        counts=counts,
        experiment=event.experiment,
        variant=event.variant,
        signal=(
            signal_digest(event.tenant_id, response_id, person, event.kind)
            if person is not None
            else None
        ),
        occurred_at=event.occurred_at,
        retracted=isinstance(event, FeedbackRetracted),
    )
