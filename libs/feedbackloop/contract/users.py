"""User privacy events (topic: consent): training opt-out and the right to be forgotten, and
the one fact each means to every consumer that keeps user data (`ConsentSet`, `UserErased`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


@dataclass(frozen=True)
class ConsentSet:
    """What every consumer takes from a `user.consent_changed`: the user's training consent as
    of `changed_at` (the event's `occurred_at`)."""

    tenant_id: str
    user_id: str
    training_allowed: bool
    changed_at: datetime

    @classmethod
    def of(cls, event: ConsentChanged) -> ConsentSet:
        return cls(event.tenant_id, event.subject, event.payload.training_allowed, event.occurred_at)


@dataclass(frozen=True)
class UserErased:
    """What every consumer takes from a `user.erasure_requested`: forget the user. `erased_at`
    is the erasure's `occurred_at`: earlier events of the user arriving later are dropped by
    the tombstone (migration 0011), later ones are the user coming back."""

    tenant_id: str
    user_id: str
    erased_at: datetime

    @classmethod
    def of(cls, event: ErasureRequested) -> UserErased:
        return cls(event.tenant_id, event.subject, event.occurred_at)
