"""`response.logged`: an AI output that can receive feedback (topic: responses)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from feedbackloop.contract.envelope import ContractModel, Envelope, Identifier, JsonObject, Label


class ChatMessage(ContractModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=200_000)


class ContextDocument(ContractModel):
    """A retrieved document that was in the prompt."""

    text: str = Field(max_length=200_000)
    source: str | None = Field(default=None, max_length=2_000)
    document_id: str | None = Field(default=None, max_length=200)


class ResponsePayload(ContractModel):
    response_id: Identifier
    prompt: list[ChatMessage] = Field(min_length=1, max_length=500)
    context: list[ContextDocument] = Field(default_factory=list, max_length=200)
    output: str = Field(min_length=1, max_length=200_000)
    model: Label
    action_type: Label = "unspecified"
    action_data: JsonObject | None = None
    feature: Label | None = None
    language: Label | None = None
    prompt_version: Label | None = None


class ResponseLogged(Envelope):
    type: Literal["response.logged"] = "response.logged"
    payload: ResponsePayload

    @property
    def subject(self) -> str:
        return self.payload.response_id
