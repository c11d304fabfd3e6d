"""The envelope every event carries, and the base class of every contract model.

Contract models are frozen and tolerant: consumers ignore fields they do not know, so a newer
producer never breaks an older consumer. Strictness at the HTTP edge is applied by
`feedbackloop.contract.strict.unknown_fields` before validation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})


def _as_utc(value: datetime) -> datetime:
    """Naive timestamps are read as UTC; every stored timestamp is timezone-aware. One that
    leaves the calendar once converted (year 1 at +01:00, year 9999 at -01:00) is refused."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the timestamp is out of range once converted to UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]

MAX_JSON_DEPTH = 64


def _json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in `value` (a scalar is 0), without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_JSON_DEPTH:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _bounded_depth(value: dict[str, Any]) -> dict[str, Any]:
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(
            f"objects and arrays nest more than {MAX_JSON_DEPTH} levels deep here; at most "
            f"{MAX_JSON_DEPTH} are allowed"
        )
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_bounded_depth)]
"""Free-form JSON a client sends (metadata, action data), nested at most `MAX_JSON_DEPTH`."""
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]


class ContractModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Envelope(ContractModel):
    """Fields common to every event on every topic.

    `tenant_id` comes from the API key that sent the event, never from a request body.
    `user_id` is always the tenant-keyed HMAC of the client's user id, never the raw id.
    `(tenant_id, event_id)` is the idempotency key everywhere downstream.
    """

    event_id: UUID
    schema_version: int = SCHEMA_VERSION
    tenant_id: Identifier
    occurred_at: UtcDatetime
    received_at: UtcDatetime
    user_id: str | None = None
    session_id: Identifier | None = None
    experiment: Label | None = None
    variant: Label | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
