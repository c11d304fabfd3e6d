"""The transactional outbox: rows a service committed, published on one topic, at least once.

A service writes what it will publish into its own tables, in the transaction of its effects;
an `Outbox` names those tables' three operations and the topic:

- `pending(connection, limit)`: the oldest unpublished items, in publishing order;
- `message(item)`: the item's `(key, value)` on the topic (the value is the topic payload);
- `mark(connection, items)`: marks them published.

`Outbox.relay` publishes one batch and marks it only after the broker acknowledged every
message (`publish` returns only then, and raises otherwise: nothing is marked and the next run
publishes the same items again). Delivery is therefore at least once: a crash between the
acknowledgement and the mark publishes a batch twice, and consumers deduplicate on the item's
identity. Keys keep one subject's messages on one partition; `outbox_job` runs the relay as a
singleton `Job`, so one replica publishes at a time and the topic keeps the outbox's order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

from feedbackloop.kafka import EventPublisher, OutgoingMessage
from feedbackloop.pipeline.jobs import Job, singleton

Item = TypeVar("Item")
Publish = Callable[[Sequence[OutgoingMessage]], Awaitable[None]]


@dataclass(frozen=True)
class Outbox(Generic[Item]):
    """Table to topic: see the module's docstring. `topic` is the physical topic name."""

    name: str
    topic: str
    pending: Callable[[asyncpg.Connection, int], Awaitable[Sequence[Item]]]
    message: Callable[[Item], tuple[bytes, bytes]]
    mark: Callable[[asyncpg.Connection, Sequence[Item]], Awaitable[None]]
    batch_size: int = 500

    def messages(self, items: Sequence[Item]) -> list[OutgoingMessage]:
        messages = []
        for item in items:
            key, value = self.message(item)
            messages.append(OutgoingMessage(self.topic, key, value))
        return messages

    async def relay(self, connection: asyncpg.Connection, publish: Publish) -> int:
        """Publishes up to `batch_size` pending items and marks them; returns how many. An
        error (the broker away or refusing, PostgreSQL away) raises with nothing marked."""
        items = await self.pending(connection, self.batch_size)
        if not items:
            return 0
        await publish(self.messages(items))
        await self.mark(connection, items)
        return len(items)


def settings_publisher(settings: Any) -> EventPublisher:
    """The acks=all producer of an outbox, from the settings object a service's `main` built."""
    return EventPublisher(
        settings.kafka_connection(),
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=settings.kafka_linger_ms,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        timeout_seconds=settings.publish_timeout_seconds,
    )


def outbox_job(
    outbox: Outbox[Any],
    pool: asyncpg.Pool,
    publisher: EventPublisher,
    *,
    interval: float,
    retry_max_seconds: float,
) -> Job:
    """The relay of `outbox` as a singleton job named after it. The producer connects on the
    first run (a broker that is away makes the run fail and back off while the service goes
    on queueing) and is stopped with the job."""
    started: list[bool] = []

    async def relay(connection: asyncpg.Connection) -> int:
        if not started:
            await publisher.start()
            started.append(True)
        return await outbox.relay(connection, publisher.publish)

    return Job(
        outbox.name, singleton(pool, outbox.name, relay),
        interval=interval, retry_max_seconds=retry_max_seconds, batch=outbox.batch_size,
        close=publisher.stop,
    )
