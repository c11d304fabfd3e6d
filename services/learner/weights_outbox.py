"""The weights topic's outbox: committed, promoted versions not yet published, oldest first.

Every accepted refit or incremental update is committed as a version (`refits/`); this relay
publishes each unpublished promoted version, keyed `<tenant_id>:<segment>`, and marks it
published only after the broker acknowledged it. A crash in between publishes it again on the
next run: delivery on the weights topic is at least once, and consumers deduplicate on
(tenant_id, segment, version). One replica relays at a time (the job's singleton lock).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from feedbackloop.contract import Topic
from feedbackloop.kafka import EventPublisher
from feedbackloop.pipeline.jobs import Job, singleton
from feedbackloop.pipeline.outbox import Outbox, Publish, outbox_job
from feedbackloop.settings import Settings
from services.learner.processing import weights_message
from services.learner.refits import store

JOB = "weights-relay"


async def _pending(connection: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return await store.unpublished_versions(connection, limit=limit)


def _message(row: asyncpg.Record) -> tuple[bytes, bytes]:
    return f"{row['tenant_id']}:{row['segment']}".encode(), orjson.dumps(weights_message(row))


async def _mark(connection: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> None:
    for row in rows:
        await store.mark_published(
            connection, tenant_id=row["tenant_id"], segment=row["segment"], version=row["version"]
        )


def weights_outbox(*, topic: str, batch_size: int = 500) -> Outbox[asyncpg.Record]:
    return Outbox(JOB, topic, _pending, _message, _mark, batch_size=batch_size)


async def publish_unpublished(
    pool: asyncpg.Pool, publish: Publish, *, topic: str = "weights", limit: int = 500
) -> int:
    """Publishes up to `limit` committed versions not yet acknowledged on the weights topic,
    oldest first; returns how many (0 when another replica is relaying). `publish` returns
    only once the broker acknowledged every message, and raises otherwise (nothing is marked)."""
    outbox = weights_outbox(topic=topic, batch_size=limit)

    async def relay(connection: asyncpg.Connection) -> int:
        return await outbox.relay(connection, publish)

    return await singleton(pool, JOB, relay)()


def weights_relay_job(pool: asyncpg.Pool, settings: Settings, publisher: EventPublisher) -> Job:
    return outbox_job(
        weights_outbox(topic=settings.topic_names().physical(Topic.WEIGHTS)),
        pool, publisher,
        interval=settings.learner_refit_poll_seconds,
        retry_max_seconds=settings.consumer_retry_max_seconds,
    )
