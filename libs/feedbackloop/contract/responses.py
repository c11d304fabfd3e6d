"""`response.logged`: an AI output that can receive feedback (topic: responses)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from feedbackloop.contract.envelope import ContractModel, Envelope, Identifier, JsonObject, Label


class FunctionCall(ContractModel):
    name: str = Field(min_length=1, max_length=200)
    arguments: str = Field(default="{}", max_length=200_000, description="JSON, as a string")


class ToolCall(ContractModel):
    """A call an assistant message made, in OpenAI's chat shape."""

    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(ContractModel):
    """A chat message. An assistant message may make tool calls (its content may then be
    empty); a tool message answers one of them by `tool_call_id`."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=200_000)
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _content_of_a_tool_call(cls, data: Any) -> Any:
        # An assistant message that only calls tools often comes with `content: null`.
        if isinstance(data, dict) and data.get("tool_calls") and data.get("content") is None:
            return data | {"content": ""}
        return data

    @model_validator(mode="after")
    def _tool_fields_where_they_belong(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an assistant message makes tool calls")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError("only a tool message answers a tool call (tool_call_id)")
        return self


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
