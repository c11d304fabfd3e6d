"""The training-examples topic: what the trainer publishes through its outbox.

`training_example` is one revision of an example (SFT, preference pair, KTO row or eval case),
PII redacted; a consumer keeps the highest `revision` of each `example_id`. A changed example
(a flipped thumb, an edited correction) is published again with a higher revision.
`training_example.retracted` says an example published earlier no longer exists (erasure,
opt-out, or `superseded`: a change no longer gives it). Keyed `<tenant_id>:<conversation_id>`.

These messages have no envelope: their idempotency key (`event_id`) is derived from what they
are, so a message the relay publishes twice (a crash between the broker's acknowledgement and
the mark) is the same message both times.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from feedbackloop.contract.envelope import ContractModel, Identifier, UtcDatetime

_MESSAGE_NAMESPACE = uuid.UUID("6b1d3f0e-55a4-4c1e-9f57-3a0f7c2b9d41")


class TrainingExample(ContractModel):
    """`training_example`: one revision of a stored example, as exports see it."""

    type: Literal["training_example"] = "training_example"
    schema_version: int = 1
    example_id: UUID
    revision: int = Field(ge=1)
    tenant_id: Identifier
    kind: Literal["sft", "preference", "kto", "eval"]
    split: Literal["train", "eval"]
    conversation_id: str
    response_id: str
    prompt: list[dict[str, Any]] = Field(default_factory=list)
    context: list[dict[str, Any]] = Field(default_factory=list)
    action_data: Any = None
    completion: Any = None
    label: bool | None = None
    chosen: Any = None
    rejected: Any = None
    output: Any = None
    reference: Any = None
    quality: float
    provenance: dict[str, Any] = Field(default_factory=dict)

    @property
    def event_id(self) -> UUID:
        """The same for every publication of one revision of one example."""
        return uuid.uuid5(_MESSAGE_NAMESPACE, f"{self.example_id}:{self.revision}")


class TrainingExampleRetracted(ContractModel):
    """`training_example.retracted`: delete every revision of `example_id`."""

    type: Literal["training_example.retracted"] = "training_example.retracted"
    schema_version: int = 1
    example_id: UUID
    tenant_id: Identifier
    conversation_id: str
    reason: str
    retracted_at: UtcDatetime

    @property
    def event_id(self) -> UUID:
        """The same for every publication of one retraction."""
        return uuid.uuid5(
            _MESSAGE_NAMESPACE, f"{self.example_id}:retracted:{self.retracted_at.isoformat()}"
        )


TrainingExampleMessage = TrainingExample | TrainingExampleRetracted
