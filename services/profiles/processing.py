"""Profiles: what each user accepted and rejected, and what they were shown and chose among
recommendations. Pure: an event in, an effect out.

Feedback is kept as history, one row per event, retractions included; of one signal identity
(the user, the response and the kind) only the latest event by `(occurred_at, event_id)` is
current, and none is when that latest event is a retraction (the repository keeps the flag).
Verdicts and suppression read current rows; the history shows every change. Anonymous
feedback (no user id, with or without a feedback key) has no profile."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from feedbackloop.contract import (
    Choice,
    ConsentChanged,
    ConsentSet,
    ErasureRequested,
    Event,
    FeedbackRetracted,
    FeedbackSubmitted,
    Interaction,
    ResponseLogged,
    SessionStarted,
    UserErased,
)


@dataclass(frozen=True)
class ResponseSeen:
    tenant_id: str
    response_id: str
    action_type: str
    model: str
    occurred_at: datetime


@dataclass(frozen=True)
class FeedbackGiven:
    tenant_id: str
    event_id: object
    user_id: str
    response_id: str
    kind: str
    verdict: str
    thumb: str | None
    rating: int | None
    comment: str | None
    reasons: list[str]
    correction: str | None
    action_type: str | None
    occurred_at: datetime
    retraction: bool = False  # the user took back their signal of `kind` on the response


@dataclass(frozen=True)
class RecommendationShown:
    tenant_id: str
    session_id: str
    user_id: str
    segment: str | None
    complexity: str | None
    stated_preferences: list[str]
    options: list[dict[str, Any]]
    occurred_at: datetime


@dataclass(frozen=True)
class RecommendationInteracted:
    tenant_id: str
    event_id: object
    session_id: str
    user_id: str
    item_id: str
    interaction: str
    time_spent_seconds: float | None
    helpful_rating: int | None
    occurred_at: datetime


@dataclass(frozen=True)
class RecommendationDecided:
    tenant_id: str
    event_id: object
    session_id: str
    user_id: str
    chosen_item_id: str | None
    chosen_rank: int | None
    important_factors: list[str]
    decision_time_seconds: float | None
    satisfaction: int | None
    occurred_at: datetime


ProfileEffect: TypeAlias = (
    ResponseSeen
    | FeedbackGiven
    | ConsentSet
    | UserErased
    | RecommendationShown
    | RecommendationInteracted
    | RecommendationDecided
)


def process_message(event: Event) -> ProfileEffect | None:
    match event:
        case ResponseLogged(payload=payload):
            return ResponseSeen(
                event.tenant_id,
                payload.response_id,
                payload.action_type,
                payload.model,
                event.occurred_at,
            )
        case FeedbackSubmitted() | FeedbackRetracted() if event.user_id is not None:
            return _feedback_given(event)
        # Recommendation events matter to a profile only when they name the user.
        case SessionStarted() | Interaction() | Choice() if event.user_id is not None:
            return _recommendation_effect(event)
        case ConsentChanged():
            return ConsentSet.of(event)
        case ErasureRequested():
            return UserErased.of(event)
    return None


def _feedback_given(event: FeedbackSubmitted | FeedbackRetracted) -> FeedbackGiven:
    """A vote, rating, comment or correction of the user, or (a retraction) the user taking
    their signal of that kind back: verdict neutral, nothing else kept."""
    assert event.user_id is not None
    payload = event.payload
    given = None if isinstance(event, FeedbackRetracted) else event.payload
    return FeedbackGiven(
        tenant_id=event.tenant_id,
        event_id=event.event_id,
        user_id=event.user_id,
        response_id=payload.response_id,
        kind=payload.kind,
        verdict=given.verdict if given else "neutral",
        thumb=given.thumb if given else None,
        rating=given.rating if given else None,
        comment=given.comment.text if given and given.comment else None,
        reasons=list(given.comment.reasons) if given and given.comment else [],
        correction=given.correction.text if given and given.correction else None,
        action_type=given.action_type if given else None,
        occurred_at=event.occurred_at,
        retraction=given is None,
    )


def _recommendation_effect(
    event: SessionStarted | Interaction | Choice,
) -> RecommendationShown | RecommendationInteracted | RecommendationDecided:
    """What the user was shown, how they browsed it and what they chose."""
    assert event.session_id is not None and event.user_id is not None
    match event:
        case SessionStarted(payload=payload):
            return RecommendationShown(
                tenant_id=event.tenant_id,
                session_id=event.session_id,
                user_id=event.user_id,
                segment=payload.segment,
                complexity=payload.complexity,
                stated_preferences=list(payload.stated_preferences),
                options=[option.model_dump(mode="json", exclude={"explanation"})
                         for option in payload.options],
                occurred_at=event.occurred_at,
            )
        case Interaction(payload=payload):
            return RecommendationInteracted(
                tenant_id=event.tenant_id,
                event_id=event.event_id,
                session_id=event.session_id,
                user_id=event.user_id,
                item_id=payload.item_id,
                interaction=payload.interaction,
                time_spent_seconds=payload.time_spent_seconds,
                helpful_rating=payload.helpful_rating,
                occurred_at=event.occurred_at,
            )
    choice = event.payload
    return RecommendationDecided(
        tenant_id=event.tenant_id,
        event_id=event.event_id,
        session_id=event.session_id,
        user_id=event.user_id,
        chosen_item_id=choice.chosen_item_id,
        chosen_rank=choice.chosen_rank,
        important_factors=list(choice.important_factors),
        decision_time_seconds=choice.decision_time_seconds,
        satisfaction=choice.satisfaction,
        occurred_at=event.occurred_at,
    )
