"""Managing webhooks: endpoints and replays. The one door into the webhooks schema for the
query API and the CLI besides `reads.py`; every function is scoped to one tenant."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from feedbackloop.settings import Settings
from services.webhooks import repository
from services.webhooks.network import refused_url
from services.webhooks.processing import WEBHOOK_EVENT_TYPES
from services.webhooks.reads import EndpointView, endpoint_view
from services.webhooks.sealing import SecretBox as SecretBox  # for the CLI and query

SETTINGS_ENDPOINT_ID = uuid.UUID("0a1e7b52-3c4d-4e5f-9a6b-7c8d9e0f1a2b")


class UnknownEventTypes(ValueError):
    pass


def generate_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_event_types(event_types: Sequence[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(WEBHOOK_EVENT_TYPES))
    if unknown or not event_types:
        raise UnknownEventTypes(
            f"unknown event types {unknown}; choose from {', '.join(WEBHOOK_EVENT_TYPES)}"
            if unknown else "at least one event type is needed"
        )
    return sorted(set(event_types))


def check_secret(secret: str) -> str:
    if not secret.startswith("whsec_"):
        raise ValueError("a secret starts with whsec_ followed by base64")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        raise ValueError("a secret starts with whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a secret's key is 24 to 64 bytes")
    return secret


def check_url(url: str, *, allow_private_networks: bool) -> str:
    """An endpoint URL: http(s), at most 2000 characters, and (unless private networks are
    allowed) not a literal address outside the public internet (see network.py)."""
    if len(url) > 2_000:
        raise ValueError("the url must be an http(s) URL of at most 2000 characters")
    try:
        refusal = refused_url(url, allow_private_networks=allow_private_networks)
    except ValueError:  # urlsplit: an unbalanced [ or a bad port
        refusal = "the url must be an http(s) URL of at most 2000 characters"
    if refusal is not None:
        raise ValueError(refusal)
    return url


async def create_endpoint(
    connection: asyncpg.Connection, *, tenant_id: str, url: str, event_types: Sequence[str],
    box: SecretBox, description: str = "", secret: str | None = None,
    allow_private_networks: bool = False,
) -> tuple[EndpointView, str]:
    """A new endpoint; returns it and its secret (shown to the caller once, and stored only
    sealed by `box`). Only messages consumed after it exists are delivered to it. Raises
    ValueError (nothing is written) for unknown event types, a bad secret, or a URL `check_url`
    refuses."""
    types = check_event_types(event_types)
    url = check_url(url, allow_private_networks=allow_private_networks)
    secret = check_secret(secret) if secret else generate_secret()
    endpoint_id = uuid.uuid4()
    row = await connection.fetchrow(
        """
        INSERT INTO webhooks.endpoints (endpoint_id, tenant_id, url, secret, event_types, description)
        VALUES ($1, $2, $3, $4, $5, $6)
        RETURNING endpoint_id, tenant_id, url, event_types, description, source, created_at
        """,
        endpoint_id, tenant_id, url, box.seal(endpoint_id, secret), types, description,
    )
    assert row is not None
    return endpoint_view(row), secret


async def delete_endpoint(connection: asyncpg.Connection, *, tenant_id: str, endpoint_id: UUID) -> bool:
    """Deletes one of the tenant's endpoints; its pending deliveries become dead."""
    async with connection.transaction():
        status = await connection.execute(
            "UPDATE webhooks.endpoints SET deleted_at = now() "
            "WHERE endpoint_id = $1 AND tenant_id = $2 AND deleted_at IS NULL",
            endpoint_id, tenant_id,
        )
        if not status.endswith(" 1"):
            return False
        await connection.execute(
            "UPDATE webhooks.deliveries SET state = 'dead', last_error = 'endpoint deleted' "
            "WHERE endpoint_id = $1 AND state = 'pending'",
            endpoint_id,
        )
        return True


async def replay_deliveries(
    connection: asyncpg.Connection, *, tenant_id: str, delivery_ids: Sequence[UUID] | None = None,
    endpoint_id: UUID | None = None, state: str = "dead", limit: int = 1_000,
) -> list[UUID]:
    """Sends deliveries of the tenant again, with the same delivery id (webhook-id) and body
    and a fresh set of attempts: the ones named, or up to `limit` in `state` (dead or
    delivered), of one endpoint if given. Pending ones and those of deleted endpoints are left
    alone. Returns the ids queued."""
    rows = await connection.fetch(
        """
        UPDATE webhooks.deliveries d SET
            state = 'pending', attempts = 0, next_attempt_at = now(), replays = d.replays + 1
        FROM webhooks.endpoints e
        WHERE d.delivery_id IN (
            SELECT delivery_id FROM webhooks.deliveries
            WHERE tenant_id = $1 AND state <> 'pending'
              AND ($2::uuid[] IS NULL OR delivery_id = ANY($2::uuid[]))
              AND ($2::uuid[] IS NOT NULL OR state = $4)
              AND ($3::uuid IS NULL OR endpoint_id = $3)
            ORDER BY created_at LIMIT $5
        )
          AND e.endpoint_id = d.endpoint_id AND e.deleted_at IS NULL
        RETURNING d.delivery_id
        """,
        tenant_id, None if delivery_ids is None else list(delivery_ids), endpoint_id, state, limit,
    )
    return [row["delivery_id"] for row in rows]


async def configure_alert_webhook(pool: asyncpg.Pool, settings: Settings, box: SecretBox) -> None:
    """The endpoint of FEEDBACKLOOP_ALERT_WEBHOOK_URL: every tenant's alert.state_changed,
    signed with FEEDBACKLOOP_ALERT_WEBHOOK_SECRET (or a secret derived from the HMAC secret and
    the URL, stable across restarts), stored sealed by `box`. Removed when the setting is."""
    url = settings.alert_webhook_url or None
    if settings.alert_webhook_secret is not None:
        secret = check_secret(settings.alert_webhook_secret.get_secret_value())
    else:
        seed = f"{settings.user_id_hmac_secret.get_secret_value()}\x00alert-webhook\x00{url}"
        secret = "whsec_" + base64.b64encode(hashlib.sha256(seed.encode()).digest()).decode()
    async with pool.acquire() as connection:
        await repository.configure_settings_endpoint(
            connection, endpoint_id=SETTINGS_ENDPOINT_ID, url=url,
            stored_secret=box.seal(SETTINGS_ENDPOINT_ID, secret),
            event_types=["alert.state_changed"],
        )


@dataclass(frozen=True)
class Resealing:
    """What `reseal_secrets` did and found after it: `resealed` rows sealed again under the
    current key; `stale` rows still not sealed under it (plaintext, or under another key)
    when it had finished, written since by a replica on older settings; `unreadable` live
    endpoints whose secret no configured key opens."""

    resealed: int
    stale: int
    unreadable: int


async def reseal_secrets(connection: asyncpg.Connection, box: SecretBox) -> Resealing:
    """The operator's, for every tenant, once every replica has the new settings: seals under
    the current key each endpoint secret stored in plaintext or under another key `box` opens,
    then counts again what is still not sealed under it. When both counts are 0, no secret
    needs any key but the current one."""
    resealed = await repository.reseal_stale_rows(connection, box)
    stale, unreadable = await repository.secrets_not_current(connection, box)
    return Resealing(resealed, stale, unreadable)
