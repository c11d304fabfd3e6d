"""Publishes queued alert state changes on the alerts topic (the evaluator's outbox).

An `Outbox` (`feedbackloop.pipeline.outbox`) run as a singleton job: one replica relays at a
time, in the order the changes were queued; a change is marked published only after the broker
acknowledged it. A crash in between publishes it again with the same `event_id`, which the
webhooks consumer claims once. Messages are keyed `<tenant_id>:<rule>`. Published changes are deleted
FEEDBACKLOOP_ALERT_CHANGES_RETENTION_DAYS (7) after publication (`alert_changes_prune_job`).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from feedbackloop.contract import Topic
from feedbackloop.pipeline.jobs import Job, singleton
from feedbackloop.pipeline.outbox import Outbox, Publish, outbox_job, settings_publisher
from feedbackloop.settings import Settings
from services.query import repository

PRUNE_BATCH = 5_000

async def _pending(connection: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return await repository.pending_alert_changes(connection, limit=limit)


def _message(row: asyncpg.Record) -> tuple[bytes, bytes]:
    return f"{row['tenant_id']}:{row['rule']}".encode(), row["document"].encode()


async def _mark(connection: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> None:
    await repository.mark_alert_changes_published(connection, seqs=[row["seq"] for row in rows])


def alert_outbox(*, topic: str, batch_size: int = 500) -> Outbox[asyncpg.Record]:
    return Outbox("alert-relay", topic, _pending, _message, _mark, batch_size=batch_size)


async def publish_alert_changes(
    connection: asyncpg.Connection, publish: Publish, *, topic: str, batch_size: int = 500
) -> int:
    """Publishes up to `batch_size` queued changes; returns how many. `publish` returns only
    once the broker acknowledged every message, and raises otherwise (nothing is marked)."""
    return await alert_outbox(topic=topic, batch_size=batch_size).relay(connection, publish)


def alert_relay_job(pool: asyncpg.Pool, settings: Settings) -> Job:
    """The relay as a job; its producer connects on the first run (a broker that is away makes
    the run fail and back off, the evaluations go on queueing)."""
    return outbox_job(
        alert_outbox(topic=settings.topic_names().physical(Topic.ALERTS)),
        pool, settings_publisher(settings),
        interval=settings.alert_relay_interval_seconds,
        retry_max_seconds=settings.consumer_retry_max_seconds,
    )


def alert_changes_prune_job(pool: asyncpg.Pool, settings: Settings) -> Job:
    """Deletes published changes past their retention, a batch per run, one replica at a
    time; a full batch runs again at once."""

    async def prune(connection: asyncpg.Connection) -> int:
        return await repository.prune_published_alert_changes(
            connection, older_than_days=settings.alert_changes_retention_days, limit=PRUNE_BATCH
        )

    return Job(
        "alert-changes-retention", singleton(pool, "alert-changes-retention", prune),
        interval=settings.webhooks_prune_interval_seconds,
        retry_max_seconds=max(settings.consumer_retry_max_seconds, 60.0),
        batch=PRUNE_BATCH,
    )
