"""Contract events for the ops tests (metrics, analytics, alerts), built from a few arguments.

Each builder returns a valid contract event; `encode_event` turns it into a broker value.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from feedbackloop.contract import (
    EVENT_ADAPTER,
    Event,
)

TENANT = "acme"


def _envelope(
    kind: str,
    occurred_at: datetime,
    received_at: datetime | None,
    event_id: uuid.UUID | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "event_id": str(event_id or uuid.uuid4()),
        "type": kind,
        "schema_version": 1,
        "tenant_id": extra.pop("tenant_id", TENANT),
        "occurred_at": occurred_at.isoformat(),
        "received_at": (received_at or occurred_at + timedelta(seconds=1)).isoformat(),
        **{k: v for k, v in extra.items()
           if k in {"experiment", "variant", "session_id", "user_id"} and v is not None},
    }


def response(
    response_id: str,
    occurred_at: datetime,
    *,
    action_type: str = "todo",
    model: str = "model-a",
    event_id: uuid.UUID | None = None,
    **extra: Any,
) -> Event:
    payload = {
        "response_id": response_id,
        "prompt": [{"role": "user", "content": "Add milk"}],
        "output": "Added milk.",
        "model": model,
        "action_type": action_type,
        **{k: v for k, v in extra.items() if k in {"prompt_version", "language", "feature"}},
    }
    document = _envelope("response.logged", occurred_at, None, event_id, extra)
    return EVENT_ADAPTER.validate_python(document | {"payload": payload})


def feedback(
    response_id: str,
    occurred_at: datetime,
    *,
    thumb: str | None = "up",
    rating: int | None = None,
    received_at: datetime | None = None,
    event_id: uuid.UUID | None = None,
    **extra: Any,
) -> Event:
    payload: dict[str, Any] = {"response_id": response_id}
    if rating is not None:
        payload["rating"] = rating
    else:
        payload["thumb"] = thumb
    payload |= {k: v for k, v in extra.items()
                if k in {"action_type", "model", "feedback_key", "correction", "comment"}
                and v is not None}
    if "correction" in payload or "comment" in payload:
        payload.pop("thumb", None)
    document = _envelope("feedback.submitted", occurred_at, received_at, event_id, extra)
    return EVENT_ADAPTER.validate_python(document | {"payload": payload})


def retraction(
    response_id: str,
    occurred_at: datetime,
    *,
    kind: str = "thumb",
    user_id: str | None = None,
    feedback_key: str | None = None,
    received_at: datetime | None = None,
    event_id: uuid.UUID | None = None,
    **extra: Any,
) -> Event:
    """A person takes back their signal of `kind` on the response (`feedback.retracted`)."""
    payload: dict[str, Any] = {"response_id": response_id, "kind": kind}
    if feedback_key is not None:
        payload["feedback_key"] = feedback_key
    document = _envelope("feedback.retracted", occurred_at, received_at, event_id,
                         extra | {"user_id": user_id})
    return EVENT_ADAPTER.validate_python(document | {"payload": payload})


def session(
    session_id: str,
    occurred_at: datetime,
    *,
    segment: str | None = "balanced",
    algorithm_version: str = "match-1",
    event_id: uuid.UUID | None = None,
    **extra: Any,
) -> Event:
    payload: dict[str, Any] = {
        "algorithm_version": algorithm_version,
        "options": [{"item_id": f"item-{rank}", "rank": rank} for rank in (1, 2, 3)],
    }
    if segment:
        payload["segment"] = segment
    document = _envelope(
        "recommendation.session_started", occurred_at, None, event_id,
        extra | {"session_id": session_id},
    )
    return EVENT_ADAPTER.validate_python(document | {"payload": payload})


def choice(
    session_id: str,
    occurred_at: datetime,
    *,
    rank: int | None = 1,
    satisfaction: int | None = None,
    decision_seconds: float | None = None,
    received_at: datetime | None = None,
    event_id: uuid.UUID | None = None,
    **extra: Any,
) -> Event:
    payload: dict[str, Any] = {}
    if rank is not None:
        payload |= {"chosen_item_id": f"item-{rank}", "chosen_rank": rank}
    if satisfaction is not None:
        payload["satisfaction"] = satisfaction
    if decision_seconds is not None:
        payload["decision_time_seconds"] = decision_seconds
    document = _envelope(
        "recommendation.choice", occurred_at, received_at, event_id,
        extra | {"session_id": session_id},
    )
    return EVENT_ADAPTER.validate_python(document | {"payload": payload})
