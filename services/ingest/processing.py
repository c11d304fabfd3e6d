"""Ingest's pure part: a validated request becomes an event and the message that carries it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from feedbackloop.contract import TOPIC_OF_TYPE, Event, TopicNames, encode_event
from feedbackloop.contract.requests import REQUEST_KINDS, RequestEnvelope, build_event
from feedbackloop.contract.strict import unknown_fields
from feedbackloop.http.problems import field_errors
from feedbackloop.identity import hash_user_id
from feedbackloop.kafka import OutgoingMessage


@dataclass(frozen=True)
class Tenancy:
    """What the server adds to every request: who sent it, when, and the HMAC key."""

    tenant_id: str
    received_at: datetime
    hmac_secret: bytes


class RequestProblem(Exception):
    """A request body that does not make a valid event: field-level errors, nothing published."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid event")
        self.errors = errors


def strict_errors(model: type[RequestEnvelope], body: Any) -> list[dict[str, Any]]:
    return [
        {"loc": list(location), "msg": "unknown field", "type": "extra_forbidden"}
        for location in unknown_fields(model, body)
    ]


def parse_request(event_type: str, body: Any) -> RequestEnvelope:
    """Validate a raw request body strictly. Raises `RequestProblem`."""
    kind = REQUEST_KINDS[event_type]
    if not isinstance(body, dict):
        raise RequestProblem([{"loc": [], "msg": "expected a JSON object", "type": "dict_type"}])
    errors = strict_errors(kind.request, body)
    try:
        request = kind.request.model_validate(body)
    except ValidationError as error:
        errors += field_errors(list(error.errors()))
    if errors:
        raise RequestProblem(errors)
    return request


def to_event(
    event_type: str, request: RequestEnvelope, tenancy: Tenancy, *, user_id: str | None = None
) -> Event:
    """The event for a validated request; `user_id` (from a path) overrides the body's."""
    raw_user = user_id if user_id is not None else request.user_id
    user_hash = (
        hash_user_id(tenancy.hmac_secret, tenancy.tenant_id, raw_user)
        if raw_user is not None
        else None
    )
    try:
        event = build_event(
            event_type,
            request,
            tenant_id=tenancy.tenant_id,
            user_hash=user_hash,
            received_at=tenancy.received_at,
        )
    except ValidationError as error:
        raise RequestProblem(field_errors(list(error.errors()))) from None
    try:
        # Free-form JSON (metadata, action data) may hold what the event log's encoding cannot
        # carry, such as an integer beyond 64 bits: refuse it here rather than fail publishing.
        encode_event(event)
    except TypeError as error:
        raise RequestProblem(
            [{"loc": [], "msg": f"cannot be encoded as an event: {error}", "type": "value_error"}]
        ) from None
    return event


def to_message(event: Event, topics: TopicNames) -> OutgoingMessage:
    """Keyed by tenant and subject, so one response's or session's events stay in order."""
    return OutgoingMessage(
        topic=topics.physical(TOPIC_OF_TYPE[event.type]),
        key=f"{event.tenant_id}:{event.subject}".encode(),
        value=encode_event(event),
    )
