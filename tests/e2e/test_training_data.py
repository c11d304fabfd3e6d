"""Training data end to end: responses and feedback in over HTTP, through ingest, Kafka and
the trainer service (real processes), PII redacted and opted-out users left out; the training
tasks publish the examples on the training-examples topic, read back by a plain Kafka
consumer; `feedbackloop export` writes a file that passes OpenAI's rules."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from feedbackloop.contract import Topic, TopicNames
from feedbackloop.http.auth import ALL_SCOPES
from feedbackloop.observability import JobMetrics
from feedbackloop.pipeline.jobs import JobRunner
from feedbackloop.postgres import create_pool
from feedbackloop.settings import Settings
from services.cli.admin import create_key
from services.cli.export import add_export_parser, run_export
from services.trainer.examples.build import stable_split
from services.trainer.exports.formats import validate_lines
from services.trainer.main import training_jobs
from tests.e2e.conftest import HMAC_SECRET, service_env
from tests.infra import (
    ServiceProcesses,
    create_database,
    create_topics,
    eventually,
    idempotence_supported,
    unique_prefix,
)

pytestmark = pytest.mark.e2e
FIXES = [
    "Added oat milk to your groceries list, as you always buy that one.",
    "Moved the dentist to Thursday at 4 pm and told the clinic by email.",
    "Booked a table for four at Luigi's at 8 pm; they will hold it for 15 minutes.",
    "Your refund of 42 euros left today and reaches your card within five days.",
    "I renamed the project board to Q3 Launch and archived the old sprint columns.",
    "Sent the invoice to the accounting team and set a reminder for the due date.",
    "The flight to Lisbon is rebooked for Friday morning with the same seat.",
    "Cancelled the gym membership from next month; no fee applies this time.",
    "Shared the holiday photos album with your sister, view only.",
    "The package goes back free of charge: print the label I emailed you.",
    "Muted the team channel until Monday 9 am, mentions still come through.",
]


@pytest.fixture(scope="module")
def stack(
    postgres_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcesses, TopicNames, str, str]]:
    prefix = unique_prefix()
    database_url = asyncio.run(create_database(postgres_url))
    names = asyncio.run(create_topics(kafka_bootstrap, prefix))
    _, key = asyncio.run(create_key(database_url, tenant_id="acme", name="e2e",
                                    scopes=list(ALL_SCOPES)))
    services = ServiceProcesses(service_env(kafka_bootstrap, database_url, prefix),
                                tmp_path_factory.mktemp("training"))
    try:
        services.start(("ingest", "trainer"))
        yield services, names, database_url, key
    finally:
        services.stop()


@pytest.fixture
async def ingest(stack: Any) -> AsyncIterator[httpx.AsyncClient]:
    services, _, _, key = stack
    async with httpx.AsyncClient(base_url=services.url("ingest"), timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        yield client


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    answer = await client.post(path, json=body)
    assert answer.status_code == 202, answer.text


async def test_feedback_in_over_http_examples_out_on_the_topic_and_in_a_valid_export(
    stack: Any, ingest: httpx.AsyncClient, kafka_bootstrap: str, tmp_path: Path
) -> None:
    _, names, database_url, _ = stack
    run = uuid.uuid4().hex[:6]
    for n, fix in enumerate(FIXES):
        response_id = f"{run}-r{n}"
        await _post(ingest, "/v1/responses", {
            "response_id": response_id, "user_id": f"user-{n}", "session_id": f"{run}-chat-{n}",
            "prompt": [{"role": "user", "content": f"Task {n}: please handle it, I am at "
                                                   f"user{n}@example.com"}],
            "output": "Done.", "model": "gpt-4o-mini", "action_type": "assistant",
        })
        await _post(ingest, "/v1/feedback", {"response_id": response_id, "user_id": f"agent-{n}",
                                             "correction": {"text": fix}})
    await _post(ingest, "/v1/responses", {
        "response_id": f"{run}-bob", "user_id": "bob", "prompt": [{"role": "user", "content": "Hi"}],
        "output": "Hello!", "model": "gpt-4o-mini", "action_type": "assistant",
    })
    await _post(ingest, "/v1/feedback", {"response_id": f"{run}-bob", "user_id": "bob",
                                         "thumb": "up"})
    await _post(ingest, "/v1/users/bob/consent", {"training_allowed": False})

    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        async def stored() -> list[Any] | None:
            rows = await pool.fetch(
                "SELECT kind, response_id FROM trainer.examples WHERE duplicate_of IS NULL"
            )
            done = await pool.fetchval(
                "SELECT count(*) FROM trainer.consent WHERE NOT training_allowed"
            )
            return rows if len(rows) == 2 * len(FIXES) and done == 1 else None

        rows = await eventually(stored, timeout=60)
        assert {row["kind"] for row in rows} == {"preference", "sft"}
        assert f"{run}-bob" not in {row["response_id"] for row in rows}

        settings = Settings(
            kafka_bootstrap_servers=kafka_bootstrap, database_url=database_url,
            kafka_topic_prefix=names.prefix, user_id_hmac_secret=HMAC_SECRET,
            kafka_enable_idempotence=idempotence_supported(kafka_bootstrap),
            training_relay_interval_seconds=0.1,
        )
        tasks = JobRunner(training_jobs(pool, settings), JobMetrics(CollectorRegistry()))
        tasks.start()
        consumer = AIOKafkaConsumer(
            names.physical(Topic.TRAINING_EXAMPLES), bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest", group_id=f"ml-{run}",
        )
        await consumer.start()
        documents: dict[tuple[str, int], dict[str, Any]] = {}
        try:
            async def published() -> bool:
                for part in (await consumer.getmany(timeout_ms=300)).values():
                    for record in part:
                        document = orjson.loads(record.value)
                        assert record.key == f"acme:{document['conversation_id']}".encode()
                        documents[(document["example_id"], document["revision"])] = document
                return len(documents) >= 2 * len(FIXES)

            await eventually(published, timeout=30)
        finally:
            await consumer.stop()
            await tasks.stop()
    finally:
        await pool.close()

    pairs = [d for d in documents.values() if d["kind"] == "preference"]
    assert sorted(pair["chosen"] for pair in pairs) == sorted(FIXES)
    assert all(pair["rejected"] == "Done." for pair in pairs)
    prompts = [pair["prompt"][0]["content"] for pair in pairs]
    assert all(prompt.endswith("I am at [EMAIL]") for prompt in prompts)
    assert all(pair["provenance"]["redactions"] == {"EMAIL": 1} for pair in pairs)

    out = tmp_path / "pairs.jsonl"
    parser = add_export_parser(argparse.ArgumentParser().add_subparsers())
    arguments = parser.parse_args(["--tenant", "acme", "--format", "openai-preference",
                                   "--out", str(out)])
    assert await asyncio.to_thread(run_export, arguments, Settings(database_url=database_url)) == 0
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(lines) == len(FIXES) and validate_lines(lines, "openai-preference").valid
    train = sum(stable_split("acme", f"{run}-chat-{n}", 0.1) == "train" for n in range(len(FIXES)))
    arguments = parser.parse_args(["--tenant", "acme", "--format", "trl-sft", "--split", "train",
                                   "--out", str(out)])
    assert await asyncio.to_thread(run_export, arguments, Settings(database_url=database_url)) == 0
    assert len(out.read_bytes().splitlines()) == train
