"""User privacy events (topic: consent): training opt-out and the right to be forgotten."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from feedbackloop.contract.envelope import ContractModel, Envelope


class ConsentPayload(ContractModel):
    """`training_allowed=False` opts the user's events out of training use from then on."""

    training_allowed: bool


class ErasurePayload(ContractModel):
    reason: str | None = Field(default=None, max_length=2_000)


class _UserEvent(Envelope):
    @model_validator(mode="after")
    def _user_required(self) -> _UserEvent:
        if self.user_id is None:
            raise ValueError("user_id is required on user events")
        return self

    @property
    def subject(self) -> str:
        assert self.user_id is not None
        return self.user_id


class ConsentChanged(_UserEvent):
    type: Literal["user.consent_changed"] = "user.consent_changed"
    payload: ConsentPayload


class ErasureRequested(_UserEvent):
    type: Literal["user.erasure_requested"] = "user.erasure_requested"
    payload: ErasurePayload
