"""Each consumer service against the real broker and PostgreSQL: every sample applied once,
redelivery counted once, poison dead-lettered with its origin while the consumer goes on."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from feedbackloop.contract import TOPIC_OF_TYPE, Topic, TopicNames, decode_event, load_samples
from feedbackloop.kafka import KafkaConnection
from feedbackloop.pipeline.app import ConsumerConfig, build_consumer_app
from feedbackloop.postgres import create_pool
from services.learner.handlers import SPEC as LEARNER
from services.metrics.handlers import SPEC as METRICS
from services.profiles.handlers import SPEC as PROFILES
from services.trainer.handlers import SPEC as TRAINER
from tests.infra import create_database, create_topics, eventually, group_lag, unique_prefix

pytestmark = pytest.mark.integration
SPECS = [PROFILES, LEARNER, TRAINER, METRICS]
# The tables that gain one row from the new event (of a new user) the test adds last.
GROWN_TABLES = {
    "profiles": {"feedback", "users"},
    "learner": {"choices"},
    "trainer": {"consent"},
    "metrics": {"feedback_facts", "feedback_signals"},
}
FRESH_TYPE = {
    "profiles": "feedback.submitted", "learner": "recommendation.choice",
    "trainer": "user.consent_changed", "metrics": "feedback.submitted",
}
SAMPLE_DOCS = [doc for docs in load_samples().values() for doc in docs]


async def _produce(bootstrap: str, names: TopicNames, items: list[tuple[Topic, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, value in items:
            await producer.send_and_wait(names.physical(topic), value, key=b"acme:k")
    finally:
        await producer.stop()


def _sample_messages() -> list[tuple[Topic, bytes]]:
    return [(TOPIC_OF_TYPE[doc["type"]], orjson.dumps(doc)) for doc in SAMPLE_DOCS]


async def _read_dead_letters(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        group_id=f"inspect-{uuid.uuid4().hex[:6]}", enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async def more() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
            return len(records) >= expected

        await eventually(more, timeout=30)
    finally:
        await consumer.stop()
    return records


@pytest.fixture
async def database(postgres_url: str) -> str:
    return await create_database(postgres_url)


@pytest.fixture
async def names(kafka_bootstrap: str) -> TopicNames:
    return await create_topics(kafka_bootstrap, unique_prefix())


@pytest.fixture
async def pool(database: str) -> AsyncIterator[Any]:
    pool = await create_pool(database, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
async def test_consumer_applies_each_event_once_and_dead_letters_poison(
    spec: Any, kafka_bootstrap: str, names: TopicNames, database: str, pool: Any
) -> None:
    config = ConsumerConfig(
        kafka=KafkaConnection(kafka_bootstrap), database_url=database, topic_names=names,
        max_records=50, batch_timeout_ms=50,
    )
    app = build_consumer_app(spec, config)
    relevant = [
        doc for doc in SAMPLE_DOCS
        if TOPIC_OF_TYPE[doc["type"]] in spec.topics
        and spec.process(decode_event(orjson.dumps(doc))) is not None
    ]
    processed_sql = f"SELECT count(*) FROM {spec.schema}.processed_events"
    poison_topic = spec.topics[0]
    async with app.router.lifespan_context(app):
        await _produce(kafka_bootstrap, names, _sample_messages())

        async def all_applied() -> bool:
            return await pool.fetchval(processed_sql) == len(relevant)

        await eventually(all_applied, timeout=60)
        snapshot = await _table_counts(pool, spec.schema)

        # Redelivery: the same events again, and poison in the middle of the stream.
        poison = [
            (poison_topic, b"\x00\x01 not json"),
            (poison_topic, b'{"type": "feedback.deleted", "event_id": "x"}'),
            (poison_topic, orjson.dumps(SAMPLE_DOCS[0] | {"schema_version": 99})),
            (poison_topic, orjson.dumps(SAMPLE_DOCS[0] | {"tenant_id": ""})),
        ]
        await _produce(kafka_bootstrap, names, _sample_messages() + poison)
        dead = await _read_dead_letters(kafka_bootstrap, names.dead_letter(poison_topic), 4)

        # The consumer goes on after the poison: a new event after it is applied.
        template = next(doc for doc in relevant if doc["type"] == FRESH_TYPE[spec.name])
        fresh = template | {"event_id": str(uuid.uuid4()), "user_id": uuid.uuid4().hex * 2}
        await _produce(kafka_bootstrap, names, [(TOPIC_OF_TYPE[fresh["type"]], orjson.dumps(fresh))])

        async def fresh_applied() -> bool:
            return await pool.fetchval(processed_sql) == len(relevant) + 1

        await eventually(fresh_applied, timeout=30)
        topics = [names.physical(topic) for topic in spec.topics]

        async def caught_up() -> bool:
            return await group_lag(kafka_bootstrap, config.group_id(spec.name), topics) == 0

        await eventually(caught_up, timeout=30)

    after = await _table_counts(pool, spec.schema)
    grown = {"processed_events", *GROWN_TABLES[spec.name]}
    assert after == {t: n + (1 if t in grown else 0) for t, n in snapshot.items()}
    if spec.name == "metrics":
        rollup = await pool.fetchrow(
            "SELECT sum(thumbs_up) AS up, sum(thumbs_down) AS down, sum(rating_sum) AS rs "
            "FROM metrics.feedback_minute"
        )
        facts = await pool.fetchrow(
            "SELECT sum(thumbs_up) AS up, sum(thumbs_down) AS down, sum(rating_sum) AS rs "
            "FROM metrics.feedback_facts"
        )
        assert dict(rollup) == dict(facts)
        assert rollup["up"] == 2 and rollup["down"] == 1  # one sample each, plus the fresh thumb
    headers = [dict(record.headers) for record in dead if dict(record.headers).get(
        "fbl-service", b"").decode() == spec.name]
    assert len(headers) == 4
    reasons = sorted(h["fbl-error-class"].decode() for h in headers)
    assert reasons == ["invalid", "undecodable", "unknown_type", "unsupported_schema_version"]
    for header in headers:
        assert header["fbl-original-topic"].decode() == names.physical(poison_topic)
        assert int(header["fbl-original-offset"].decode()) >= 0
        assert header["fbl-original-partition"].decode() in {"0", "1"}
        assert header["fbl-error-message"]
        assert header["fbl-failed-at"]
    assert {record.value for record in dead} == {value for _, value in poison}


async def _table_counts(pool: Any, schema: str) -> dict[str, int]:
    tables = await pool.fetch(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
        schema,
    )
    return {
        row["table_name"]: await pool.fetchval(f'SELECT count(*) FROM {schema}."{row["table_name"]}"')
        for row in tables
    }
