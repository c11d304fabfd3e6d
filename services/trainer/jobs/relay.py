"""Publishes stored training examples on the training-examples topic (a transactional outbox).

Examples are written by the consumer pipeline's transaction; this relay reads the ones not yet
published, in the order they were queued, publishes them and marks them published only after
the broker acknowledged every one. Delivery is at least once: a crash between the
acknowledgement and the mark publishes them again, and consumers keep the highest `revision`
of each `example_id`. A changed example is published again with a higher revision; a deleted
one (erasure, opt-out, superseded) is followed by a `training_example.retracted` message.

Messages are keyed `<tenant_id>:<conversation_id>`, so one conversation's messages land on one
partition, in order; one relay runs at a time (the job's singleton lock) for the same reason.
Any failure (the broker away or refusing a message, PostgreSQL away, a bug) is the job's one
failure policy: logged, counted, the trainer not ready until a run succeeds, retried with
bounded backoff, nothing marked, so nothing accepted is lost.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

from feedbackloop.contract import Topic
from feedbackloop.kafka import EventPublisher, OutgoingMessage
from feedbackloop.pipeline.jobs import Job, singleton
from feedbackloop.pipeline.outbox import Outbox, Publish, outbox_job
from feedbackloop.settings import Settings
from services.trainer.examples import outbox as queued
from services.trainer.examples.records import published_document

JOB = "training-relay"


def outbox_document(item: queued.OutboxItem) -> dict[str, object]:
    """The topic payload of one queued item: an example revision or a retraction."""
    if item.kind == "example":
        assert item.record is not None
        return published_document(item.record, revision=item.revision, created_at=item.created_at)
    return {
        "type": "training_example.retracted",
        "example_id": str(item.example_id),
        "tenant_id": item.tenant_id,
        "conversation_id": item.conversation_id,
        "reason": item.reason,
        "retracted_at": item.created_at.isoformat(),
    }


def _keyed(item: queued.OutboxItem) -> tuple[bytes, bytes]:
    return f"{item.tenant_id}:{item.conversation_id}".encode(), orjson.dumps(outbox_document(item))


def outbox_message(item: queued.OutboxItem, *, topic: str) -> OutgoingMessage:
    key, value = _keyed(item)
    return OutgoingMessage(topic=topic, key=key, value=value)


async def _pending(connection: asyncpg.Connection, limit: int) -> list[queued.OutboxItem]:
    return await queued.pending_outbox(connection, limit=limit)


async def _mark(connection: asyncpg.Connection, items: Sequence[queued.OutboxItem]) -> None:
    await queued.mark_published(connection, items=items)


def training_outbox(*, topic: str, batch_size: int = 500) -> Outbox[queued.OutboxItem]:
    return Outbox(JOB, topic, _pending, _keyed, _mark, batch_size=batch_size)


async def publish_pending_examples(
    pool: asyncpg.Pool, publish: Publish, *, topic: str, batch_size: int = 500
) -> int:
    """Publishes up to `batch_size` queued messages; returns how many were published.

    `publish` must return only once the broker acknowledged every message, and raise otherwise
    (`EventPublisher.publish` does: `PublishUnavailable`); nothing is then marked, and the next
    call publishes the same messages again. Returns 0 at once when another relay holds the lock.
    """
    outbox = training_outbox(topic=topic, batch_size=batch_size)

    async def relay(connection: asyncpg.Connection) -> int:
        return await outbox.relay(connection, publish)

    return await singleton(pool, JOB, relay)()


def training_relay_job(pool: asyncpg.Pool, settings: Settings, publisher: EventPublisher) -> Job:
    """The relay as a job: at once again while there is a backlog, every
    `training_relay_interval_seconds` otherwise."""
    return outbox_job(
        training_outbox(topic=settings.topic_names().physical(Topic.TRAINING_EXAMPLES),
                        batch_size=settings.training_relay_batch_size),
        pool, publisher,
        interval=settings.training_relay_interval_seconds,
        retry_max_seconds=settings.consumer_retry_max_seconds,
    )
