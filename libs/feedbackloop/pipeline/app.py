"""Wiring a `ConsumerSpec` into a running service: a FastStream batch subscriber with manual
commits, a Postgres pool, a dead-letter publisher, and the HTTP endpoints every service has
(`/healthz`, `/readyz`, `/metrics`, `/asyncapi.json`), and optionally background jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from fastapi import FastAPI, Response
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CollectorRegistry

from feedbackloop.asyncapi import asyncapi_json
from feedbackloop.contract import Topic, TopicNames
from feedbackloop.kafka import KafkaConnection
from feedbackloop.observability import CONTENT_TYPE_LATEST, ConsumerMetrics, JobMetrics, render
from feedbackloop.pipeline.consumer import BatchPipeline, ConsumerSpec, DeadLetter
from feedbackloop.pipeline.jobs import Job, JobRunner
from feedbackloop.postgres import create_pool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerConfig:
    """Everything a consumer service needs to run, taken from settings by its `main`."""

    kafka: KafkaConnection
    database_url: str
    topic_names: TopicNames
    max_records: int = 500
    batch_timeout_ms: int = 200
    retry_max_seconds: float = 5.0
    pool_min: int = 1
    pool_max: int = 5
    lag_interval_seconds: float = 5.0

    def group_id(self, service: str) -> str:
        return f"{self.topic_names.prefix}.{service}"


class BrokerDeadLetters:
    """Publishes dead letters on `<topic>.dlq`, keyed like the original, and waits for acks."""

    def __init__(self, broker: KafkaBroker, topic_names: TopicNames) -> None:
        self.broker = broker
        self.topic_names = topic_names

    async def publish(self, dead_letters: Sequence[DeadLetter]) -> None:
        for dead in dead_letters:
            topic = self.topic_names.logical(dead.record.topic)
            await self.broker.publish(
                dead.record.value or b"",
                topic=self.topic_names.dead_letter(topic),
                key=dead.record.key,
                headers=dead.headers(),
            )


def uncommitted_by_topic(
    topics: Collection[str],
    end_offsets: Mapping[TopicPartition, int],
    positions: Mapping[TopicPartition, int],
    in_hand: Mapping[TopicPartition, int],
) -> dict[str, int]:
    """Records not yet committed, per topic, over the partitions in `end_offsets`.

    A partition's uncommitted records run from the first offset of the batch in hand (those
    records are fetched but not committed) or, with no batch in hand, from the fetch position,
    to the end offset. Every topic in `topics` gets a value: 0 for one with no partition here,
    as its lag belongs to whichever replica holds its partitions.
    """
    lag = dict.fromkeys(topics, 0)
    for partition, end in end_offsets.items():
        start = in_hand.get(partition, positions.get(partition))
        if start is not None and partition.topic in lag:
            lag[partition.topic] += max(0, end - start)
    return lag


class ConsumerLag:
    """Keeps `feedbackloop_consumer_lag_messages{service,topic}` current for one subscriber.

    `run` measures every `interval` seconds, and soon after each batch (`batch_started` /
    `batch_finished`), but never more often than once per `min_spacing` seconds, so a fast
    drain costs one end-offsets request per second, not one per batch. End offsets are asked
    of the broker rather than read from the last fetch (`highwater`): aiokafka does not fetch a
    partition whose records still wait in its buffer, so a consumer stuck on a batch would
    report a stale, too-small lag. A measurement that fails (broker unreachable, rebalance in
    progress) leaves the gauge at its last value; `run` never raises but for cancellation.
    """

    def __init__(
        self,
        metrics: ConsumerMetrics,
        topics: Sequence[str],
        *,
        interval: float = 5.0,
        min_spacing: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self.metrics = metrics
        self.topics = tuple(topics)
        self.interval = interval
        self.min_spacing = min_spacing
        self.timeout = timeout
        self._in_hand: dict[TopicPartition, int] = {}
        self._wake = asyncio.Event()

    def batch_started(self, records: Sequence[Any]) -> None:
        """Remember where the batch starts on each partition: uncommitted until acked."""
        self._in_hand = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            self._in_hand[partition] = min(record.offset, self._in_hand.get(partition, record.offset))

    def batch_finished(self) -> None:
        self._in_hand = {}
        self._wake.set()

    async def run(self, consumer_of: Callable[[], AIOKafkaConsumer | None]) -> None:
        """Measure until cancelled; `consumer_of` returns the subscriber's current consumer."""
        while True:
            started = time.monotonic()
            consumer = consumer_of()
            if consumer is not None:
                try:
                    await self.measure(consumer)
                except Exception:
                    # Unexpected (a bug, or a client error not foreseen): keep measuring, and
                    # say why the gauge did not move this time.
                    logger.exception("%s: measuring consumer lag failed", self.metrics.service)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await asyncio.sleep(max(0.0, self.min_spacing - (time.monotonic() - started)))

    async def measure(self, consumer: AIOKafkaConsumer) -> None:
        in_hand = dict(self._in_hand)
        try:
            async with asyncio.timeout(self.timeout):
                assigned = sorted(consumer.assignment())
                ends = await consumer.end_offsets(assigned) if assigned else {}
                positions = {
                    partition: await consumer.position(partition)
                    for partition in assigned
                    if partition not in in_hand
                }
        except (TimeoutError, KafkaError, IllegalStateError) as error:
            logger.debug("%s: lag not measured: %r", self.metrics.service, error)
            return
        for topic, lag in uncommitted_by_topic(self.topics, ends, positions, in_hand).items():
            self.metrics.lag.labels(self.metrics.service, topic).set(lag)


