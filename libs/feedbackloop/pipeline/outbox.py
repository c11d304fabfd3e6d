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

A message the broker refuses whatever the retries (`PublishRejected`: larger than the topic
takes) would hold back everything after it for good. The batch is then published one message
at a time: the items before it are marked, the refused one is marked too (it stays in the
service's tables, its only copy off the topic) and the run raises, naming its key and size, so
the job reports the failure (a log line, `/readyz`, the failed-run metric); the next run goes
on with the items after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg

from feedbackloop.kafka import EventPublisher, OutgoingMessage, PublishRejected
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
        messages = self.messages(items)
        try:
            await publish(messages)
        except PublishRejected:
            await self._one_at_a_time(connection, publish, items, messages)
        await self.mark(connection, items)
        return len(items)

    async def _one_at_a_time(
        self, connection: asyncpg.Connection, publish: Publish, items: Sequence[Item],
        messages: Sequence[OutgoingMessage],
    ) -> None:
        """Publishes `items` in order until one is refused for good; marks the ones before it
        and it, then raises (see the module's docstring). Returns when none is refused."""
        for index, message in enumerate(messages):
            try:
                await publish([message])
            except PublishRejected as refused:
                await self.mark(connection, items[: index + 1])
                raise PublishRejected(
                    f"{self.name}: the broker refuses the message keyed {message.key!r} "
                    f"({len(message.value)} bytes) on {self.topic}: {refused}; it is marked "
                    "published and stays in the service's tables, the items after it go on"
                ) from refused


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
