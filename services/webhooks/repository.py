"""The webhooks schema's SQL. `write_effects` runs inside the consumer pipeline's transaction,
so the current states, the deliveries (the outbox) and the claimed event ids commit together;
what an erasure removes is in `erasure.py`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import asyncpg
import orjson

from feedbackloop.pipeline.consumer import consecutive_runs
from services.webhooks import erasure, sealing
from services.webhooks.processing import (
    ALL_TENANTS,
    AlertNotice,
    CurrentExample,
    CurrentSignal,
    Delivery,
    Endpoint,
    ExampleNotice,
    FeedbackNotice,
    Notification,
    UserErasure,
    WebhooksEffect,
    address,
    advance_examples,
    advance_feedback,
    alert_notifications,
)


async def write_effects(connection: asyncpg.Connection, effects: Sequence[WebhooksEffect]) -> None:
    """Applies the effects in order (runs of one kind), so an erasure removes what the batch
    wrote of the user before it, and the user's earlier events after it send nothing."""
    endpoints: list[Endpoint] | None = None
    for kind, run in consecutive_runs(effects):
        notifications: list[Notification] = []
        if kind is UserErasure:
            await erasure.erase_users(connection, run)
            continue
        if kind is FeedbackNotice:
            feedback = await erasure.not_erased(connection, run)
            stored = await _current_signals(connection, feedback)
            found, changed = advance_feedback(stored, feedback)
            await _store_signals(connection, changed)
            notifications = found
        elif kind is ExampleNotice:
            stored_examples = await _current_examples(connection, run)
            found, changed_examples = advance_examples(stored_examples, run)
            await _store_examples(connection, changed_examples)
            erased = await erasure.remove_erased_examples(connection, run)
            # An example created (or revised) and retracted for erasure in one run: its text is
            # never delivered; only the retraction, which carries none, goes out.
            notifications = [
                n for n in found
                if n.event_type == "training_example.retracted"
                or (n.tenant_id, n.example_id) not in erased
            ]
        elif kind is AlertNotice:
            notifications = alert_notifications(run)
        if not notifications:
            continue
        if endpoints is None:
            endpoints = await _live_endpoints(connection, effects)
        await insert_deliveries(connection, address(notifications, endpoints))


async def _live_endpoints(
    connection: asyncpg.Connection, effects: Sequence[WebhooksEffect]
) -> list[Endpoint]:
    tenants = sorted({e.tenant_id for e in effects})
    rows = await connection.fetch(
        "SELECT endpoint_id, tenant_id, event_types FROM webhooks.endpoints "
        "WHERE deleted_at IS NULL AND (tenant_id = ANY($1::text[]) OR tenant_id = $2)",
        tenants, ALL_TENANTS,
    )
    return [Endpoint(row["endpoint_id"], row["tenant_id"], frozenset(row["event_types"]))
            for row in rows]


async def insert_deliveries(connection: asyncpg.Connection, deliveries: Sequence[Delivery]) -> None:
    if not deliveries:
        return
    await connection.execute(
        """
        INSERT INTO webhooks.deliveries
            (delivery_id, tenant_id, endpoint_id, event_type, body, user_digest, example_id)
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],
                             $6::text[], $7::uuid[])
        ON CONFLICT (delivery_id) DO NOTHING
        """,
        [d.delivery_id for d in deliveries],
        [d.tenant_id for d in deliveries],
        [d.endpoint_id for d in deliveries],
        [d.event_type for d in deliveries],
        [orjson.dumps(d.body).decode() for d in deliveries],
        [d.user_digest for d in deliveries],
        [d.example_id for d in deliveries],
    )


async def _current_signals(
    connection: asyncpg.Connection, notices: Sequence[FeedbackNotice]
) -> dict[tuple[str, str], CurrentSignal]:
    keys = sorted({(n.tenant_id, n.signal) for n in notices if n.signal is not None})
    if not keys:
        return {}
    rows = await connection.fetch(
        """
        SELECT s.tenant_id, s.signal, s.occurred_at, s.event_id, s.retracted, s.value,
               s.user_digest
        FROM webhooks.feedback_signals s
        JOIN unnest($1::text[], $2::text[]) AS k(tenant_id, signal)
          ON s.tenant_id = k.tenant_id AND s.signal = k.signal
        FOR UPDATE OF s
        """,
        [k[0] for k in keys], [k[1] for k in keys],
    )
    return {
        (row["tenant_id"], row["signal"]): CurrentSignal(
            (row["occurred_at"], row["event_id"]), row["retracted"],
            row["value"], row["user_digest"],
        )
        for row in rows
    }


async def _store_signals(
    connection: asyncpg.Connection, changed: dict[tuple[str, str], CurrentSignal]
) -> None:
    if not changed:
        return
    items = sorted(changed.items())
    await connection.execute(
        """
        INSERT INTO webhooks.feedback_signals AS s
            (tenant_id, signal, occurred_at, event_id, retracted, value, user_digest)
        SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[],
                             $5::boolean[], $6::jsonb[], $7::text[])
        ON CONFLICT (tenant_id, signal) DO UPDATE SET
            occurred_at = EXCLUDED.occurred_at, event_id = EXCLUDED.event_id,
            retracted = EXCLUDED.retracted, value = EXCLUDED.value,
            user_digest = coalesce(EXCLUDED.user_digest, s.user_digest)
        """,
        [k[0] for k, _ in items], [k[1] for k, _ in items],
        [s.order[0] for _, s in items], [s.order[1] for _, s in items],
        [s.retracted for _, s in items],
        [s.value for _, s in items],
        [s.user_digest for _, s in items],
    )


