"""`POST /v1/reviews`: a reviewer's label, mark or assignment, attributed to their API key."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError

from feedbackloop.contract import Topic, encode_event
from feedbackloop.contract.requests import ReviewRequest, build_review
from feedbackloop.http.auth import Scope
from feedbackloop.http.problems import ProblemException, field_errors
from feedbackloop.kafka import OutgoingMessage
from services.ingest.deps import Caller, State, requires, tenancy_of
from services.ingest.handlers import Accepted, publish_events
from services.ingest.processing import PreparedEvent, strict_errors

router = APIRouter(prefix="/v1", tags=["reviews"])


@router.post(
    "/reviews",
    status_code=202,
    dependencies=[requires(Scope.REVIEW)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ReviewRequest.model_json_schema()}},
        }
    },
)
async def submit_review(request: Request, state: State, caller: Caller) -> Accepted:
    """Record a reviewer's action on a response (`review.submitted`): `label` (a `label`
    question and the reviewer's `value`), `reviewed`, or `assigned` (to `assignee`). The
    reviewer is the API key that sends it (scope `review`), never a field of the body."""
    body = _parse(await request.body())
    tenancy = tenancy_of(state, caller)
    event = build_review(
        body, tenant_id=caller.tenant_id, reviewer=caller.key_id,
        reviewer_name=caller.name, received_at=tenancy.received_at,
    )
    prepared = PreparedEvent(
        event_type=event.type,
        event_id=str(event.event_id),
        message=OutgoingMessage(
            topic=state.topics.physical(Topic.FEEDBACK),
            key=f"{caller.tenant_id}:{event.subject}".encode(),
            value=encode_event(event),
        ),
    )
    await publish_events(state, [prepared])
    return Accepted(event_id=UUID(prepared.event_id))


def _parse(raw: bytes) -> ReviewRequest:
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProblemException(
            422, "The review is invalid.",
            errors=[{"loc": ["body"], "msg": "not JSON", "type": "json_invalid"}],
        ) from None
    if not isinstance(data, dict):
        raise ProblemException(
            422, "The review is invalid.",
            errors=[{"loc": ["body"], "msg": "expected a JSON object", "type": "dict_type"}],
        )
    errors = strict_errors(ReviewRequest, data)  # type: ignore[arg-type]
    try:
        body = ReviewRequest.model_validate(data)
    except ValidationError as error:
        errors += field_errors(list(error.errors()))
    if errors:
        raise ProblemException(422, "The review is invalid.", errors=errors)
    return body
