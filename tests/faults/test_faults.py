"""Faults during a stream of events over HTTP: nothing that got a 2xx is lost or counted twice.

A private PostgreSQL and a durable broker (Tansu on SeaweedFS), so both can be stopped; ingest
and the four consumers as real processes. Clients send `FEEDBACKLOOP_FAULTS_EVENTS` events
(20,000 by default: responses and thumbs on them) in batches with known event ids, retrying on
5xx, 429 and connection errors with the same ids, like `feedbackloop.client`. Meanwhile, in turn:
- SIGKILL of each consumer in the middle of its work, then a restart;
- PostgreSQL stopped for several seconds, then started again;
- the broker stopped for several seconds during ingestion, then started again;
- PostgreSQL made slow for several seconds: every event id a consumer claims costs 50 ms, so
  the consumers fall behind the stream; lag must grow in the broker while ingest keeps accepting
  and each consumer's memory stays bounded (backpressure), then drain once the delay is gone;
- poison written straight to the input topics (undecodable bytes, an unknown type, an unknown
  schema version, a semantically invalid event).
Then: every consumer group's lag returns to exactly 0; for profiles, trainer and metrics, the
ids materialized plus the ids dead-lettered equal the ids that got a 2xx plus the poison; no id
is both; the rollups (minute, hour, day), the profiles' current verdicts and the KTO labels
equal a recount of the current signals (flips, retractions and late older votes are in the
stream), each vote in the minute of its winning event. The longer
schemathesis run is the other half of `make test-faults`.
"""

from __future__ import annotations

import asyncio
import contextlib
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
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from feedbackloop.contract import Topic, TopicNames
from feedbackloop.embedded import (
    EmbeddedPostgres,
    SeaweedS3,
    TansuBroker,
    free_port,
    free_seaweed_ports,
)
from feedbackloop.http.auth import ALL_SCOPES
from services.cli.admin import create_key
from services.learner.handlers import SPEC as LEARNER
from services.metrics.handlers import SPEC as METRICS
from services.profiles.handlers import SPEC as PROFILES
from services.trainer.handlers import SPEC as TRAINER
from tests.e2e.conftest import service_env
from tests.infra import (
    ServiceProcesses,
    create_database,
    create_topics,
    partition_lags,
    unique_prefix,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1800)]