async def _current_examples(
    connection: asyncpg.Connection, notices: Sequence[ExampleNotice]
) -> dict[tuple[str, UUID], CurrentExample]:
    keys = sorted({(n.tenant_id, n.example_id) for n in notices})
    rows = await connection.fetch(
        """
        SELECT e.tenant_id, e.example_id, e.revision, e.retracted
        FROM webhooks.training_examples e
        JOIN unnest($1::text[], $2::uuid[]) AS k(tenant_id, example_id)
          ON e.tenant_id = k.tenant_id AND e.example_id = k.example_id
        FOR UPDATE OF e
        """,
        [k[0] for k in keys], [k[1] for k in keys],
    )
    return {
        (row["tenant_id"], row["example_id"]): CurrentExample(row["revision"], row["retracted"])
        for row in rows
    }


async def _store_examples(
    connection: asyncpg.Connection, changed: dict[tuple[str, UUID], CurrentExample]
) -> None:
    if not changed:
        return
    items = sorted(changed.items())
    await connection.execute(
        """
        INSERT INTO webhooks.training_examples AS e (tenant_id, example_id, revision, retracted)
        SELECT * FROM unnest($1::text[], $2::uuid[], $3::int[], $4::boolean[])
        ON CONFLICT (tenant_id, example_id) DO UPDATE SET
            revision = EXCLUDED.revision, retracted = EXCLUDED.retracted
        """,
        [k[0] for k, _ in items], [k[1] for k, _ in items],
        [s.revision for _, s in items], [s.retracted for _, s in items],
    )


# The delivery job.


@dataclass(frozen=True)
class DueDelivery:
    delivery_id: UUID
    endpoint_id: UUID
    url: str
    # As stored: sealed (`sealing.SecretBox.open` reads it), or the plaintext form of before.
    stored_secret: str = field(repr=False)
    body: str
    attempts: int
    source: str  # 'api': a tenant's endpoint; 'settings': the operator's


async def claim_due(
    connection: asyncpg.Connection, *, limit: int, lease_seconds: float
) -> list[DueDelivery]:
    """Due pending deliveries of live endpoints, leased: their next attempt is moved
    `lease_seconds` ahead, so no other sender takes them while this one tries (SKIP LOCKED
    keeps concurrent claims apart), and a sender that dies leaves them to be retried."""
    rows = await connection.fetch(
        """
        WITH due AS (
            SELECT d.delivery_id FROM webhooks.deliveries d
            WHERE d.state = 'pending' AND d.next_attempt_at <= now()
            ORDER BY d.next_attempt_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE webhooks.deliveries d
        SET next_attempt_at = now() + make_interval(secs => $2)
        FROM due, webhooks.endpoints e
        WHERE d.delivery_id = due.delivery_id AND e.endpoint_id = d.endpoint_id
          AND e.deleted_at IS NULL
        RETURNING d.delivery_id, d.endpoint_id, e.url, e.secret AS stored_secret, d.body,
                  d.attempts, e.source
        """,
        limit, lease_seconds,
    )
    return [DueDelivery(**dict(row)) for row in rows]


@dataclass(frozen=True)
class AttemptResult:
    delivery_id: UUID
    attempted_at: datetime
    status: int | None
    error: str | None
    delivered: bool
    # Set when the attempt failed: seconds until the next one, None when the delivery is dead.
    retry_in: float | None


async def record_attempts(connection: asyncpg.Connection, results: Sequence[AttemptResult]) -> None:
    if not results:
        return
    await connection.execute(
        """
        UPDATE webhooks.deliveries d SET
            attempts = d.attempts + 1,
            last_attempt_at = r.attempted_at,
            last_status = r.status,
            last_error = r.error,
            state = CASE WHEN r.delivered THEN 'delivered'
                         WHEN r.retry_in IS NULL THEN 'dead' ELSE 'pending' END,
            delivered_at = CASE WHEN r.delivered THEN r.attempted_at ELSE d.delivered_at END,
            next_attempt_at = CASE WHEN r.retry_in IS NULL THEN d.next_attempt_at
                                   ELSE now() + make_interval(secs => r.retry_in) END
        FROM unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::text[], $5::boolean[],
                    $6::float8[]) AS r(delivery_id, attempted_at, status, error, delivered, retry_in)
        WHERE d.delivery_id = r.delivery_id AND d.state = 'pending'
        """,
        [r.delivery_id for r in results], [r.attempted_at for r in results],
        [r.status for r in results], [r.error for r in results],
        [r.delivered for r in results], [r.retry_in for r in results],
    )