async def _raw_body(message: Any) -> Any:
    """Leave bodies as bytes: decoding is the pipeline's job, so a bad body is dead-lettered."""
    return message.body


Jobs = Callable[[asyncpg.Pool, CollectorRegistry], Sequence[Job]]


def build_consumer_app(
    spec: ConsumerSpec[Any],
    config: ConsumerConfig,
    *,
    jobs: Jobs | None = None,
    publishes: Sequence[tuple[Topic, Any, str]] = (),
) -> FastAPI:
    """The ASGI app of one consumer service. Nothing connects until the app starts.

    `publishes` names the output topics the service writes (topic, contract model, what it is),
    so its `/asyncapi.json` shows them with their real schema beside the topics it consumes.

    `jobs`, when given, is called once the pool is up (with the service's metrics registry) and
    its jobs run under a `JobRunner` for the life of the app; each is a check of `/readyz`, so
    a job that keeps failing makes the service not ready.
    """
    service = _ConsumerService(spec, config, jobs)
    service.document_outputs(publishes)
    app = FastAPI(title=f"feedbackloop {spec.name}", lifespan=service.lifespan)
    app.state.broker = service.broker
    app.get("/healthz")(_healthz)
    app.get("/readyz")(service.readyz)
    app.get("/metrics")(service.prometheus_metrics)
    app.get("/asyncapi.json")(service.asyncapi)
    return app


async def _healthz() -> dict[str, str]:
    return {"status": "ok"}


