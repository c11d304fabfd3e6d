"""The delivery job: sends due deliveries, signed with the Standard Webhooks scheme.

Each attempt POSTs the stored body unchanged with `webhook-id` (the delivery id: the same on
every attempt and replay, for the receiver to deduplicate on), `webhook-timestamp` (the
attempt's time, in seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">` under the endpoint's `whsec_` secret). A 2xx answer delivers it;
anything else (another status, a redirect, which is never followed, a timeout, a refused
connection) is a failed attempt, retried with exponential backoff (`RetryPolicy`) until the last
allowed attempt fails: then it is dead, until replayed. An endpoint whose host is not a public
address (`services/webhooks/network.py`) is not connected to at all: the delivery is dead at
once, with the reason, and not retried. What is recorded of an answer is its status and the
status's standard name, never the receiver's body or its own reason phrase (which are the
receiver's to choose, and would be kept and shown here); the body is not even read. Delivery
is at least once: a sender that dies between the answer and the record leaves the delivery to
be sent again once its lease ends.

Endpoint secrets are stored sealed (`sealing.py`) and opened just before an attempt signs with
them, under the current key or a previous one. One that does not open (sealed for another
endpoint, or under a key no longer configured) is not sent: the delivery is dead at once, with
the reason, and not retried; the job carries on with the others. The job's first run seals the
secrets still stored in the plaintext form of before, and so does any run that claims a
delivery to such an endpoint (one written by a release of before while this one was already
running). A secret sealed under a previous key is left as it is: a replica still on older
settings would seal it back, so only `feedbackloop webhooks reseal` moves it, run once every
replica has the new settings.

Deliveries are claimed with SKIP LOCKED under a lease, so replicas share the work and never
send one delivery concurrently. A slow or dead receiver costs at most the timeout per attempt,
and never touches the consumer: deliveries were written by its transaction, and wait here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from http import HTTPStatus

import asyncpg
import httpx
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook

from feedbackloop.observability import WebhookMetrics
from feedbackloop.pipeline.jobs import Job
from feedbackloop.settings import Settings
from services.webhooks import repository
from services.webhooks.admin import configure_alert_webhook
from services.webhooks.network import RefusedAddress, delivery_client
from services.webhooks.processing import RetryPolicy
from services.webhooks.sealing import SecretBox, UnreadableSecret, is_plaintext

USER_AGENT = "feedbackloop-webhooks/1"


def signed_headers(delivery_id: str, secret: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(delivery_id, at, body),
    }


def answer_error(status: int) -> str:
    """What is kept of an answer that is not a 2xx: its status and the status's name."""
    try:
        name = HTTPStatus(status).phrase
    except ValueError:
        name = "non-standard status"
    redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
    return f"HTTP {status} {name}{redirect}"


async def attempt(
    client: httpx.AsyncClient, due: repository.DueDelivery, policy: RetryPolicy,
    metrics: WebhookMetrics, box: SecretBox,
) -> repository.AttemptResult:
    """One attempt; never raises for what the receiver or the network does, nor for a stored
    secret that does not open (that delivery is dead, with the reason)."""
    at = datetime.now(UTC)
    try:
        secret = box.open(due.endpoint_id, due.stored_secret)
    except UnreadableSecret as unreadable:
        metrics.attempt("dead")
        return repository.AttemptResult(due.delivery_id, at, None, str(unreadable)[:300],
                                        False, None)
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    refused = False
    try:
        async with client.stream(
            "POST", due.url, content=due.body.encode(),
            headers=signed_headers(str(due.delivery_id), secret, due.body, at),
        ) as response:
            status = response.status_code
        if not 200 <= status < 300:
            error = answer_error(status)
    except RefusedAddress as refusal:
        error, refused = str(refusal)[:300], True
    except httpx.HTTPError as failure:
        error = f"{type(failure).__name__}: {failure}"[:300]
    metrics.attempt_seconds.observe(time.perf_counter() - started)
    delivered = error is None
    retry_in = None if delivered or refused else policy.next_delay(due.attempts + 1)
    metrics.attempt("delivered" if delivered else "failed" if retry_in is not None else "dead")
    return repository.AttemptResult(due.delivery_id, at, status, error, delivered, retry_in)


async def deliver_due(
    pool: asyncpg.Pool,
    client: httpx.AsyncClient,
    policy: RetryPolicy,
    metrics: WebhookMetrics,
    *,
    box: SecretBox,
    batch_size: int,
    timeout_seconds: float,
    operator_client: httpx.AsyncClient | None = None,
) -> int:
    """Claims up to `batch_size` due deliveries, attempts them concurrently (opening their
    endpoints' secrets with `box`) and records each outcome; returns how many were attempted.
    Endpoints whose secret was still in the plaintext form are sealed afterwards. Deliveries
    to the operator's own endpoint (of FEEDBACKLOOP_ALERT_WEBHOOK_URL) go through
    `operator_client` when given: the operator may point it at an address inside the network;
    tenants' endpoints go through `client`."""
    async with pool.acquire() as connection:
        claimed = await repository.claim_due(
            connection, limit=batch_size, lease_seconds=timeout_seconds + 30
        )
    results: Sequence[repository.AttemptResult] = []
    if claimed:
        results = await asyncio.gather(*(
            attempt(operator_client if operator_client is not None and due.source == "settings"
                    else client, due, policy, metrics, box)
            for due in claimed
        ))
    async with pool.acquire() as connection:
        if results:
            await repository.record_attempts(connection, results)
        if any(is_plaintext(due.stored_secret) for due in claimed):
            await repository.seal_plaintext_rows(connection, box)
        metrics.pending.set(await repository.pending_count(connection))
    return len(claimed)


def delivery_jobs(
    pool: asyncpg.Pool, registry: CollectorRegistry, settings: Settings
) -> list[Job]:
    """The delivery job of one replica (its HTTP client closed when it stops). Its first run
    also configures the endpoint of FEEDBACKLOOP_ALERT_WEBHOOK_URL and seals the endpoint
    secrets still stored in plaintext. Raises ValueError for
    a malformed FEEDBACKLOOP_WEBHOOKS_SECRET_KEY or FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS."""
    box = SecretBox.from_settings(settings)
    policy = RetryPolicy(
        max_attempts=settings.webhooks_max_attempts,
        base_seconds=settings.webhooks_retry_base_seconds,
        max_seconds=settings.webhooks_retry_max_seconds,
    )
    metrics = WebhookMetrics(registry)
    client = delivery_client(
        timeout=settings.webhooks_timeout_seconds,
        allow_private_networks=settings.webhooks_allow_private_networks,
    )
    operator_client = delivery_client(
        timeout=settings.webhooks_timeout_seconds, allow_private_networks=True
    )
    configured: list[bool] = []

    async def close() -> None:
        await client.aclose()
        await operator_client.aclose()

    async def deliver() -> int:
        if not configured:
            await configure_alert_webhook(pool, settings, box)
            async with pool.acquire() as connection:
                await repository.seal_plaintext_rows(connection, box)
            configured.append(True)
        return await deliver_due(
            pool, client, policy, metrics, box=box,
            batch_size=settings.webhooks_delivery_batch_size,
            timeout_seconds=settings.webhooks_timeout_seconds,
            operator_client=operator_client,
        )

    return [Job(
        "webhook-delivery", deliver,
        interval=settings.webhooks_delivery_interval_seconds,
        retry_max_seconds=settings.consumer_retry_max_seconds,
        close=close,
    )]