EVENTS = int(os.environ.get("FEEDBACKLOOP_FAULTS_EVENTS", "20000"))
# The stream is paced over this long, so that every fault lands while clients are sending.
SEND_SECONDS = float(os.environ.get("FEEDBACKLOOP_FAULTS_SECONDS", "120"))
BATCH = 100
SENDERS = 4
CONSUMERS = (PROFILES, LEARNER, TRAINER, METRICS)
# The consumers of the stream's topics (responses and feedback); the learner reads neither.
STREAM_CONSUMERS = (PROFILES, TRAINER, METRICS)
OUTAGE_SECONDS = 5.0
SLOW_SECONDS = 8.0
# Per event id claimed: a consumer then writes at most 20 events/s, below the stream's pace,
# where a fixed delay per statement would be absorbed by larger batches (up to 500 records).
SLOW_SECONDS_PER_ROW = 0.05
RSS_LIMIT = 400 * 2**20


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
    s3_port, port_base = free_seaweed_ports()
    store = SeaweedS3(workdir / "seaweedfs", s3_port=s3_port, port_base=port_base, bucket="tansu")
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
    """Pairs of a response and a thumb on it; thumbs up or down by a fixed seed. People change
    their minds: on every tenth response the user flips the thumb 20 s later, on another tenth
    they take it back, and on one in twenty the flip is sent before the vote it replaces (an
    offline queue flushing late), so the older vote arrives after the newer one."""
    rng = random.Random(6)
    start = datetime.now(UTC) - timedelta(minutes=31)
    events = []
    for n in range(count // 2):
        response_id = f"f-{n}"
        moment = start + timedelta(seconds=n * 1800 / (count // 2))
        at, later = moment.isoformat(), (moment + timedelta(seconds=20)).isoformat()
        person = {"response_id": response_id, "user_id": f"user-{n % 97}"}
        events.append({"type": "response.logged", "event_id": str(uuid.uuid4()), **person,
                       "prompt": [{"role": "user", "content": f"question {n}"}],
                       "output": f"answer {n}", "model": f"model-{n % 3}",
                       "action_type": f"action-{n % 5}", "occurred_at": at})
        thumb = "up" if rng.random() < 0.7 else "down"
        vote = {"type": "feedback.submitted", "event_id": str(uuid.uuid4()), **person,
                "thumb": thumb, "occurred_at": at}
        flip = vote | {"event_id": str(uuid.uuid4()), "thumb": "down" if thumb == "up" else "up",
                       "occurred_at": later}
        retraction = {"type": "feedback.retracted", "event_id": str(uuid.uuid4()), **person,
                      "kind": "thumb", "occurred_at": later}
        if n % 20 == 13:
            events += [flip, vote]
        elif n % 10 == 3:
            events += [vote, flip]
        elif n % 10 == 7:
            events += [vote, retraction]
        else:
            events.append(vote)
    return events


def current_thumbs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The thumbs that count: per (response, user) the latest by (occurred_at, event_id),
    unless that is a retraction."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        if event["type"] not in ("feedback.submitted", "feedback.retracted"):
            continue
        identity = (event["response_id"], event["user_id"])
        order = (datetime.fromisoformat(event["occurred_at"]), uuid.UUID(event["event_id"]))
        held = latest.get(identity)
        if held is None or order > (datetime.fromisoformat(held["occurred_at"]),
                                    uuid.UUID(held["event_id"])):
            latest[identity] = event
    return [e for e in latest.values() if e["type"] == "feedback.submitted"]


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


async def _kill(system: System, name: str, log: list[str]) -> asyncio.Task[None]:
    """SIGKILL `name`; returns its restart, which runs on while the stream and other faults go
    on (the group waits out the dead member's session before the new one gets partitions)."""
    process = system.services.processes[name]
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    log.append(f"SIGKILL {name} (exit {process.returncode})")
    return asyncio.create_task(_restart(system, name, log))


async def _restart(system: System, name: str, log: list[str]) -> None:
    await asyncio.sleep(1.0)
    started = time.monotonic()
    await asyncio.to_thread(system.services.start, (name,))
    log.append(f"restarted {name}: ready {time.monotonic() - started:.1f} s later")


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


@dataclass
class SlowPhase:
    """What was seen while PostgreSQL was slow: the figures that show the fault bit and
    backpressure held (lag grew in the broker, ingest kept accepting, memory stayed flat)."""

    seconds: float = 0.0
    lag_before: dict[str, int] = field(default_factory=dict)
    lag_samples: dict[str, list[int]] = field(default_factory=dict)
    lag_after: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    retries: int = 0
    sleeping_peak: int = 0
    rss_peak: dict[str, int] = field(default_factory=dict)
    still_sending: bool = False


# In the test's own database: a BEFORE INSERT row trigger on the table every batch's claim
# statement writes to, sleeping the delay read from a one-row table. Installed before the stream
# with no delay: CREATE and DROP TRIGGER wait for the batch under way on the table to commit,
# and a trainer batch can take many seconds. A volatile PL/pgSQL function reads the delay with
# a fresh snapshot per row, so changing it takes effect at once, also in statements under way.
SLOW_WRITES = """
CREATE SCHEMA faults;
CREATE TABLE faults.write_delay (seconds_per_row double precision NOT NULL);
INSERT INTO faults.write_delay VALUES (0);
CREATE FUNCTION faults.slow_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(seconds_per_row) FROM faults.write_delay WHERE seconds_per_row > 0;
    RETURN NEW;
END
$$;
"""


async def _install_slow_writes(system: System) -> None:
    connection = await asyncpg.connect(system.database_url)
    try:
        await connection.execute(SLOW_WRITES)
        for spec in CONSUMERS:
            await connection.execute(
                f"CREATE TRIGGER faults_slow_write BEFORE INSERT ON {spec.schema}.processed_events "
                "FOR EACH ROW EXECUTE FUNCTION faults.slow_write()")
    finally:
        await connection.close()


async def _remove_slow_writes(system: System) -> None:
    """Once the consumers are idle. Triggers first: dropping the schema first would lock the
    delay table, then wait for a batch that needs it."""
    connection = await asyncpg.connect(system.database_url)
    try:
        for spec in CONSUMERS:
            await connection.execute(
                f"DROP TRIGGER faults_slow_write ON {spec.schema}.processed_events")
        await connection.execute("DROP SCHEMA faults CASCADE")
    finally:
        await connection.close()


async def _slow_postgres(
    system: System, ledger: Ledger, sending: asyncio.Task[None], log: list[str]
) -> SlowPhase:
    """Every claim slowed for SLOW_SECONDS, sampling lag, sleeping sessions and memory."""
    phase = SlowPhase()
    connection = await asyncpg.connect(system.database_url)
    try:
        phase.lag_before = _totals(await _lag(system))
        accepted, retries = len(ledger.accepted), ledger.retries.total()
        await connection.execute(
            "UPDATE faults.write_delay SET seconds_per_row = $1", SLOW_SECONDS_PER_ROW)
        started = time.monotonic()
        log.append(f"PostgreSQL slow for {SLOW_SECONDS:.0f} s "
                   f"({SLOW_SECONDS_PER_ROW * 1000:.0f} ms per event id claimed)")
        while time.monotonic() - started < SLOW_SECONDS:
            for name, lag in _totals(await _lag(system)).items():
                phase.lag_samples.setdefault(name, []).append(lag)
            sleeping = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                "AND datname = current_database() AND pid <> pg_backend_pid()")
            phase.sleeping_peak = max(phase.sleeping_peak, sleeping)
            for name, rss in _rss(system).items():
                phase.rss_peak[name] = max(phase.rss_peak.get(name, 0), rss)
            await asyncio.sleep(0.5)
        phase.lag_after = _totals(await _lag(system))
        await connection.execute("UPDATE faults.write_delay SET seconds_per_row = 0")
        phase.seconds = time.monotonic() - started
        phase.accepted = len(ledger.accepted) - accepted
        phase.retries = ledger.retries.total() - retries
        phase.still_sending = not sending.done()
        log.append("PostgreSQL fast again")
    finally:
        await connection.close()
    return phase


def _rss(system: System) -> dict[str, int]:
    """Resident memory of each consumer process now (one just killed is left out)."""
    found = {}
    for spec in CONSUMERS:
        process = system.services.processes.get(spec.name)
        if process is not None:
            with contextlib.suppress(psutil.Error):
                found[spec.name] = psutil.Process(process.pid).memory_info().rss
    return found


async def _watch_rss(system: System, peaks: dict[str, int]) -> None:
    """Keep the peak resident memory of each consumer over the whole run, until cancelled."""
    while True:
        for name, rss in _rss(system).items():
            peaks[name] = max(peaks.get(name, 0), rss)
        await asyncio.sleep(0.25)


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


async def _lag(system: System) -> dict[str, dict[TopicPartition, int]]:
    """Per consumer and partition: records after the consumer group's committed offset."""
    lags = await partition_lags(system.broker.bootstrap_servers, {
        f"{system.names.prefix}.{spec.name}": [system.names.physical(t) for t in spec.topics]
        for spec in CONSUMERS
    })
    return {spec.name: lags[f"{system.names.prefix}.{spec.name}"] for spec in CONSUMERS}


def _totals(lags: dict[str, dict[TopicPartition, int]]) -> dict[str, int]:
    return {name: sum(by_partition.values()) for name, by_partition in lags.items()}


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


def _mib(sizes: dict[str, int]) -> str:
    return ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in sizes.items())


def _slow_report(slow: SlowPhase) -> list[str]:
    paced = EVENTS / SEND_SECONDS
    return [
        f"slow PostgreSQL, {slow.seconds:.1f} s: up to {slow.sleeping_peak} consumer sessions "
        "at once in pg_sleep",
        *(f"slow PostgreSQL: {name} lag {slow.lag_before[name]} -> {slow.lag_after[name]} "
          f"(every ~0.5 s: {slow.lag_samples[name]})"
          for name in (spec.name for spec in STREAM_CONSUMERS)),
        f"slow PostgreSQL: ingest accepted {slow.accepted} events meanwhile "
        f"({slow.accepted / slow.seconds:.0f}/s; the clients' pace is {paced:.0f}/s), "
        f"{slow.retries} retries; peak consumer RSS {_mib(slow.rss_peak)}",
    ]


def _check_slow(slow: SlowPhase) -> None:
    """The delay bit (consumers slept in PostgreSQL, lag grew in the broker) while ingest kept
    accepting: slow consumers hold the stream back in Kafka, not in ingest or in memory."""
    assert slow.still_sending, "the stream ended during the slow phase: raise SEND_SECONDS"
    assert slow.sleeping_peak > 0, "no consumer session was seen in pg_sleep"
    for spec in STREAM_CONSUMERS:
        assert slow.lag_after[spec.name] >= slow.lag_before[spec.name] + 100, (
            f"{spec.name}: lag did not grow while PostgreSQL was slow")
    assert slow.accepted > 0, "ingest stopped accepting while PostgreSQL was slow"


async def test_nothing_accepted_is_lost_or_counted_twice_through_the_faults(
    system: System,
) -> None:
    events = _stream(EVENTS)
    ledger = Ledger(events={e["event_id"]: e for e in events})
    await _install_slow_writes(system)
    log: list[str] = []
    started = time.monotonic()
    sending = asyncio.create_task(_ingest(system, events, ledger))
    rss_peak: dict[str, int] = {}
    watching = asyncio.create_task(_watch_rss(system, rss_peak))

    async def when_accepted(fraction: float) -> None:
        # Polling a counter the senders update: simpler than signalling from every batch.
        while len(ledger.accepted) < fraction * len(events) and not sending.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        # Each fault must hit a system under load, not one that has finished its work.
        assert not sending.done(), f"the stream ended before a fault ({log}): raise SEND_SECONDS"
        log.append(f"at {len(ledger.accepted)} accepted, {time.monotonic() - started:.1f} s:")

    try:
        restarts = []
        for fraction, spec in zip((0.1, 0.2, 0.3, 0.4), CONSUMERS, strict=True):
            await when_accepted(fraction)
            restarts.append(await _kill(system, spec.name, log))
        # A consumer starting while PostgreSQL is down exits (its pool cannot connect).
        await asyncio.gather(*restarts)
        await when_accepted(0.5)
        await _stop_postgres(system, log)
        await when_accepted(0.6)
        await _stop_broker(system, log)
        await when_accepted(0.7)
        slow = await _slow_postgres(system, ledger, sending, log)
        await when_accepted(0.85)
        poison = await _write_poison(system, log)
        await asyncio.wait_for(sending, timeout=900)
        sent_seconds = time.monotonic() - started

        # Generous: the trainer drains its backlog slowest (near-duplicate lookups per example).
        deadline = time.monotonic() + 600
        lags = await _lag(system)
        while any(lag != 0 for lag in _totals(lags).values()) and time.monotonic() < deadline:
            await asyncio.sleep(1)
            lags = await _lag(system)
        drained_seconds = time.monotonic() - started - sent_seconds
    finally:
        watching.cancel()
    await _remove_slow_writes(system)

    report = [f"events sent: {len(events)}; accepted (2xx): {len(ledger.accepted)}; "
              f"batches: {ledger.sent_batches}; retries: {dict(ledger.retries)}",
              *log,
              f"ingested in {sent_seconds:.1f} s, drained {drained_seconds:.1f} s later; "
              f"lag {_totals(lags)} (committed offset to fetch high watermark)",
              *_slow_report(slow),
              f"peak RSS over the run (limit {RSS_LIMIT / 2**20:.0f} MiB): {_mib(rss_peak)}"]
    connection = await asyncpg.connect(system.database_url)
    try:
        assert ledger.accepted == set(ledger.events), "an event never got a 2xx"
        pending = {tp: lag for by_partition in lags.values() for tp, lag in by_partition.items()
                   if lag != 0}
        assert not pending, f"lag left after {drained_seconds:.0f} s: {pending}"
        _check_slow(slow)
        assert set(rss_peak) == {spec.name for spec in CONSUMERS}, rss_peak
        assert all(rss < RSS_LIMIT for rss in rss_peak.values()), rss_peak

        dead = {topic: await _dead_letters(system, topic) for topic in poison}
        for spec in STREAM_CONSUMERS:
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
            assert set(processed) | dead_ids == ledger.accepted | poison_ids, f"{spec.name}: ids differ"
            assert not set(processed) & dead_ids, f"{spec.name}: ids both materialized and dead"
            assert len(dead_here) - len(dead_ids) == undecodable, spec.name

        # Exact counts of the current signals: flips, retractions and late older votes in the
        # stream, consumers killed in the middle of batches.
        feedback = [e for e in events if e["type"] in ("feedback.submitted", "feedback.retracted")]
        thumbs = current_thumbs(events)
        expected = Counter(e["thumb"] for e in thumbs)
        for table in ("feedback_minute", "feedback_hour", "feedback_day"):
            row = await connection.fetchrow(
                f"SELECT sum(thumbs_up) AS up, sum(thumbs_down) AS down FROM metrics.{table} "
                "WHERE tenant_id = 'acme'")
            report.append(f"metrics.{table}: up {row['up']}, down {row['down']} "
                          f"(recomputed: up {expected['up']}, down {expected['down']})")
            assert (row["up"], row["down"]) == (expected["up"], expected["down"]), table
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
        per_minute = await connection.fetch(
            "SELECT bucket, sum(thumbs_up) AS up, sum(thumbs_down) AS down "
            "FROM metrics.feedback_minute WHERE tenant_id = 'acme' GROUP BY 1")
        minutes: Counter[tuple[datetime, str]] = Counter()
        for r in per_minute:
            minutes[(r["bucket"], "up")] += r["up"]
            minutes[(r["bucket"], "down")] += r["down"]
        in_minutes: Counter[tuple[datetime, str]] = Counter(
            (datetime.fromisoformat(t["occurred_at"]).replace(second=0, microsecond=0),
             t["thumb"]) for t in thumbs)
        assert +minutes == in_minutes, "a current vote is not in the minute of its event"
        report.append(f"minutes: {len(in_minutes)} cells equal the current votes' minutes")
        profile_rows = await connection.fetchval(
            "SELECT count(*) FROM profiles.feedback WHERE tenant_id = 'acme'")
        report.append(f"profiles.feedback rows: {profile_rows} (feedback sent: {len(feedback)})")
        assert profile_rows == len(feedback), "profiles.feedback rows differ from feedback sent"
        current_rows = await connection.fetch(
            "SELECT verdict, count(*) AS n FROM profiles.feedback "
            "WHERE tenant_id = 'acme' AND current GROUP BY 1")
        verdicts = {r["verdict"]: r["n"] for r in current_rows}
        report.append(f"profiles current verdicts: {verdicts} (recomputed: {dict(expected)})")
        assert verdicts == {"accepted": expected["up"], "rejected": expected["down"]}
        examples = await connection.fetch(
            "SELECT record ->> 'label' AS label, count(*) AS n FROM trainer.examples "
            "WHERE tenant_id = 'acme' AND kind = 'kto' GROUP BY 1")
        labels = {r["label"]: r["n"] for r in examples}
        report.append(f"trainer KTO labels: {labels}")
        assert labels == {"true": expected["up"], "false": expected["down"]}
    finally:
        await connection.close()
        # Also when a check fails: the figures are what tells why.
        print("\n".join(["", "fault suite figures:", *report]))
