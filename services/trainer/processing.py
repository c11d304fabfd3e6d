"""Trainer: feedback joined with the response it is about, and training consent. Pure.

Feedback is stored per event, retractions included, with the person whose signal it is; of
one signal identity (response, person, kind) only the latest event by `(occurred_at,
event_id)` gives examples, and none if that is a retraction (the repository marks it
`current`). Feedback naming no person is a signal of its own, always current."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from feedbackloop.contract import (
    ConsentChanged,
    ConsentSet,
    ErasureRequested,
    Event,
    FeedbackRetracted,
    FeedbackSubmitted,
    ResponseLogged,
    ReviewSubmitted,
    UserErased,
)
from services.trainer.reviews.effects import ReviewRecorded, review_effect


@dataclass(frozen=True)
class ResponseStored:
    tenant_id: str
    response_id: str
    event_id: object
    user_id: str | None
    prompt: list[dict[str, Any]]
    context: list[dict[str, Any]]
    output: str
    model: str
    action_type: str
    action_data: dict[str, Any] | None
    feature: str | None
    language: str | None
    prompt_version: str | None
    experiment: str | None
    variant: str | None
    occurred_at: datetime
    session_id: str | None = None


@dataclass(frozen=True)
class FeedbackStored:
    tenant_id: str
    event_id: object
    response_id: str
    user_id: str | None
    kind: str
    thumb: str | None
    rating: int | None
    comment: dict[str, Any] | None
    correction: str | None
    replay: dict[str, Any] | None
    inline_prompt: list[dict[str, Any]] | None
    inline_output: str | None
    inline_model: str | None
    inline_action_type: str | None
    occurred_at: datetime
    session_id: str | None = None
    person: str | None = None  # see `feedbackloop.contract.signal_person`
    retraction: bool = False


TrainerEffect: TypeAlias = ResponseStored | FeedbackStored | ConsentSet | UserErased | ReviewRecorded


def process_message(event: Event) -> TrainerEffect | None:
    match event:
        case ResponseLogged():
            return _response_stored(event)
        case FeedbackSubmitted():
            return _feedback_stored(event)
        case FeedbackRetracted():
            return _retraction_stored(event)
        case ReviewSubmitted():
            return review_effect(event)
        case ConsentChanged():
            return ConsentSet.of(event)
        case ErasureRequested():
            return UserErased.of(event)
    return None


def _response_stored(event: ResponseLogged) -> ResponseStored:
    p = event.payload
    return ResponseStored(
        tenant_id=event.tenant_id,
        response_id=p.response_id,
        event_id=event.event_id,
        user_id=event.user_id,
        prompt=[message.model_dump(mode="json", exclude_none=True) for message in p.prompt],
        context=[document.model_dump(mode="json") for document in p.context],
        output=p.output,
        model=p.model,
        action_type=p.action_type,
        action_data=p.action_data,
        feature=p.feature,
        language=p.language,
        prompt_version=p.prompt_version,
        experiment=event.experiment,
        variant=event.variant,
        occurred_at=event.occurred_at,
        session_id=event.session_id,
    )


def _feedback_stored(event: FeedbackSubmitted) -> FeedbackStored:
    p = event.payload
    return FeedbackStored(
        tenant_id=event.tenant_id,
        event_id=event.event_id,
        response_id=p.response_id,
        user_id=event.user_id,
        kind=p.kind,
        thumb=p.thumb,
        rating=p.rating,
        comment=p.comment.model_dump(mode="json") if p.comment else None,
        correction=p.correction.text if p.correction else None,
        replay=p.replay.model_dump(mode="json") if p.replay else None,
        inline_prompt=(
            [m.model_dump(mode="json", exclude_none=True) for m in p.prompt]
            if p.prompt else None
        ),
        inline_output=p.output,
        inline_model=p.model,
        inline_action_type=p.action_type,
        occurred_at=event.occurred_at,
        session_id=event.session_id,
        person=event.person,
    )


def _retraction_stored(event: FeedbackRetracted) -> FeedbackStored:
    """A retraction is stored like the signal's other events; when it is the latest, the
    signal has no current event (see `repository._mark_current`)."""
    p = event.payload
    return FeedbackStored(
        tenant_id=event.tenant_id,
        event_id=event.event_id,
        response_id=p.response_id,
        user_id=event.user_id,
        kind=p.kind,
        thumb=None,
        rating=None,
        comment=None,
        correction=None,
        replay=None,
        inline_prompt=None,
        inline_output=None,
        inline_model=None,
        inline_action_type=None,
        occurred_at=event.occurred_at,
        session_id=event.session_id,
        person=event.person,
        retraction=True,
    )
