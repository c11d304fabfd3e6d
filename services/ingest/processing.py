"""Ingest's pure part: a validated request becomes an event and the message that carries it."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from feedbackloop.contract import TOPIC_OF_TYPE, TopicNames
from feedbackloop.contract.requests import (
    REQUEST_KINDS,
    RequestEnvelope,
    event_document,
    json_timestamp,
)
from feedbackloop.contract.strict import unknown_fields
from feedbackloop.http.problems import field_errors
from feedbackloop.identity import hash_feedback_key, hash_user_id
from feedbackloop.kafka import OutgoingMessage


@dataclass(frozen=True)
class Tenancy:
    """What the server adds to every request: who sent it, when, and the HMAC key."""

    tenant_id: str
    received_at: datetime
    hmac_secret: bytes

    @functools.cached_property
    def received_at_json(self) -> str:
        return json_timestamp(self.received_at)


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


class PreparedEvent(NamedTuple):
    """A validated event, ready to publish: its type, id and the message that carries it."""

    event_type: str
    event_id: str
    message: OutgoingMessage


@functools.lru_cache(maxsize=64)
def _topic(topics: TopicNames, event_type: str) -> str:
    return topics.physical(TOPIC_OF_TYPE[event_type])


def prepare(
    event_type: str,
    request: RequestEnvelope,
    tenancy: Tenancy,
    topics: TopicNames,
    *,
    user_id: str | None = None,
    user_hash: str | None = None,
) -> PreparedEvent:
    """The message for a validated request; `user_id` (from a path) overrides the body's, and
    `user_hash` (a bound feedback token's user, already hashed) stands in for a body without one.
    The user id and the feedback key are published only as their tenant-keyed HMACs.

    Keyed by tenant and subject, so one response's or session's events stay in order.
    Raises `RequestProblem` if the request does not make a publishable event."""
    raw_user = user_id if user_id is not None else request.user_id
    if raw_user is not None:
        user_hash = hash_user_id(tenancy.hmac_secret, tenancy.tenant_id, raw_user)
    raw_key: str | None = getattr(request, "feedback_key", None)
    key_hash = (
        hash_feedback_key(tenancy.hmac_secret, tenancy.tenant_id, raw_key)
        if raw_key is not None
        else None
    )
    try:
        document, subject = event_document(
            event_type,
            request,
            tenant_id=tenancy.tenant_id,
            user_hash=user_hash,
            received_at=tenancy.received_at_json,
            feedback_key_hash=key_hash,
        )
    except ValueError as error:
        raise RequestProblem([{"loc": [], "msg": str(error), "type": "value_error"}]) from None
    try:
        value = orjson.dumps(document)
    except TypeError as error:
        # Free-form JSON (metadata, action data) may hold what the event log's encoding cannot
        # carry, such as an integer beyond 64 bits: refuse it here rather than fail publishing.
        raise RequestProblem(
            [{"loc": [], "msg": f"cannot be encoded as an event: {error}", "type": "value_error"}]
        ) from None
    return PreparedEvent(
        event_type=event_type,
        event_id=document["event_id"],
        message=OutgoingMessage(
            topic=_topic(topics, event_type),
            key=f"{tenancy.tenant_id}:{subject}".encode(),
            value=value,
        ),
    )
