"""The training-examples relay failing for a reason that is not an outage, against the real
trainer service (its app, consumer and jobs) on a real broker and real PostgreSQL.

A failure that a retry alone does not cure is made in the database itself: a trigger refuses to
mark examples published (as a broken migration or a revoked grant would). While it stands, the
relay's failure shows (the trainer not ready in /readyz with the error, the job's metrics, a log
line naming the job), the consumer goes on storing examples and the failure explainer goes on
explaining down-votes; once the trigger is dropped the relay publishes every stored example."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from feedbackloop.contract import Topic, TopicNames
from feedbackloop.postgres import create_pool
from feedbackloop.settings import Settings
from services.trainer.main import create_app
from tests.infra import create_database, create_topics, eventually, idempotence_supported, unique_prefix
from tests.integration.test_trainer_examples import feedback_doc, response_doc
from tests.integration.test_trainer_openai import OpenAICompatibleServer

pytestmark = pytest.mark.integration
BLOCK = """
CREATE FUNCTION trainer.refuse_marking() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'examples cannot be marked published'; END $$;
CREATE TRIGGER refuse_marking BEFORE UPDATE OF published_revision ON trainer.examples
    FOR EACH ROW WHEN (NEW.published_revision IS DISTINCT FROM OLD.published_revision)
    EXECUTE FUNCTION trainer.refuse_marking();
"""


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer() as server:
        yield server


async def _produce(bootstrap: str, names: TopicNames, docs: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for doc in docs:
            topic = Topic.RESPONSES if doc["type"] == "response.logged" else Topic.FEEDBACK
            key = f"acme:{doc['payload']['response_id']}".encode()
            await producer.send_and_wait(names.physical(topic), orjson.dumps(doc), key=key)
    finally:
        await producer.stop()


def _conversation(n: int) -> list[dict[str, Any]]:
    response_id = f"relay-{n}"
    return [response_doc(response_id, prompt=f"Add item {n} to my list", output=f"Added {n}."),
            feedback_doc(response_id, thumb="down")]


async def test_a_relay_that_keeps_failing_shows_the_other_jobs_go_on_and_nothing_is_lost(
    postgres_url: str, kafka_bootstrap: str, provider: OpenAICompatibleServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = await create_database(postgres_url)
    names = await create_topics(kafka_bootstrap, unique_prefix())
    pool = await create_pool(database, min_size=1, max_size=2)
    await pool.execute(BLOCK)
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap, database_url=database,
        kafka_topic_prefix=names.prefix, user_id_hmac_secret="relay-test-hmac-secret-0123456789",
        kafka_enable_idempotence=idempotence_supported(kafka_bootstrap),
        training_relay_interval_seconds=0.1, consumer_retry_max_seconds=0.5,
        consumer_batch_timeout_ms=50,
        failure_explanations_enabled=True, failure_explanations_base_url=provider.base_url,
        failure_explanations_api_key="sk-x", failure_explanations_requests_per_minute=6_000,
    )
    app = create_app(settings)
    reader = AIOKafkaConsumer(
        names.physical(Topic.TRAINING_EXAMPLES), bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest", group_id=f"ml-{uuid.uuid4().hex[:6]}",
    )
    try:
        with caplog.at_level(logging.WARNING):
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://trainer"
            ) as http:
                await _produce(kafka_bootstrap, names, _conversation(1) + _conversation(2))

                async def relay_failing() -> dict[str, Any] | None:
                    answer = await http.get("/readyz")
                    body: dict[str, Any] = answer.json()
                    failing = answer.status_code == 503 and not body["checks"]["job:training-relay"]
                    return body if failing else None

                body = await eventually(relay_failing, timeout=60)
                assert "examples cannot be marked published" in body["job_errors"]["training-relay"]
                metrics = (await http.get("/metrics")).text
                assert 'feedbackloop_job_healthy{job="training-relay"} 0.0' in metrics
                assert 'feedbackloop_job_runs_total{job="training-relay",outcome="failed"}' in metrics
                assert any("training-relay" in r.getMessage()
                           and "examples cannot be marked published" in r.getMessage()
                           for r in caplog.records)

                # The other work goes on: the consumer stores a later conversation's examples,
                # the explainer explains every down-vote, and the relay is still failing.
                await _produce(kafka_bootstrap, names, _conversation(3))

                async def all_stored() -> bool:
                    return await pool.fetchval(
                        "SELECT count(DISTINCT response_id) FROM trainer.examples") == 3

                async def all_explained() -> bool:
                    return await pool.fetchval(
                        "SELECT count(*) FROM trainer.failure_explanations "
                        "WHERE status = 'explained'") == 3

                await eventually(all_stored, timeout=60)
                await eventually(all_explained, timeout=60)
                assert await relay_failing() is not None
                assert await pool.fetchval(
                    "SELECT count(*) FROM trainer.examples WHERE published_revision > 0") == 0

                # The cause removed: the relay recovers and every stored example is published.
                await pool.execute("DROP TRIGGER refuse_marking ON trainer.examples")

                async def ready() -> bool:
                    return (await http.get("/readyz")).status_code == 200

                await eventually(ready, timeout=60)

                async def all_marked() -> bool:
                    return await pool.fetchval(
                        "SELECT count(*) FROM trainer.examples "
                        "WHERE published_revision < revision AND duplicate_of IS NULL") == 0

                await eventually(all_marked, timeout=30)
                stored = {str(row["example_id"]) for row in await pool.fetch(
                    "SELECT example_id FROM trainer.examples WHERE duplicate_of IS NULL")}
                assert len(stored) >= 6  # each conversation: a KTO row and an eval case
        await reader.start()
        seen: set[str] = set()

        async def all_on_the_topic() -> bool:
            for part in (await reader.getmany(timeout_ms=300)).values():
                seen.update(orjson.loads(record.value)["example_id"] for record in part)
            return stored <= seen

        await eventually(all_on_the_topic, timeout=30)
    finally:
        await reader.stop()
        await pool.close()
