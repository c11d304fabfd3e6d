"""The retention job: deliveries delivered longer ago than
FEEDBACKLOOP_WEBHOOKS_DELIVERED_RETENTION_DAYS (30) are deleted, in batches, by one replica at
a time. Pending deliveries are still to be sent and dead ones wait for a replay: both stay."""

from __future__ import annotations

import asyncpg

from feedbackloop.pipeline.jobs import Job, singleton
from feedbackloop.settings import Settings
from services.webhooks import repository

PRUNE_BATCH = 5_000


def prune_job(pool: asyncpg.Pool, settings: Settings) -> Job:
    """A run deletes one batch; a full batch runs again at once, so a backlog drains."""

    async def prune(connection: asyncpg.Connection) -> int:
        return await repository.prune_delivered(
            connection, older_than_days=settings.webhooks_delivered_retention_days,
            limit=PRUNE_BATCH,
        )

    return Job(
        "webhook-retention", singleton(pool, "webhook-retention", prune),
        interval=settings.webhooks_prune_interval_seconds,
        retry_max_seconds=max(settings.consumer_retry_max_seconds, 60.0),
        batch=PRUNE_BATCH,
    )