class _ConsumerService:
    """One consumer service's parts: its broker and subscriber, the pipeline and pool it gets
    at start, its jobs, and the handlers of its endpoints."""

    def __init__(self, spec: ConsumerSpec[Any], config: ConsumerConfig, jobs: Jobs | None) -> None:
        self.spec = spec
        self.config = config
        self.publishes: list[tuple[Topic, Any, str]] = []
        self.jobs = jobs
        self.registry = CollectorRegistry()
        self.metrics = ConsumerMetrics(self.registry, spec.name)
        self.job_metrics = JobMetrics(self.registry) if jobs is not None else None
        self.broker = KafkaBroker(
            config.kafka.bootstrap_servers,
            security=config.kafka.faststream_security(),
            # Dead letters are durable before they count.
            acks="all",
            logger=logging.getLogger(f"feedbackloop.{spec.name}.broker"),
            client_id=f"feedbackloop-{spec.name}",
        )
        self.pool: asyncpg.Pool | None = None
        self.pipeline: BatchPipeline[Any] | None = None
        self.runner: JobRunner | None = None
        topics = [config.topic_names.physical(topic) for topic in spec.topics]
        self.lag = ConsumerLag(self.metrics, topics, interval=config.lag_interval_seconds)
        self.subscriber = self.broker.subscriber(
            *topics,
            group_id=config.group_id(spec.name),
            batch=True,
            max_records=config.max_records,
            batch_timeout_ms=config.batch_timeout_ms,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            decoder=_raw_body,
            title=f"{spec.name}",
            description=f"The {spec.name} consumer group: "
            + ", ".join(topic.value for topic in spec.topics),
        )
        self.subscriber(self.consume)

    def document_outputs(self, publishes: Sequence[tuple[Topic, Any, str]]) -> None:
        self.publishes = list(publishes)
        for topic, model, description in publishes:
            # Documentation: the publishing itself goes through the service's outbox relay.
            self.broker.publisher(self.config.topic_names.physical(topic),
                                  title=f"{self.spec.name}: {topic.value}",
                                  description=description, schema=model)

    async def consume(self, body: list[Any], message: KafkaMessage) -> None:
        raw = message.raw_message
        records = raw if isinstance(raw, tuple) else (raw,)
        self.lag.batch_started(records)
        try:
            assert self.pipeline is not None, "no batch is consumed before the app started"
            await self._consume_batch(self.pipeline, message, records)
        finally:
            self.lag.batch_finished()

    async def _consume_batch(
        self, pipeline: BatchPipeline[Any], message: KafkaMessage, records: Sequence[Any]
    ) -> None:
        try:
            await pipeline.process_batch(records)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Unexpected: rewind every partition in the batch so nothing is committed past it.
            logger.exception("%s: batch failed; rewinding and retrying", self.spec.name)
            await message.nack()
            await asyncio.sleep(1.0)
            return
        try:
            await message.ack()
            self.metrics.last_commit.labels(self.spec.name).set_to_current_time()
        except (CommitFailedError, IllegalStateError) as error:
            # A rebalance took the partitions away; their new owner re-reads from the last
            # commit and the event-id claims make the replay a no-op.
            logger.warning("%s: commit failed after rebalance: %s", self.spec.name, error)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        config = self.config
        pool = await create_pool(config.database_url, min_size=config.pool_min,
                                 max_size=config.pool_max)
        self.pool = pool
        self.pipeline = BatchPipeline(
            self.spec, pool, BrokerDeadLetters(self.broker, config.topic_names), self.metrics,
            retry_max_seconds=config.retry_max_seconds,
        )
        await self.broker.start()
        lag_task = asyncio.create_task(self.lag.run(lambda: self.subscriber.consumer))
        lag_task.add_done_callback(_log_failure(self.spec.name))
        if self.jobs is not None and self.job_metrics is not None:
            self.runner = JobRunner(self.jobs(pool, self.registry), self.job_metrics)
            self.runner.start()
        try:
            yield
        finally:
            if self.runner is not None:
                await self.runner.stop()
                self.runner = None
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
            await self.broker.stop()
            self.pool = None
            await pool.close()

    async def readyz(self, response: Response) -> dict[str, Any]:
        checks = {"broker": await _broker_ready(self.broker), "database": await _db_ready(self.pool)}
        pipeline, runner = self.pipeline, self.runner
        checks["pipeline"] = pipeline is not None and pipeline.retry_state.healthy
        if runner is not None:
            checks |= runner.checks()
        ready = all(checks.values())
        response.status_code = 200 if ready else 503
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
        if pipeline is not None and pipeline.retry_state.last_error:
            body["last_error"] = pipeline.retry_state.last_error
        if runner is not None and runner.errors():
            body["job_errors"] = runner.errors()
        return body

    async def prometheus_metrics(self) -> Response:
        return Response(render(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def asyncapi(self) -> Response:
        document = asyncapi_json(
            self.spec.name, self.config.topic_names,
            consumes=[(topic, f"Read by the {self.spec.name} consumer group.")
                      for topic in self.spec.topics],
            publishes=[(topic, description) for topic, _model, description in self.publishes],
        )
        return Response(document, media_type="application/json")


def _log_failure(service: str) -> Callable[[asyncio.Task[None]], None]:
    def report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: background task failed", service, exc_info=task.exception())

    return report


async def _broker_ready(broker: KafkaBroker) -> bool:
    try:
        return bool(await asyncio.wait_for(broker.ping(timeout=2.0), timeout=3.0))
    except Exception:
        return False


async def _db_ready(pool: asyncpg.Pool | None) -> bool:
    if pool is None:
        return False
    try:
        async with asyncio.timeout(2.0), pool.acquire() as connection:
            await connection.fetchval("SELECT 1")
        return True
    except Exception:
        return False


def consumer_config(settings: Any) -> ConsumerConfig:
    """The consumer configuration from the settings object a service's `main` built."""
    return ConsumerConfig(
        kafka=settings.kafka_connection(),
        database_url=settings.database_url.get_secret_value(),
        topic_names=settings.topic_names(),
        max_records=settings.consumer_max_records,
        batch_timeout_ms=settings.consumer_batch_timeout_ms,
        retry_max_seconds=settings.consumer_retry_max_seconds,
        pool_min=settings.database_pool_min,
        pool_max=min(settings.database_pool_max, 5),
    )
