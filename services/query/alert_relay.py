"""Publishes queued alert state changes on the alerts topic (the evaluator's outbox).

One replica relays at a time (a session advisory lock, `feedbackloop.pipeline.jobs.singleton`), in the
order the changes were queued; a change is marked published only after the broker acknowledged
it. A crash in between publishes it again with the same `event_id`, which the webhooks consumer
claims once. Messages are keyed `<tenant_id>:<rule>`. Published changes are deleted
FEEDBACKLOOP_ALERT_CHANGES_RETENTION_DAYS (7) after publication (`alert_changes_prune_job`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from feedbackloop.contract import Topic
from feedbackloop.kafka import EventPublisher, OutgoingMessage
from feedbackloop.pipeline.jobs import Job, singleton
from feedbackloop.settings import Settings
from services.query import repository

RELAY_LOCK = 7_311_042_016
PRUNE_LOCK = 7_311_042_017
PRUNE_BATCH = 5_000

Publish = Callable[[Sequence[OutgoingMessage]], Awaitable[None]]


async def publish_alert_changes(
    connection: asyncpg.Connection, publish: Publish, *, topic: str, batch_size: int = 500
) -> int:
    """Publishes up to `batch_size` queued changes; returns how many. `publish` returns only
    once the broker acknowledged every message, and raises otherwise (nothing is marked)."""
    rows = await repository.pending_alert_changes(connection, limit=batch_size)
    if not rows:
        return 0
    await publish([
        OutgoingMessage(topic, f"{row['tenant_id']}:{row['rule']}".encode(), row["document"].encode())
        for row in rows
    ])
    await repository.mark_alert_changes_published(connection, seqs=[row["seq"] for row in rows])
    return len(rows)


def alert_relay_job(pool: asyncpg.Pool, settings: Settings) -> Job:
    """The relay as a job; its producer connects on the first run (a broker that is away makes
    the run fail and back off, the evaluations go on queueing)."""
    publisher = EventPublisher(
        settings.kafka_connection(),
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=settings.kafka_linger_ms,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        timeout_seconds=settings.publish_timeout_seconds,
    )
    topic = settings.topic_names().physical(Topic.ALERTS)
    started: list[bool] = []

    async def relay(connection: asyncpg.Connection) -> int:
        if not started:
            await publisher.start()
            started.append(True)
        return await publish_alert_changes(connection, publisher.publish, topic=topic)

    return Job(
        "alert-relay", singleton(pool, RELAY_LOCK, relay),
        interval=settings.alert_relay_interval_seconds,
        retry_max_seconds=settings.consumer_retry_max_seconds,
        close=publisher.stop,
    )


def alert_changes_prune_job(pool: asyncpg.Pool, settings: Settings) -> Job:
    """Deletes published changes past their retention, a batch per run, one replica at a
    time; a full batch runs again at once."""

    async def prune(connection: asyncpg.Connection) -> int:
        return await repository.prune_published_alert_changes(
            connection, older_than_days=settings.alert_changes_retention_days, limit=PRUNE_BATCH
        )

    return Job(
        "alert-changes-retention", singleton(pool, PRUNE_LOCK, prune),
        interval=settings.webhooks_prune_interval_seconds,
        retry_max_seconds=max(settings.consumer_retry_max_seconds, 60.0),
    )
