"""Faults during a stream of events over HTTP: nothing that got a 2xx is lost or counted twice.

A private PostgreSQL and a durable broker (Tansu on SeaweedFS), so both can be stopped; ingest
and the four consumers as real processes. Clients send `FEEDBACKLOOP_FAULTS_EVENTS` events
(20,000 by default: responses and thumbs on them) in batches with known event ids, retrying on
5xx, 429 and connection errors with the same ids, like `feedbackloop.client`. Meanwhile, in turn:
- SIGKILL of each consumer in the middle of its work, then a restart;
- PostgreSQL stopped for several seconds, then started again;
- the broker stopped for several seconds during ingestion, then started again;
- poison written straight to the input topics (undecodable bytes, an unknown type, an unknown
  schema version, a semantically invalid event).
Then: every consumer group's lag returns to 0; for profiles, trainer and metrics, the ids
materialized plus the ids dead-lettered equal the ids that got a 2xx plus the poison; no id is
both; the rollups (minute, hour, day) equal a recomputation from the events sent. Not covered
here: a slow PostgreSQL (statement delays) and the longer schemathesis run.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from feedbackloop.contract import Topic, TopicNames
from feedbackloop.embedded import EmbeddedPostgres, SeaweedS3, TansuBroker, free_port
from feedbackloop.http.auth import ALL_SCOPES
from services.cli.admin import create_key
from services.learner.handlers import SPEC as LEARNER
from services.metrics.handlers import SPEC as METRICS
from services.profiles.handlers import SPEC as PROFILES
from services.trainer.handlers import SPEC as TRAINER
from tests.e2e.conftest import service_env
from tests.e2e.test_broker_restart import _free_port_block
from tests.infra import ServiceProcesses, create_database, create_topics, group_lag, unique_prefix

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1800)]

EVENTS = int(os.environ.get("FEEDBACKLOOP_FAULTS_EVENTS", "20000"))
# The stream is paced over this long, so that every fault lands while clients are sending.
SEND_SECONDS = float(os.environ.get("FEEDBACKLOOP_FAULTS_SECONDS", "120"))
BATCH = 100
SENDERS = 4
CONSUMERS = (PROFILES, LEARNER, TRAINER, METRICS)
OUTAGE_SECONDS = 5.0


@dataclass
class System:
    postgres: EmbeddedPostgres
    broker: TansuBroker
    services: ServiceProcesses
    names: TopicNames
    database_url: str
    key: str


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    workdir: Path = tmp_path_factory.mktemp("faults")
    postgres = EmbeddedPostgres(workdir / "pg", free_port(), fast=True)
    postgres.start()
    store = SeaweedS3(workdir / "seaweedfs", s3_port=free_port(), port_base=_free_port_block(),
                      bucket="tansu")
    store.start()
    broker = TansuBroker(workdir / "tansu.log", free_port(), s3_endpoint=store.endpoint)
    broker.start()
    prefix = unique_prefix()
    database_url = asyncio.run(create_database(postgres.url))
    names = asyncio.run(create_topics(broker.bootstrap_servers, prefix))
    _, key = asyncio.run(
        create_key(database_url, tenant_id="acme", name="faults", scopes=list(ALL_SCOPES))
    )
    env = service_env(broker.bootstrap_servers, database_url, prefix) | {
        "FEEDBACKLOOP_RATE_LIMIT_REQUESTS_PER_SECOND": "0",
        "FEEDBACKLOOP_CONSUMER_RETRY_MAX_SECONDS": "1",
    }
    services = ServiceProcesses(env, workdir)
    try:
        services.start(("ingest", *(spec.name for spec in CONSUMERS)))
        yield System(postgres, broker, services, names, database_url, key)
    finally:
        services.stop()
        broker.stop()
        store.stop()
        postgres.stop()


# --- the stream -----------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the clients know: every event sent, and which ids got a 2xx."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)
    retries: Counter[str] = field(default_factory=Counter)
    sent_batches: int = 0


def _stream(count: int) -> list[dict[str, Any]]:
    """Pairs of a response and a thumb on it; thumbs up or down by a fixed seed."""
    rng = random.Random(6)
    start = datetime.now(UTC) - timedelta(minutes=30)
    events = []
    for n in range(count // 2):
        response_id = f"f-{n}"
        at = (start + timedelta(seconds=n * 1800 / (count // 2))).isoformat()
        events.append({"type": "response.logged", "event_id": str(uuid.uuid4()),
                       "response_id": response_id, "user_id": f"user-{n % 97}",
                       "prompt": [{"role": "user", "content": f"question {n}"}],
                       "output": f"answer {n}", "model": f"model-{n % 3}",
                       "action_type": f"action-{n % 5}", "occurred_at": at})
        events.append({"type": "feedback.submitted", "event_id": str(uuid.uuid4()),
                       "response_id": response_id, "user_id": f"user-{n % 97}",
                       "thumb": "up" if rng.random() < 0.7 else "down", "occurred_at": at})
    return events


async def _send(client: httpx.AsyncClient, batch: list[dict[str, Any]], ledger: Ledger) -> None:
    """Until the batch is accepted: retry on 5xx, 429 and connection errors, same ids."""
    while True:
        try:
            answer = await client.post("/v1/events", json={"events": batch})
        except httpx.HTTPError:
            ledger.retries["connection"] += 1
            await asyncio.sleep(0.5)
            continue
        if answer.status_code == 202:
            body = answer.json()
            assert body["invalid"] == 0, body
            ledger.accepted.update(r["event_id"] for r in body["results"])
            ledger.sent_batches += 1
            return
        assert answer.status_code in (429, 500, 502, 503), answer.text
        ledger.retries[str(answer.status_code)] += 1
        await asyncio.sleep(float(answer.headers.get("retry-after", "0.5")))


async def _ingest(system: System, events: list[dict[str, Any]], ledger: Ledger) -> None:
    batches = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
    queue: asyncio.Queue[tuple[int, list[dict[str, Any]]]] = asyncio.Queue()
    for index, batch in enumerate(batches):
        queue.put_nowait((index, batch))
    started = time.monotonic()
    interval = SEND_SECONDS / len(batches)

    async def sender() -> None:
        async with httpx.AsyncClient(
            base_url=system.services.url("ingest"), timeout=30,
            headers={"Authorization": f"Bearer {system.key}"},
        ) as client:
            while not queue.empty():
                index, batch = queue.get_nowait()
                await asyncio.sleep(max(0.0, started + index * interval - time.monotonic()))
                await _send(client, batch, ledger)

    await asyncio.gather(*(sender() for _ in range(SENDERS)))


# --- the faults -----------------------------------------------------------------------------


async def _kill_and_restart(system: System, name: str, log: list[str]) -> None:
    process = system.services.processes[name]
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    log.append(f"SIGKILL {name} (exit {process.returncode})")
    await asyncio.sleep(1.0)
    await asyncio.to_thread(system.services.start, (name,))
    log.append(f"restarted {name}")


async def _stop_postgres(system: System, log: list[str]) -> None:
    await asyncio.to_thread(system.postgres.stop)
    log.append(f"PostgreSQL stopped for {OUTAGE_SECONDS:.0f} s")
    await asyncio.sleep(OUTAGE_SECONDS)
    await asyncio.to_thread(system.postgres.start)
    log.append("PostgreSQL started")


async def _stop_broker(system: System, log: list[str]) -> None:
    await asyncio.to_thread(system.broker.stop)
    log.append(f"broker stopped for {OUTAGE_SECONDS:.0f} s")
    await asyncio.sleep(OUTAGE_SECONDS)
    await asyncio.to_thread(system.broker.start)
    log.append("broker started")


def _poison() -> dict[Topic, list[tuple[str | None, bytes]]]:
    """(event id if it has one, bytes) per input topic."""
    def doc(**fields: Any) -> tuple[str, bytes]:
        event_id = str(uuid.uuid4())
        base = {"event_id": event_id, "tenant_id": "acme", "schema_version": 1,
                "occurred_at": "2026-11-20T10:00:00Z", "received_at": "2026-11-20T10:00:01Z",
                "user_id": "a" * 64}
        return event_id, orjson.dumps(base | fields)

    return {
        Topic.FEEDBACK: [
            (None, b"\xff\xfe not json"),
            doc(type="feedback.exploded", payload={}),
            doc(type="feedback.submitted", schema_version=99, payload={"response_id": "r"}),
            doc(type="feedback.submitted", payload={"response_id": "r", "rating": 11}),
        ],
        Topic.RESPONSES: [
            (None, b"{"),
            doc(type="response.logged", payload={"response_id": "r"}),
        ],
    }


async def _write_poison(system: System, log: list[str]) -> dict[Topic, list[str | None]]:
    producer = AIOKafkaProducer(bootstrap_servers=system.broker.bootstrap_servers, acks="all")
    await producer.start()
    written: dict[Topic, list[str | None]] = {}
    try:
        for topic, messages in _poison().items():
            for event_id, value in messages:
                await producer.send_and_wait(system.names.physical(topic), value, key=b"poison")
                written.setdefault(topic, []).append(event_id)
    finally:
        await producer.stop()
    log.append(f"poison written: {sum(len(v) for v in written.values())} messages")
    return written


# --- the checks -----------------------------------------------------------------------------


async def _lag(system: System) -> dict[str, int]:
    lags = {}
    for spec in CONSUMERS:
        topics = [system.names.physical(topic) for topic in spec.topics]
        group = f"{system.names.prefix}.{spec.name}"
        lags[spec.name] = await group_lag(system.broker.bootstrap_servers, group, topics)
    return lags


async def _dead_letters(system: System, topic: Topic) -> list[tuple[str, str | None, bytes]]:
    """(service, event id if decodable, value) of every dead letter of `topic`."""
    consumer = AIOKafkaConsumer(
        system.names.dead_letter(topic),
        bootstrap_servers=system.broker.bootstrap_servers, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=2_000)
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers}
                    try:
                        event_id = orjson.loads(record.value).get("event_id")
                    except (orjson.JSONDecodeError, AttributeError):
                        event_id = None
                    found.append((headers.get("fbl-service", "?"), event_id, record.value))
    finally:
        await consumer.stop()
    return found


async def test_nothing_accepted_is_lost_or_counted_twice_through_the_faults(
    system: System,
) -> None:
    events = _stream(EVENTS)
    ledger = Ledger(events={e["event_id"]: e for e in events})
    log: list[str] = []
    started = time.monotonic()
    sending = asyncio.create_task(_ingest(system, events, ledger))

    async def when_accepted(fraction: float) -> None:
        # Polling a counter the senders update: simpler than signalling from every batch.
        while len(ledger.accepted) < fraction * len(events) and not sending.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        # Each fault must hit a system under load, not one that has finished its work.
        assert not sending.done(), f"the stream ended before a fault ({log}): raise SEND_SECONDS"
        log.append(f"at {len(ledger.accepted)} accepted, {time.monotonic() - started:.1f} s:")

    for fraction, spec in zip((0.1, 0.2, 0.3, 0.4), CONSUMERS, strict=True):
        await when_accepted(fraction)
        await _kill_and_restart(system, spec.name, log)
    await when_accepted(0.5)
    await _stop_postgres(system, log)
    await when_accepted(0.65)
    await _stop_broker(system, log)
    await when_accepted(0.8)
    poison = await _write_poison(system, log)
    await asyncio.wait_for(sending, timeout=900)
    sent_seconds = time.monotonic() - started

    deadline = time.monotonic() + 300
    lags = await _lag(system)
    while any(lag > 0 for lag in lags.values()) and time.monotonic() < deadline:
        await asyncio.sleep(1)
        lags = await _lag(system)
    drained_seconds = time.monotonic() - started - sent_seconds

    connection = await asyncpg.connect(system.database_url)
    try:
        report = [f"events sent: {len(events)}; accepted (2xx): {len(ledger.accepted)}; "
                  f"batches: {ledger.sent_batches}; retries: {dict(ledger.retries)}",
                  *log,
                  f"ingested in {sent_seconds:.1f} s, drained {drained_seconds:.1f} s later; "
                  f"lag {lags}"]
        assert ledger.accepted == set(ledger.events), "an event never got a 2xx"
        # <= 0: see tests/e2e/test_tenant_isolation.py on the embedded broker's end offsets.
        assert all(lag <= 0 for lag in lags.values()), report

        dead = {topic: await _dead_letters(system, topic) for topic in poison}
        for spec in (PROFILES, TRAINER, METRICS):
            processed = [str(row["event_id"]) for row in await connection.fetch(
                f"SELECT event_id FROM {spec.name}.processed_events WHERE tenant_id = 'acme'")]
            dead_here = [(event_id, value) for topic in poison for service, event_id, value
                         in dead[topic] if service == spec.name]
            dead_ids = {event_id for event_id, _ in dead_here if event_id}
            poison_ids = {i for topic in poison for i in poison[topic] if i}
            undecodable = sum(1 for topic in poison for i in poison[topic] if i is None)
            report.append(
                f"{spec.name}: materialized {len(processed)}, dead-lettered {len(dead_here)} "
                f"({len(dead_ids)} with ids, {len(dead_here) - len(dead_ids)} undecodable)")
            assert len(processed) == len(set(processed)), f"{spec.name}: an id twice"
            assert set(processed) | dead_ids == ledger.accepted | poison_ids, report
            assert not set(processed) & dead_ids, report
            assert len(dead_here) - len(dead_ids) == undecodable, report

        thumbs = [e for e in events if e["type"] == "feedback.submitted"]
        expected = Counter(e["thumb"] for e in thumbs)
        for table in ("feedback_minute", "feedback_hour", "feedback_day"):
            row = await connection.fetchrow(
                f"SELECT sum(thumbs_up) AS up, sum(thumbs_down) AS down FROM metrics.{table} "
                "WHERE tenant_id = 'acme'")
            report.append(f"metrics.{table}: up {row['up']}, down {row['down']} "
                          f"(recomputed: up {expected['up']}, down {expected['down']})")
            assert (row["up"], row["down"]) == (expected["up"], expected["down"]), report
        per_group = await connection.fetch(
            "SELECT action_type, model, sum(thumbs_up) AS up, sum(thumbs_down) AS down "
            "FROM metrics.feedback_minute WHERE tenant_id = 'acme' GROUP BY 1, 2")
        responses = {e["response_id"]: e for e in events if e["type"] == "response.logged"}
        recomputed: Counter[tuple[str, str, str]] = Counter(
            (responses[t["response_id"]]["action_type"], responses[t["response_id"]]["model"],
             t["thumb"]) for t in thumbs)
        counted: Counter[tuple[str, str, str]] = Counter()
        for r in per_group:
            counted[(r["action_type"], r["model"], "up")] += r["up"]
            counted[(r["action_type"], r["model"], "down")] += r["down"]
        assert +counted == recomputed, "rollups per action type and model differ"
        report.append(f"rollups per action type and model: {len(recomputed)} cells equal")
        profile_rows = await connection.fetchval(
            "SELECT count(*) FROM profiles.feedback WHERE tenant_id = 'acme'")
        report.append(f"profiles.feedback rows: {profile_rows} (thumbs sent: {len(thumbs)})")
        assert profile_rows == len(thumbs), report
    finally:
        await connection.close()
    print("\n".join(["", "fault suite figures:", *report]))
