"""What training examples are built from (a stored response and its feedback) and what one
is (`TrainingExample`, whose `record` is the published document). Pure."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

ExampleKind = Literal["sft", "preference", "kto", "eval"]
Split = Literal["train", "eval"]


@dataclass(frozen=True)
class ResponseRecord:
    """A logged response, as the trainer stored it."""

    event_id: uuid.UUID
    user_id: str | None
    session_id: str | None
    prompt: list[dict[str, Any]]
    context: list[dict[str, Any]]
    output: str
    model: str
    action_type: str
    action_data: dict[str, Any] | None
    feature: str | None
    language: str | None
    prompt_version: str | None
    occurred_at: datetime


@dataclass(frozen=True)
class FeedbackRecord:
    """A feedback event on the response, as the trainer stored it."""

    event_id: uuid.UUID
    user_id: str | None
    session_id: str | None
    kind: str
    thumb: str | None
    rating: int | None
    correction: str | None
    replay: dict[str, Any] | None
    inline_prompt: list[dict[str, Any]] | None
    inline_output: str | None
    inline_model: str | None
    inline_action_type: str | None
    occurred_at: datetime
    # Whose signal it is (`feedbackloop.contract.signal_person`); None: a signal of its own.
    person: str | None = None


@dataclass(frozen=True)
class TrainingExample:
    """One example, ready to store and publish. `record` is the published document."""

    example_id: uuid.UUID
    tenant_id: str
    kind: ExampleKind
    split: Split
    conversation_id: str
    response_id: str
    user_ids: tuple[str, ...]
    model: str | None
    action_type: str | None
    quality: float
    occurred_at: datetime
    record: dict[str, Any]
    dedupe_group: str
    content_hash: str
    sketch: tuple[int, ...] = field(repr=False)


def published_document(
    record: dict[str, Any], *, revision: int, created_at: datetime
) -> dict[str, Any]:
    """A stored record as consumers and exports see it: typed, with its revision (a consumer
    keeps the highest revision of each `example_id`) and when it was first built."""
    provenance = record["provenance"] | {"created_at": created_at.isoformat()}
    return {"type": "training_example", "revision": revision} | record | {"provenance": provenance}
