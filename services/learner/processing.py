"""Learner: the choice log, each choice beside the options that were shown, and the decisions
of the refit loop (which segments are due, what a published version says). Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from feedbackloop.contract import Choice, ErasureRequested, Event, SessionStarted, UserErased
from feedbackloop.contract.weights import WEIGHTS_SCHEMA_VERSION
from services.learner.choice_data import ObservedChoice


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


LearnerEffect: TypeAlias = SessionShown | ChoiceMade | UserErased


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
            return UserErased.of(event)
    return None


@dataclass(frozen=True)
class PendingChoices:
    """Choices of one tenant's segment that no refit has read yet."""

    tenant_id: str
    segment: str
    new_choices: int
    oldest_new_at: datetime
    last_fitted_at: datetime | None


def segments_due(
    pending: Sequence[PendingChoices], *, now: datetime, min_new_choices: int,
    interval_seconds: float,
) -> dict[str, list[str]]:
    """Which segments of which tenants to refit now: a segment is due when it has
    `min_new_choices` new choices, or when it has any and `interval_seconds` have passed since
    its last refit (since its oldest new choice when it was never fitted). Batching this way
    means a stream of choices costs one refit per batch, not one per event."""
    due: dict[str, list[str]] = {}
    for row in pending:
        since = row.last_fitted_at or row.oldest_new_at
        waited = (now - since).total_seconds()
        if row.new_choices >= min_new_choices or (
            row.new_choices > 0 and waited >= interval_seconds
        ):
            due.setdefault(row.tenant_id, []).append(row.segment)
    return {tenant: sorted(segments) for tenant, segments in due.items()}


def group_choices(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[ObservedChoice]]:
    """Logged choices (`segment`, `options`, `chosen_item_id`) grouped by segment."""
    grouped: dict[str, list[ObservedChoice]] = {}
    for row in rows:
        grouped.setdefault(row["segment"], []).append(
            ObservedChoice(options=row["options"], chosen_item_id=row["chosen_item_id"])
        )
    return grouped


def weights_message(version: Mapping[str, Any]) -> dict[str, Any]:
    """What the weights topic carries for one stored version (keyed by tenant and segment):
    a `SegmentWeightsVersion` of the contract, schema version 2."""
    promotion = version.get("promotion")
    return {
        "type": "segment_weights.version",
        "schema_version": WEIGHTS_SCHEMA_VERSION,
        "kind": version.get("kind") or "full",
        "promotion": (
            {key: promotion[key] for key in ("promoted", "reason", "sessions") if key in promotion}
            if promotion else None
        ),
        "tenant_id": version["tenant_id"],
        "segment": version["segment"],
        "version": version["version"],
        "weights": version["weights"],
        "intervals": version["intervals"],
        "confidence": version["confidence"],
        "sample_size": version["sample_size"],
        "rank_effects": version["rank_effects"],
        "fitted_at": version["fitted_at"].isoformat(),
    }
