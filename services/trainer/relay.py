"""Publishes stored training examples on the training-examples topic (a transactional outbox).

Examples are written by the consumer pipeline's transaction; this relay reads the ones not yet
published, in the order they were queued, publishes them and marks them published only after
the broker acknowledged every one. Delivery is at least once: a crash between the
acknowledgement and the mark publishes them again, and consumers keep the highest `revision`
of each `example_id`. A changed example is published again with a higher revision; a deleted
one (erasure, opt-out, superseded) is followed by a `training_example.retracted` message.

Messages are keyed `<tenant_id>:<conversation_id>`, so one conversation's messages land on one
partition, in order; one relay runs at a time (a Postgres advisory lock) for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import orjson

from feedbackloop.kafka import OutgoingMessage, PublishUnavailable
from feedbackloop.pipeline.consumer import is_transient
from services.trainer import repository
from services.trainer.examples import published_document

logger = logging.getLogger(__name__)

Publish = Callable[[Sequence[OutgoingMessage]], Awaitable[None]]


def outbox_message(item: repository.OutboxItem, *, topic: str) -> OutgoingMessage:
    key = f"{item.tenant_id}:{item.conversation_id}".encode()
    if item.kind == "example":
        assert item.record is not None
        document = published_document(
            item.record, revision=item.revision, created_at=item.created_at
        )
    else:
        document = {
            "type": "training_example.retracted",
            "example_id": str(item.example_id),
            "tenant_id": item.tenant_id,
            "conversation_id": item.conversation_id,
            "reason": item.reason,
            "retracted_at": item.created_at.isoformat(),
        }
    return OutgoingMessage(topic=topic, key=key, value=orjson.dumps(document))


async def publish_pending_examples(
    pool: asyncpg.Pool, publish: Publish, *, topic: str, batch_size: int = 500
) -> int:
    """Publishes up to `batch_size` queued messages; returns how many were published.

    `publish` must return only once the broker acknowledged every message, and raise otherwise
    (`EventPublisher.publish` does: `PublishUnavailable`); nothing is then marked, and the next
    call publishes the same messages again. Returns 0 at once when another relay holds the lock.
    """
    async with pool.acquire() as connection:
        if not await repository.try_lock_relay(connection):
            return 0
        try:
            items = await repository.pending_outbox(connection, limit=batch_size)
            if not items:
                return 0
            await publish([outbox_message(item, topic=topic) for item in items])
            await repository.mark_published(connection, items=items)
            return len(items)
        finally:
            await repository.unlock_relay(connection)


async def relay_forever(
    pool: asyncpg.Pool,
    publish: Publish,
    *,
    topic: str,
    batch_size: int = 500,
    idle_seconds: float = 1.0,
    retry_max_seconds: float = 5.0,
) -> None:
    """Runs the relay until cancelled: at once again while there is a backlog, every
    `idle_seconds` otherwise; broker or Postgres unavailable is retried with capped backoff."""
    delay = idle_seconds
    while True:
        try:
            published = await publish_pending_examples(
                pool, publish, topic=topic, batch_size=batch_size
            )
        except Exception as error:
            if not (isinstance(error, PublishUnavailable) or is_transient(error)):
                raise
            logger.warning("training-examples relay: retrying in %.1fs: %s", delay, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, retry_max_seconds)
            continue
        delay = idle_seconds
        if published < batch_size:
            await asyncio.sleep(idle_seconds)
