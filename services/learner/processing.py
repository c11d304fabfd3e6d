"""Learner: the choice log, each choice beside the options that were shown. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from feedbackloop.contract import Choice, ErasureRequested, Event, SessionStarted


@dataclass(frozen=True)
class SessionShown:
    tenant_id: str
    session_id: str
    event_id: object
    user_id: str | None
    algorithm_version: str
    segment: str | None
    complexity: str | None
    stated_preferences: list[str]
    options: list[dict[str, Any]]
    experiment: str | None
    variant: str | None
    occurred_at: datetime


@dataclass(frozen=True)
class ChoiceMade:
    tenant_id: str
    event_id: object
    session_id: str
    user_id: str | None
    chosen_item_id: str | None
    chosen_rank: int | None
    important_factors: list[str]
    decision_time_seconds: float | None
    satisfaction: int | None
    reasoning: str | None
    occurred_at: datetime


@dataclass(frozen=True)
class UserErased:
    tenant_id: str
    user_id: str


LearnerEffect = SessionShown | ChoiceMade | UserErased


def process_message(event: Event) -> LearnerEffect | None:
    match event:
        case SessionStarted(payload=payload):
            assert event.session_id is not None
            return SessionShown(
                tenant_id=event.tenant_id,
                session_id=event.session_id,
                event_id=event.event_id,
                user_id=event.user_id,
                algorithm_version=payload.algorithm_version,
                segment=payload.segment,
                complexity=payload.complexity,
                stated_preferences=list(payload.stated_preferences),
                options=[option.model_dump(mode="json") for option in payload.options],
                experiment=event.experiment,
                variant=event.variant,
                occurred_at=event.occurred_at,
            )
        case Choice(payload=payload):
            assert event.session_id is not None
            return ChoiceMade(
                tenant_id=event.tenant_id,
                event_id=event.event_id,
                session_id=event.session_id,
                user_id=event.user_id,
                chosen_item_id=payload.chosen_item_id,
                chosen_rank=payload.chosen_rank,
                important_factors=list(payload.important_factors),
                decision_time_seconds=payload.decision_time_seconds,
                satisfaction=payload.satisfaction,
                reasoning=payload.reasoning,
                occurred_at=event.occurred_at,
            )
        case ErasureRequested():
            assert event.user_id is not None
            return UserErased(event.tenant_id, event.user_id)
    return None
