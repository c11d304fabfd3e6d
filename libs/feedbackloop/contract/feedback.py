"""The feedback topic: `feedback.submitted` and `feedback.retracted`.

A feedback event carries exactly one signal: a thumb, a rating, a comment with reason tags, a
correction (the edited final text) or a replay (the AI reply beside the reply an agent sent).
It may carry the prompt and output inline when the response was never logged.

Signals have an identity: `(tenant, response_id, person, kind)`, where the person is the
envelope's `user_id` (the tenant-keyed HMAC of the client's user id) or, when there is none,
the payload's `feedback_key` (an anonymous person's client-chosen id, published only as a
tenant-keyed HMAC too). A signal without either has no identity: every such event is a signal
of its own, as before identities existed.

Of the events of one identity, the current state is the latest by `(occurred_at, event_id)`
(`signal_order`): a later thumb flips the vote, a later rating, comment or correction replaces
the earlier one, and a `feedback.retracted` removes the signal until a later submission
re-establishes it. An older event arriving after a newer one never wins, whatever the order
of arrival. Every read model follows this current state; re-sending an `event_id` is a no-op.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import Field, model_validator

from feedbackloop.contract.envelope import ContractModel, Envelope, Identifier, Label
from feedbackloop.contract.responses import ChatMessage

FeedbackKind = Literal["thumb", "rating", "comment", "correction", "replay"]
FEEDBACK_KINDS: tuple[FeedbackKind, ...] = ("thumb", "rating", "comment", "correction", "replay")


class Comment(ContractModel):
    text: str = Field(min_length=1, max_length=20_000)
    reasons: list[Label] = Field(default_factory=list, max_length=50)


class Correction(ContractModel):
    """The text the person finally used instead of the AI's output (edit-to-final)."""

    text: str = Field(min_length=1, max_length=200_000)


class Replay(ContractModel):
    """The AI's suggested reply beside the reply the agent actually sent."""

    ai_reply: str = Field(min_length=1, max_length=200_000)
    agent_reply: str | None = Field(default=None, max_length=200_000)
    useful: bool | None = None
    message: str | None = Field(default=None, max_length=200_000)


class FeedbackPayload(ContractModel):
    response_id: Identifier
    feedback_key: Identifier | None = Field(
        default=None,
        description="An anonymous person's opaque id (for example a random UUID a browser "
        "keeps), naming whose signal this is when there is no user_id: a later event of the "
        "same person, response and kind replaces this one. Published only as a tenant-keyed "
        "HMAC, like user_id.",
    )
    thumb: Literal["up", "down"] | None = None
    rating: int | None = Field(default=None, ge=1, le=5)
    comment: Comment | None = None
    correction: Correction | None = None
    replay: Replay | None = None
    # Inline context, for feedback on a response that was never logged.
    prompt: list[ChatMessage] | None = Field(default=None, max_length=500)
    output: str | None = Field(default=None, max_length=200_000)
    model: Label | None = None
    action_type: Label | None = None

    @model_validator(mode="after")
    def _exactly_one_signal(self) -> FeedbackPayload:
        present = [kind for kind in FEEDBACK_KINDS if getattr(self, kind) is not None]
        if len(present) != 1:
            raise ValueError(
                "feedback must carry exactly one of thumb, rating, comment, correction, replay"
                f" (got {', '.join(present) or 'none'})"
            )
        return self

    @property
    def kind(self) -> FeedbackKind:
        return next(kind for kind in FEEDBACK_KINDS if getattr(self, kind) is not None)

    @property
    def verdict(self) -> Literal["accepted", "rejected", "neutral"]:
        """Whether the person accepted the AI output: the one rule every read model shares.

        Thumbs up, ratings 4-5 and useful replays accept; thumbs down, ratings 1-2, useless
        replays and corrections reject (the output was not used as it was); the rest is neutral.
        """
        if self.thumb is not None:
            return "accepted" if self.thumb == "up" else "rejected"
        if self.rating is not None:
            if self.rating >= 4:
                return "accepted"
            return "rejected" if self.rating <= 2 else "neutral"
        if self.replay is not None and self.replay.useful is not None:
            return "accepted" if self.replay.useful else "rejected"
        if self.correction is not None:
            return "rejected"
        return "neutral"


def signal_person(user_id: str | None, feedback_key: str | None) -> str | None:
    """Whose signal an event is: `user:<hmac>` for a user, `key:<hmac>` for an anonymous
    feedback key (the user id wins when both are present), None when it names nobody. The
    prefixes keep a user and a feedback key apart even if their hashes were equal."""
    if user_id is not None:
        return f"user:{user_id}"
    if feedback_key is not None:
        return f"key:{feedback_key}"
    return None


def signal_digest(tenant_id: str, response_id: str, person: str, kind: str) -> str:
    """An opaque name of one signal identity (SHA-256, hex), for read models that must tell a
    person's signals apart without knowing who gave them: it differs per response, so rows
    holding it cannot be joined into a person's history, and it never contains the user's
    hash, which erasure searches for."""
    parts = "\x00".join((tenant_id, response_id, person, kind))
    return hashlib.sha256(parts.encode()).hexdigest()


def signal_order(occurred_at: datetime, event_id: UUID) -> tuple[datetime, UUID]:
    """The order of one identity's events: the greatest is the current state. Ties of
    `occurred_at` are broken by the event id (UUIDs compare as PostgreSQL's `uuid` does), so
    every replica and every arrival order picks the same winner."""
    return (occurred_at, event_id)


class FeedbackSubmitted(Envelope):
    type: Literal["feedback.submitted"] = "feedback.submitted"
    payload: FeedbackPayload

    @property
    def subject(self) -> str:
        return self.payload.response_id

    @property
    def kind(self) -> FeedbackKind:
        return self.payload.kind

    @property
    def person(self) -> str | None:
        """See `signal_person`: None means this event is a signal of its own."""
        return signal_person(self.user_id, self.payload.feedback_key)


class RetractionPayload(ContractModel):
    """Which signal a person takes back: theirs, of this kind, on this response."""

    response_id: Identifier
    kind: FeedbackKind
    feedback_key: Identifier | None = Field(
        default=None,
        description="The anonymous person whose signal is retracted, when there is no user_id.",
    )


class FeedbackRetracted(Envelope):
    """`feedback.retracted`: a person takes a signal back (a second click on the same thumb).

    It is an event of the signal's identity like any other: it removes the signal if it is
    later (`signal_order`) than the identity's other events, and a later submission
    re-establishes the signal. It names a person (the envelope's `user_id` or the payload's
    `feedback_key`) or it is invalid. Keyed like feedback (tenant + response_id)."""

    type: Literal["feedback.retracted"] = "feedback.retracted"
    payload: RetractionPayload

    @model_validator(mode="after")
    def _names_a_person(self) -> FeedbackRetracted:
        if self.user_id is None and self.payload.feedback_key is None:
            raise ValueError("a retraction needs user_id or feedback_key")
        return self

    @property
    def subject(self) -> str:
        return self.payload.response_id

    @property
    def kind(self) -> FeedbackKind:
        return self.payload.kind

    @property
    def person(self) -> str:
        person = signal_person(self.user_id, self.payload.feedback_key)
        assert person is not None  # the validator requires one
        return person


FeedbackEvent = FeedbackSubmitted | FeedbackRetracted
