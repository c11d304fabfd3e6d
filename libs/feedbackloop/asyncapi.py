"""A service's AsyncAPI document: the topics it consumes and publishes, each with its payloads'
JSON schemas from the contract (`feedbackloop.contract.catalog`).

The document is built on a FastStream broker of its own that is never connected: the running
consumer reads raw batches (its handler's signature says nothing of the payload) and query and
ingest publish with plain producers, so none of their brokers could describe the messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from feedbackloop.contract import Topic, TopicNames
from feedbackloop.contract.catalog import payload_type


def asyncapi_json(
    service: str,
    topic_names: TopicNames,
    *,
    consumes: Sequence[tuple[Topic, str]] = (),
    publishes: Sequence[tuple[Topic, str]] = (),
) -> bytes:
    """The AsyncAPI 3 document (JSON) of `service`, which reads the `consumes` topics and
    writes the `publishes` topics, each given with a description."""
    broker = KafkaBroker()
    for topic, description in consumes:
        broker.subscriber(
            topic_names.physical(topic), title=f"{service}:{topic.value}", description=description
        )(_reader(topic))
    for topic, description in publishes:
        broker.publisher(
            topic_names.physical(topic), title=f"{service}:{topic.value}",
            description=description, schema=payload_type(topic),
        )
    return AsyncAPI(broker, title=f"feedbackloop {service}").to_specification().to_json().encode()


def _reader(topic: Topic) -> Callable[[Any], Awaitable[None]]:
    """A handler whose body is one message of `topic`: what the document shows it reads."""

    async def read(body: Any) -> None:
        """Documentation only: the broker this is registered on never connects."""

    read.__annotations__["body"] = payload_type(topic)
    return read
