"""The acknowledged publisher: what it reports when the broker refuses or is not there."""

from __future__ import annotations

import pytest

from feedbackloop.embedded import free_port
from feedbackloop.kafka import (
    EventPublisher,
    KafkaConnection,
    OutgoingMessage,
    PublishRejected,
    PublishUnavailable,
)
from tests.infra import create_topics, unique_prefix

pytestmark = pytest.mark.integration


def _publisher(bootstrap: str) -> EventPublisher:
    return EventPublisher(KafkaConnection(bootstrap), enable_idempotence=False, linger_ms=0,
                          request_timeout_ms=2_000, timeout_seconds=2.0)


async def test_a_message_the_broker_cannot_take_is_rejected_not_retried(
    kafka_bootstrap: str,
) -> None:
    names = await create_topics(kafka_bootstrap, unique_prefix(), partitions=1)
    topic = names.all_physical()[0]
    publisher = _publisher(kafka_bootstrap)
    await publisher.start()
    try:
        await publisher.publish([OutgoingMessage(topic, b"k", b"fine")])
        with pytest.raises(PublishRejected, match="large"):
            await publisher.publish([OutgoingMessage(topic, b"k", b"x" * 5_000_000)])
    finally:
        await publisher.stop()


async def test_no_broker_means_unavailable() -> None:
    publisher = _publisher(f"127.0.0.1:{free_port()}")
    with pytest.raises(Exception):  # noqa: B017 - any connection error; the start must fail
        await publisher.start()
    assert not await publisher.is_ready()
    with pytest.raises(PublishUnavailable):
        await publisher.publish([OutgoingMessage("t", b"k", b"v")])
