"""Kafka plumbing: client settings, topic creation and the acknowledged event publisher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import MessageSizeTooLargeError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KafkaConnection:
    """How to reach the broker; passed to every client so none reads the environment."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def client_args(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (producer, admin, plain consumers)."""
        args: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            args["ssl_context"] = create_ssl_context()
        if self.sasl_mechanism:
            args |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password,
            }
        return args

    def faststream_security(self) -> BaseSecurity | None:
        """The same settings for FastStream's broker (the consumers), so that a secured Kafka
        is reached by every client alike."""
        if self.security_protocol == "PLAINTEXT":
            return None
        context = create_ssl_context() if self.uses_tls else None
        if self.security_protocol == "SSL":
            return BaseSecurity(ssl_context=context, use_ssl=True)
        if self.security_protocol not in ("SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError(f"unsupported Kafka security protocol {self.security_protocol!r}")
        mechanisms = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256,
                      "SCRAM-SHA-512": SASLScram512}
        mechanism = mechanisms.get(self.sasl_mechanism or "")
        if mechanism is None:
            raise ValueError(f"unsupported SASL mechanism {self.sasl_mechanism!r}")
        return mechanism(
            username=self.sasl_username or "",
            password=self.sasl_password or "",
            ssl_context=context,
            use_ssl=self.uses_tls,
        )


async def ensure_topics(
    connection: KafkaConnection,
    names: Sequence[str],
    *,
    partitions: int,
    replication_factor: int,
    timeout_seconds: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    admin = AIOKafkaAdminClient(**connection.client_args())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(name, partitions, replication_factor) for name in missing],
                    timeout_ms=int(timeout_seconds * 1000),
                )
            except TopicAlreadyExistsError:
                pass
        return missing
    finally:
        await admin.close()


class PublishUnavailable(Exception):
    """The broker did not acknowledge in time, or is unreachable: nothing may be reported as
    accepted. The caller answers 503 and the client retries with the same event ids."""


class PublishRejected(Exception):
    """The broker refuses this message whatever the retries (too large for it): the client must
    change the request, not retry it."""


class OutgoingMessage(NamedTuple):
    """One message to publish (a named tuple: ingest builds one per event)."""

    topic: str
    key: bytes
    value: bytes


class EventPublisher:
    """Publishes messages and returns only once the broker acknowledged every one (acks=all).

    `publish` raises `PublishUnavailable` if any message is not acknowledged within the timeout,
    and `PublishRejected` if the broker refuses one outright (too large);
    messages that were acknowledged stay published, which is safe because consumers are
    idempotent on `(tenant_id, event_id)`.
    """

    def __init__(
        self,
        connection: KafkaConnection,
        *,
        enable_idempotence: bool,
        linger_ms: int,
        request_timeout_ms: int,
        timeout_seconds: float,
    ) -> None:
        self._producer_args: dict[str, Any] = {
            **connection.client_args(),
            "acks": "all",
            "enable_idempotence": enable_idempotence,
            "linger_ms": linger_ms,
            "request_timeout_ms": request_timeout_ms,
            "max_batch_size": 1_048_576,
            "max_request_size": 4_194_304,
        }
        self._timeout_seconds = timeout_seconds
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect; raises if the broker is unreachable (a later call tries afresh)."""
        producer = AIOKafkaProducer(**self._producer_args)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def start_when_reachable(self, max_delay: float = 5.0) -> None:
        """Connect, waiting out a broker that is not up yet (capped exponential backoff)."""
        delay = 0.5
        while True:
            try:
                await self.start()
                return
            except Exception as error:
                logger.warning("broker not reachable yet (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        try:
            await asyncio.wait_for(self._send_all(messages), timeout=self._timeout_seconds)
        except MessageSizeTooLargeError as error:
            raise PublishRejected(f"the event log refuses a message this large ({error})") from error
        except Exception as error:
            raise PublishUnavailable(f"{type(error).__name__}: {error}") from error

    async def _send_all(self, messages: Sequence[OutgoingMessage]) -> None:
        producer = self._producer
        if producer is None:
            raise PublishUnavailable("not connected to the broker yet")
        futures = [
            await producer.send(message.topic, message.value, key=message.key)
            for message in messages
        ]
        await asyncio.gather(*futures)

    async def is_ready(self) -> bool:
        """True when the producer knows a live broker (metadata can be refreshed)."""
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=2.0)
            return True
        except Exception:
            return False
