"""`feedback.submitted`: what a person did with an AI output (topic: feedback).

A feedback event carries exactly one signal: a thumb, a rating, a comment with reason tags, a
correction (the edited final text) or a replay (the AI reply beside the reply an agent sent).
It may carry the prompt and output inline when the response was never logged.
"""

from __future__ import annotations

from typing import Literal

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


class FeedbackSubmitted(Envelope):
    type: Literal["feedback.submitted"] = "feedback.submitted"
    payload: FeedbackPayload

    @property
    def subject(self) -> str:
        return self.payload.response_id
