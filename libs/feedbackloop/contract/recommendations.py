"""Recommendation events (topic: recommendations), keyed by the recommendation session.

The envelope's `session_id` names the recommendation session and is required on these types.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from feedbackloop.contract.envelope import ContractModel, Envelope, Identifier, Label

Segment = Literal[
    "price_sensitive",
    "quality_focused",
    "speed_priority",
    "local_preference",
    "premium_buyer",
    "balanced",
]
SEGMENTS: tuple[Segment, ...] = (
    "price_sensitive",
    "quality_focused",
    "speed_priority",
    "local_preference",
    "premium_buyer",
    "balanced",
)
FactorName = Label


class ShownOption(ContractModel):
    """One option in the list shown to the customer."""

    item_id: Identifier
    rank: int = Field(ge=1, le=1_000)
    scores: dict[FactorName, float] = Field(default_factory=dict, max_length=50)
    total: float | None = None
    explanation: str | None = Field(default=None, max_length=5_000)
    category: Label | None = None
    propensity: float | None = Field(default=None, gt=0.0, le=1.0)


class SessionStartedPayload(ContractModel):
    algorithm_version: Label
    options: list[ShownOption] = Field(min_length=1, max_length=200)
    segment: Segment | None = None
    complexity: Label | None = None
    stated_preferences: list[FactorName] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _ranks_and_items_unique(self) -> SessionStartedPayload:
        ranks = [option.rank for option in self.options]
        if len(set(ranks)) != len(ranks):
            raise ValueError("options must have distinct ranks")
        items = [option.item_id for option in self.options]
        if len(set(items)) != len(items):
            raise ValueError("options must have distinct item_id values")
        return self


class InteractionPayload(ContractModel):
    item_id: Identifier
    interaction: Literal["viewed", "expanded", "compared", "contacted"]
    time_spent_seconds: float | None = Field(default=None, ge=0.0, le=86_400.0)
    explanation_level: Label | None = None
    expanded_sections: list[Label] = Field(default_factory=list, max_length=50)
    helpful_rating: int | None = Field(default=None, ge=1, le=5)


class ChoicePayload(ContractModel):
    """The customer's decision; `chosen_item_id` absent means none was chosen."""

    chosen_item_id: Identifier | None = None
    chosen_rank: int | None = Field(default=None, ge=1, le=1_000)
    reasoning: str | None = Field(default=None, max_length=20_000)
    important_factors: list[FactorName] = Field(default_factory=list, max_length=50)
    decision_time_seconds: float | None = Field(default=None, ge=0.0, le=31_536_000.0)
    satisfaction: int | None = Field(default=None, ge=1, le=5)

    @model_validator(mode="after")
    def _item_and_rank_together(self) -> ChoicePayload:
        if (self.chosen_item_id is None) != (self.chosen_rank is None):
            raise ValueError("chosen_item_id and chosen_rank are given together or not at all")
        return self

    @property
    def none_chosen(self) -> bool:
        return self.chosen_item_id is None


class _RecommendationEvent(Envelope):
    @model_validator(mode="after")
    def _session_required(self) -> _RecommendationEvent:
        if self.session_id is None:
            raise ValueError("session_id is required on recommendation events")
        return self

    @property
    def subject(self) -> str:
        assert self.session_id is not None
        return self.session_id


class SessionStarted(_RecommendationEvent):
    type: Literal["recommendation.session_started"] = "recommendation.session_started"
    payload: SessionStartedPayload


class Interaction(_RecommendationEvent):
    type: Literal["recommendation.interaction"] = "recommendation.interaction"
    payload: InteractionPayload


class Choice(_RecommendationEvent):
    type: Literal["recommendation.choice"] = "recommendation.choice"
    payload: ChoicePayload
