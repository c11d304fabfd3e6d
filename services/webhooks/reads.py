"""The typed reads other services may make of the webhooks schema: endpoints (never their
secrets) and deliveries, always of one tenant."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from services.webhooks.processing import WEBHOOK_EVENT_TYPES, WebhookEventType

__all__ = [
    "WEBHOOK_EVENT_TYPES", "DeliveryView", "EndpointView", "WebhookEventType", "deliveries",
    "endpoint_view", "endpoints",
]


@dataclass(frozen=True)
class EndpointView:
    endpoint_id: UUID
    url: str
    event_types: list[str]
    description: str
    source: str
    created_at: datetime


@dataclass(frozen=True)
class DeliveryView:
    delivery_id: UUID
    endpoint_id: UUID
    event_type: str
    state: str
    attempts: int
    replays: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    body: dict[str, Any]


def endpoint_view(row: Mapping[str, Any]) -> EndpointView:
    return EndpointView(
        row["endpoint_id"], row["url"], list(row["event_types"]), row["description"],
        row["source"], row["created_at"],
    )


async def endpoints(connection: asyncpg.Connection, *, tenant_id: str) -> list[EndpointView]:
    rows = await connection.fetch(
        "SELECT endpoint_id, tenant_id, url, event_types, description, source, created_at "
        "FROM webhooks.endpoints WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at",
        tenant_id,
    )
    return [endpoint_view(row) for row in rows]


async def deliveries(
    connection: asyncpg.Connection, *, tenant_id: str, endpoint_id: UUID | None = None,
    state: str | None = None, event_type: str | None = None, limit: int = 100,
) -> list[DeliveryView]:
    """The tenant's deliveries, newest first."""
    rows = await connection.fetch(
        """
        SELECT delivery_id, endpoint_id, event_type, state, attempts, replays,
               CASE WHEN state = 'pending' THEN next_attempt_at END AS next_attempt_at,
               last_attempt_at, last_status, last_error, created_at, delivered_at, body
        FROM webhooks.deliveries
        WHERE tenant_id = $1 AND ($2::uuid IS NULL OR endpoint_id = $2)
          AND ($3::text IS NULL OR state = $3) AND ($4::text IS NULL OR event_type = $4)
        ORDER BY created_at DESC, delivery_id
        LIMIT $5
        """,
        tenant_id, endpoint_id, state, event_type, limit,
    )
    return [
        DeliveryView(**{key: row[key] for key in row.keys() if key != "body"},
                     body=orjson.loads(row["body"]))
        for row in rows
    ]
