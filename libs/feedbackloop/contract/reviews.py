"""`review.submitted`: what a reviewer did with a response in the review console.

Reviews are events like any other: the console publishes them through ingest and the trainer
materializes them. One event is one action of one reviewer on one response:

- `label`: the reviewer's answer `value` to the question `label` (for example `verdict`:
  `wrong`). Per (tenant, response, reviewer, label) the latest by `(occurred_at, event_id)`
  is the reviewer's current answer; several reviewers answering one question give the
  agreement the console shows.
- `reviewed`: the response has been looked at (the latest such event names who and when).
- `assigned`: the response is someone's to look at (`assignee`), the latest event wins.

The reviewer is the API key that sent the event (`reviewer` is its key id, `reviewer_name`
its name), set by ingest, never taken from a request body. Keyed like feedback: tenant +
`response_id`, on the feedback topic.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from feedbackloop.contract.envelope import ContractModel, Envelope, Identifier, Label

ReviewAction = Literal["label", "reviewed", "assigned"]
REVIEW_ACTIONS: tuple[ReviewAction, ...] = ("label", "reviewed", "assigned")


class ReviewFields(ContractModel):
    """What a reviewer says: the fields a request may set."""

    response_id: Identifier
    action: ReviewAction
    label: Label | None = Field(
        default=None, description="The question answered, for `label` (e.g. `verdict`)."
    )
    value: Label | None = Field(
        default=None, description="The reviewer's answer, for `label` (e.g. `wrong`)."
    )
    assignee: Identifier | None = Field(
        default=None, description="Whose the response is to review, for `assigned`."
    )
    note: str | None = Field(default=None, max_length=2_000)

    @model_validator(mode="after")
    def _fields_of_action(self) -> ReviewFields:
        if self.action == "label" and (self.label is None or self.value is None):
            raise ValueError("a label needs `label` (the question) and `value` (the answer)")
        if self.action == "assigned" and self.assignee is None:
            raise ValueError("an assignment needs `assignee`")
        if self.action != "label" and (self.label is not None or self.value is not None):
            raise ValueError("`label` and `value` belong to the `label` action only")
        if self.action != "assigned" and self.assignee is not None:
            raise ValueError("`assignee` belongs to the `assigned` action only")
        return self


class ReviewPayload(ReviewFields):
    reviewer: Identifier = Field(description="The key id of the API key that sent the review.")
    reviewer_name: Label | None = Field(default=None, description="That key's name.")


class ReviewSubmitted(Envelope):
    type: Literal["review.submitted"] = "review.submitted"
    payload: ReviewPayload

    @property
    def subject(self) -> str:
        return self.payload.response_id
