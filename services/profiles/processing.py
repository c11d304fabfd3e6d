"""Profiles: what each user accepted and rejected. Pure: an event in, an effect out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from feedbackloop.contract import (
    ConsentChanged,
    ErasureRequested,
    Event,
    FeedbackSubmitted,
    ResponseLogged,
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


@dataclass(frozen=True)
class ConsentSet:
    tenant_id: str
    user_id: str
    training_allowed: bool
    changed_at: datetime


@dataclass(frozen=True)
class UserErased:
    tenant_id: str
    user_id: str


ProfileEffect = ResponseSeen | FeedbackGiven | ConsentSet | UserErased


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
        case FeedbackSubmitted(payload=payload) if event.user_id is not None:
            return FeedbackGiven(
                tenant_id=event.tenant_id,
                event_id=event.event_id,
                user_id=event.user_id,
                response_id=payload.response_id,
                kind=payload.kind,
                verdict=payload.verdict,
                thumb=payload.thumb,
                rating=payload.rating,
                comment=payload.comment.text if payload.comment else None,
                reasons=list(payload.comment.reasons) if payload.comment else [],
                correction=payload.correction.text if payload.correction else None,
                action_type=payload.action_type,
                occurred_at=event.occurred_at,
            )
        case ConsentChanged(payload=payload):
            assert event.user_id is not None
            return ConsentSet(
                event.tenant_id, event.user_id, payload.training_allowed, event.occurred_at
            )
        case ErasureRequested():
            assert event.user_id is not None
            return UserErased(event.tenant_id, event.user_id)
    return None
