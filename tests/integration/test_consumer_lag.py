"""`feedbackloop_consumer_lag_messages` against the real broker and PostgreSQL: a consumer that
cannot apply its input (started before the migrations) reports exactly the records waiting on
each topic, and the gauge returns to 0 once the backlog drains."""

from __future__ import annotations

import uuid
from collections import Counter

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from feedbackloop.contract import TOPIC_OF_TYPE, TopicNames, decode_event, load_samples
from feedbackloop.kafka import KafkaConnection
from feedbackloop.migrations import apply_migrations
from feedbackloop.pipeline.app import ConsumerConfig, build_consumer_app
from services.metrics.handlers import SPEC as METRICS
from tests.infra import create_topics, eventually, group_lag, unique_prefix

pytestmark = pytest.mark.integration
COPIES = 15
LAG_METRIC = "feedbackloop_consumer_lag_messages"


async def _empty_database(server_url: str) -> str:
    """A database without the migrations: every write fails with a missing schema, which the
    pipeline retries (never dead-letters), so the records stay uncommitted."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return f"{server_url.rpartition('/')[0]}/{name}"


def _backlog(names: TopicNames) -> list[tuple[str, bytes, bytes]]:
    """`COPIES` fresh copies of every sample on the metrics consumer's topics, spread by key."""
    docs = [
        doc
        for docs in load_samples().values()
        for doc in docs
        if TOPIC_OF_TYPE[doc["type"]] in METRICS.topics
    ]
    return [
        (
            names.physical(TOPIC_OF_TYPE[doc["type"]]),
            f"acme:{copy}".encode(),
            orjson.dumps(doc | {"event_id": str(uuid.uuid4())}),
        )
        for copy in range(COPIES)
        for doc in docs
    ]


async def _lag(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {
        sample.labels["topic"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == LAG_METRIC
        for sample in family.samples
        if sample.labels.get("service") == METRICS.name
    }


async def test_lag_gauge_reports_the_backlog_and_returns_to_zero(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    names = await create_topics(kafka_bootstrap, unique_prefix())
    database = await _empty_database(postgres_url)
    config = ConsumerConfig(
        kafka=KafkaConnection(kafka_bootstrap), database_url=database, topic_names=names,
        max_records=20, batch_timeout_ms=50, retry_max_seconds=0.5, lag_interval_seconds=0.5,
    )
    app = build_consumer_app(METRICS, config)
    backlog = _backlog(names)
    expected = Counter(topic for topic, _, _ in backlog)
    topics = [names.physical(topic) for topic in METRICS.topics]
    assert len(expected) >= 2, "the backlog should span more than one topic"

    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://consumer") as client,
    ):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for topic, key, value in backlog:
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

        # Stuck on its first batch: the gauge counts the batch in hand as well as the rest.
        async def backlog_reported() -> dict[str, float] | None:
            lag = await _lag(client)
            return lag if lag == {topic: expected.get(topic, 0) for topic in topics} else None

        await eventually(backlog_reported, timeout=60, interval=0.5)
        # The broker's own view of the group agrees: nothing was committed.
        assert await group_lag(kafka_bootstrap, config.group_id(METRICS.name), topics) == len(backlog)

        connection = await asyncpg.connect(database)
        try:
            await apply_migrations(connection)
        finally:
            await connection.close()

        async def drained() -> bool:
            return await _lag(client) == dict.fromkeys(topics, 0)

        await eventually(drained, timeout=60, interval=0.5)
        assert await group_lag(kafka_bootstrap, config.group_id(METRICS.name), topics) == 0
        connection = await asyncpg.connect(database)
        try:
            applied = await connection.fetchval("SELECT count(*) FROM metrics.processed_events")
        finally:
            await connection.close()
        # Events the metrics consumer ignores (process() is None) leave no claim.
        assert applied == sum(
            METRICS.process(decode_event(value)) is not None for _, _, value in backlog
        )
