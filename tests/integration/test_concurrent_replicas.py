"""Two replicas of one consumer write a subject and a signal about it at the same moment, from
different topics: the join must still be made (per-subject locks in the pipeline). And two
events of one person's signal written at the same moment leave exactly one of them current."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from feedbackloop.contract import load_samples
from feedbackloop.observability import ConsumerMetrics
from feedbackloop.pipeline.consumer import BatchPipeline, ConsumerSpec
from feedbackloop.postgres import create_pool
from services.metrics.handlers import SPEC as METRICS
from services.profiles.handlers import SPEC as PROFILES
from services.trainer.handlers import SPEC as TRAINER
from tests.infra import CollectedDeadLetters, create_database, records_of

pytestmark = pytest.mark.integration


def _slow(spec: ConsumerSpec[Any], seconds: float) -> ConsumerSpec[Any]:
    """The same consumer, holding its transaction open a while after writing: the window in
    which another replica's transaction cannot see these rows."""

    async def write(connection: Any, effects: Sequence[Any]) -> None:
        await spec.write(connection, effects)
        await asyncio.sleep(seconds)

    return dataclasses.replace(spec, write=write)


async def _race(database: str, spec: ConsumerSpec[Any], first: dict, second: dict) -> Any:
    pool = await create_pool(database, min_size=2, max_size=4)
    slow = BatchPipeline(_slow(spec, 0.8), pool, CollectedDeadLetters(),
                         ConsumerMetrics(CollectorRegistry(), "a"))
    quick = BatchPipeline(spec, pool, CollectedDeadLetters(),
                          ConsumerMetrics(CollectorRegistry(), "b"))

    async def later() -> Any:
        await asyncio.sleep(0.2)
        return await quick.process_batch(records_of([orjson.dumps(second)]))

    await asyncio.gather(slow.process_batch(records_of([orjson.dumps(first)])), later())
    return pool


async def test_feedback_next_to_its_response_is_counted_under_the_response(
    postgres_url: str,
) -> None:
    database = await create_database(postgres_url)
    response = load_samples()["response.logged"][0]
    vote = load_samples()["feedback.submitted"][0] | {"event_id": str(uuid.uuid4())}
    pool = await _race(database, METRICS, response, vote)
    facts = await pool.fetch("SELECT action_type, model, resolved FROM metrics.feedback_facts")
    assert [tuple(row) for row in facts] == [("todo", "gpt-4o-mini", True)]
    await pool.close()


async def test_training_examples_are_built_when_response_and_feedback_race(
    postgres_url: str,
) -> None:
    database = await create_database(postgres_url)
    vote = load_samples()["feedback.submitted"][0] | {"event_id": str(uuid.uuid4())}
    response = load_samples()["response.logged"][0]
    pool = await _race(database, TRAINER, vote, response)
    kinds = await pool.fetch("SELECT kind FROM trainer.examples ORDER BY kind")
    assert kinds, "no example was built from the feedback and its response"
    await pool.close()


@pytest.mark.parametrize("later_first", [True, False], ids=["later-first", "older-first"])
async def test_a_vote_and_its_flip_written_at_once_leave_one_current_signal(
    postgres_url: str, later_first: bool
) -> None:
    database = await create_database(postgres_url)
    vote = load_samples()["feedback.submitted"][0] | {"event_id": str(uuid.uuid4())}
    flip = vote | {"event_id": str(uuid.uuid4()), "occurred_at": "2026-11-20T10:01:00Z",
                   "payload": vote["payload"] | {"thumb": "down"}}
    first, second = (flip, vote) if later_first else (vote, flip)
    for spec in (PROFILES, METRICS, TRAINER):
        pool = await _race(database, spec, first, second)
        await pool.close()
    pool = await create_pool(database, min_size=1, max_size=2)
    try:
        current = await pool.fetch("SELECT thumb FROM profiles.feedback WHERE current")
        assert [row["thumb"] for row in current] == ["down"]
        votes = await pool.fetchrow("SELECT sum(thumbs_up) AS up, sum(thumbs_down) AS down "
                                    "FROM metrics.feedback_minute")
        assert (votes["up"], votes["down"]) == (0, 1)
        feedback = await pool.fetch("SELECT thumb FROM trainer.feedback WHERE current")
        assert [row["thumb"] for row in feedback] == ["down"]
    finally:
        await pool.close()
