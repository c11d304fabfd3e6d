"""Reviews from the console (`review.submitted`) as trainer effects. Pure.

Each review is one reviewer's action on one response. The repository keeps, per (tenant,
response, reviewer, label), the reviewer's latest answer by `(occurred_at, event_id)`, and per
response the latest `reviewed` and the latest `assigned`: an older event arriving after a newer
one never wins, so any arrival order gives the same state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from feedbackloop.contract import ReviewSubmitted


@dataclass(frozen=True)
class ReviewRecorded:
    tenant_id: str
    event_id: UUID
    response_id: str
    reviewer: str
    reviewer_name: str | None
    action: str
    label: str | None
    value: str | None
    assignee: str | None
    note: str | None
    occurred_at: datetime
    user_id: None = None  # reviews name a key, never a user: nothing for erasure to find


def review_effect(event: ReviewSubmitted) -> ReviewRecorded:
    p = event.payload
    return ReviewRecorded(
        tenant_id=event.tenant_id,
        event_id=event.event_id,
        response_id=p.response_id,
        reviewer=p.reviewer,
        reviewer_name=p.reviewer_name,
        action=p.action,
        label=p.label,
        value=p.value,
        assignee=p.assignee,
        note=p.note,
        occurred_at=event.occurred_at,
    )
