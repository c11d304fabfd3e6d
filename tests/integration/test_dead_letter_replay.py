"""A bad deploy dead-letters real events; after the fix, replay brings them back, bounded and
without replaying anything twice."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from feedbackloop.contract import InvalidEvent, Topic, load_samples
from feedbackloop.kafka import KafkaConnection
from feedbackloop.pipeline.app import ConsumerConfig, build_consumer_app
from feedbackloop.pipeline.consumer import ConsumerSpec
from feedbackloop.postgres import create_pool
from services.cli.deadletters import list_dead_letters, replay_dead_letters
from services.profiles.handlers import SPEC as PROFILES
from tests.infra import create_database, create_topics, eventually, unique_prefix

pytestmark = pytest.mark.integration


def _rejects_everything(event: Any) -> Any:
    raise InvalidEvent("a bug in this release rejects every event")


async def test_replay_after_a_fix(kafka_bootstrap: str, postgres_url: str) -> None:
    names = await create_topics(kafka_bootstrap, unique_prefix())
    database = await create_database(postgres_url)
    connection = KafkaConnection(kafka_bootstrap)
    config = ConsumerConfig(kafka=connection, database_url=database, topic_names=names,
                            batch_timeout_ms=50)
    broken = ConsumerSpec(name="profiles", schema="profiles", topics=PROFILES.topics,
                          process=_rejects_everything, write=PROFILES.write)
    votes = [doc for doc in load_samples()["feedback.submitted"] if "user_id" in doc][:3]

    app = build_consumer_app(broken, config)
    async with app.router.lifespan_context(app):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        for vote in votes:
            await producer.send_and_wait(names.physical(Topic.FEEDBACK), orjson.dumps(vote),
                                         key=b"acme:resp-1")
        await producer.stop()

        async def dead_lettered() -> list[Any] | None:
            found = await list_dead_letters(connection, names, Topic.FEEDBACK, limit=10)
            return found if len(found) == 3 else None

        dead = await eventually(dead_lettered, timeout=30)
    assert {d.headers["fbl-error-class"] for d in dead} == {"invalid"}
    assert {d.headers["fbl-service"] for d in dead} == {"profiles"}

    assert await replay_dead_letters(connection, names, Topic.FEEDBACK, max_records=2) == 2
    assert await replay_dead_letters(connection, names, Topic.FEEDBACK, max_records=10) == 1
    assert await replay_dead_letters(connection, names, Topic.FEEDBACK, max_records=10) == 0
    assert await replay_dead_letters(connection, names, Topic.FEEDBACK, max_records=10,
                                     service="metrics") == 0

    fixed = build_consumer_app(PROFILES, config)
    pool = await create_pool(database, min_size=1, max_size=2)
    try:
        async with fixed.router.lifespan_context(fixed):
            async def applied() -> int | None:
                count = await pool.fetchval("SELECT count(*) FROM profiles.feedback")
                return count if count == 3 else None

            assert await eventually(applied, timeout=30) == 3
        rows = await pool.fetch("SELECT event_id::text FROM profiles.feedback")
        assert {row["event_id"] for row in rows} == {vote["event_id"] for vote in votes}
    finally:
        await pool.close()