async def pending_count(connection: asyncpg.Connection) -> int:
    count: int = await connection.fetchval(
        "SELECT count(*) FROM webhooks.deliveries WHERE state = 'pending'"
    )
    return count


async def configure_settings_endpoint(
    connection: asyncpg.Connection, *, endpoint_id: UUID, url: str | None, stored_secret: str,
    event_types: Sequence[str],
) -> None:
    """The all-tenant endpoint of a setting: created or updated to `url` (with its secret as
    stored, sealed for `endpoint_id`), deleted when unset."""
    if url is None:
        async with connection.transaction():
            await connection.execute(
                "UPDATE webhooks.endpoints SET deleted_at = now() "
                "WHERE endpoint_id = $1 AND deleted_at IS NULL", endpoint_id,
            )
            await connection.execute(
                "UPDATE webhooks.deliveries SET state = 'dead', last_error = 'endpoint deleted' "
                "WHERE endpoint_id = $1 AND state = 'pending'", endpoint_id,
            )
        return
    await connection.execute(
        """
        INSERT INTO webhooks.endpoints
            (endpoint_id, tenant_id, url, secret, event_types, description, source)
        VALUES ($1, $2, $3, $4, $5, 'FEEDBACKLOOP_ALERT_WEBHOOK_URL', 'settings')
        ON CONFLICT (endpoint_id) DO UPDATE SET url = EXCLUDED.url, secret = EXCLUDED.secret,
            event_types = EXCLUDED.event_types, deleted_at = NULL
        """,
        endpoint_id, ALL_TENANTS, url, stored_secret, list(event_types),
    )


async def prune_delivered(connection: asyncpg.Connection, *, older_than_days: float,
                          limit: int) -> int:
    """Deletes up to `limit` deliveries delivered more than `older_than_days` ago (pending and
    dead ones stay, whatever their age); returns how many."""
    status = await connection.execute(
        """
        DELETE FROM webhooks.deliveries WHERE delivery_id IN (
            SELECT delivery_id FROM webhooks.deliveries
            WHERE state = 'delivered'
              AND delivered_at < now() - make_interval(secs => $1::float8 * 86400)
            LIMIT $2
        )
        """,
        older_than_days, limit,
    )
    return int(status.split()[-1])


async def seal_plaintext_rows(connection: asyncpg.Connection, box: sealing.SecretBox) -> int:
    """The delivery job's: seals every endpoint secret still stored in the plaintext form of
    before; returns how many rows this call changed. A row sealed under a previous key is left
    to `reseal_stale_rows`: a replica still on older settings would seal it back, and the two
    would take turns for as long as the rollout lasts."""
    return await _seal_again(connection, box, plaintext_only=True)


async def reseal_stale_rows(connection: asyncpg.Connection, box: sealing.SecretBox) -> int:
    """The operator's (`feedbackloop webhooks reseal`): seals under the current key every
    endpoint secret stored in the plaintext form or sealed under another key that `box` opens
    (deleted endpoints' too, so that key can be dropped); returns how many rows this call
    changed. A secret no key opens is left as it is."""
    return await _seal_again(connection, box, plaintext_only=False)


async def _seal_again(
    connection: asyncpg.Connection, box: sealing.SecretBox, *, plaintext_only: bool
) -> int:
    # The rows are locked in one order (by endpoint id) by every caller, so a job sealing
    # plaintext rows and the operator's reseal wait for each other, never deadlock; each row is
    # replaced only if it still holds what was read.
    async with connection.transaction():
        rows = await connection.fetch(
            "SELECT endpoint_id, secret FROM webhooks.endpoints "
            "WHERE NOT $1 OR starts_with(secret, $2) ORDER BY endpoint_id FOR UPDATE",
            plaintext_only, sealing.PLAINTEXT_PREFIX,
        )
        stale = [row for row in rows if box.needs_resealing(row["endpoint_id"], row["secret"])]
        if not stale:
            return 0
        status = await connection.execute(
            """
            UPDATE webhooks.endpoints e SET secret = s.sealed
            FROM unnest($1::uuid[], $2::text[], $3::text[]) AS s(endpoint_id, stale, sealed)
            WHERE e.endpoint_id = s.endpoint_id AND e.secret = s.stale
            """,
            [row["endpoint_id"] for row in stale], [row["secret"] for row in stale],
            [box.seal(row["endpoint_id"], box.open(row["endpoint_id"], row["secret"]))
             for row in stale],
        )
    return int(status.split()[-1])


async def secrets_not_current(
    connection: asyncpg.Connection, box: sealing.SecretBox
) -> tuple[int, int]:
    """How many endpoints (deleted ones too) hold a secret in the plaintext form or sealed
    under another key `box` opens, and how many live endpoints hold one no key of `box` opens
    (their deliveries die)."""
    stale = unreadable = 0
    for row in await connection.fetch(
        "SELECT endpoint_id, secret, deleted_at IS NULL AS live FROM webhooks.endpoints"
    ):
        try:
            box.open(row["endpoint_id"], row["secret"])
        except sealing.UnreadableSecret:
            unreadable += row["live"]
            continue
        stale += box.needs_resealing(row["endpoint_id"], row["secret"])
    return stale, unreadable
