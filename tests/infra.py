"""Real infrastructure for the tests: external when the environment names it, Docker containers
through testcontainers when a Docker engine answers, embedded local processes otherwise.

- FEEDBACKLOOP_TEST_DATABASE_URL: an existing PostgreSQL (a superuser URL; databases are created)
- FEEDBACKLOOP_TEST_KAFKA_BOOTSTRAP: an existing Kafka
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from feedbackloop.contract import TopicNames
from feedbackloop.embedded import EmbeddedPostgres, TansuBroker, free_port, free_seaweed_ports
from feedbackloop.kafka import KafkaConnection, ensure_topics
from feedbackloop.migrations import apply_migrations
from feedbackloop.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def postgres_server(workdir: Path) -> Iterator[str]:
    """Yields a superuser URL of a PostgreSQL server."""
    external = os.environ.get("FEEDBACKLOOP_TEST_DATABASE_URL")
    if external:
        yield external
        return
    if docker_engine_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    server = EmbeddedPostgres(workdir / "postgres", free_port(), fast=True)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@contextmanager
def kafka_broker(workdir: Path) -> Iterator[str]:
    """Yields bootstrap servers of a Kafka-protocol broker."""
    external = os.environ.get("FEEDBACKLOOP_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    if docker_engine_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    broker = TansuBroker(workdir / "tansu.log", free_port())
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


def idempotence_supported(bootstrap: str) -> bool:
    """The embedded broker cannot issue producer ids; real Kafka can."""
    return bool(os.environ.get("FEEDBACKLOOP_TEST_KAFKA_BOOTSTRAP")) or docker_engine_available()


async def create_database(server_url: str) -> str:
    """A fresh database with every migration applied; returns its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base, _, _ = server_url.rpartition("/")
    url = f"{base}/{name}"
    connection = await asyncpg.connect(url)
    try:
        await apply_migrations(connection)
    finally:
        await connection.close()
    return url


async def create_topics(bootstrap: str, prefix: str, partitions: int = 2) -> TopicNames:
    names = TopicNames(prefix)
    await ensure_topics(
        KafkaConnection(bootstrap), names.all_physical(), partitions=partitions,
        replication_factor=1,
    )
    return names


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@dataclass
class ServiceProcesses:
    """The services as real processes, like `feedbackloop run` starts them."""

    env: dict[str, str]
    log_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, names: tuple[str, ...]) -> None:
        for name in names:
            self.ports.setdefault(name, free_port())
            env = self.env | {f"FEEDBACKLOOP_{name.upper()}_PORT": str(self.ports[name])}
            log = (self.log_dir / f"{name}.log").open("ab")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}.main"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
            log.close()
        self.wait_ready(names)

    def wait_ready(self, names: tuple[str, ...], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited: {self.log(name)[-3000:]}")
                if self.ready(name):
                    pending.discard(name)
            time.sleep(0.2)
        if pending:
            raise TimeoutError(
                f"not ready: {pending}; logs: " + " | ".join(self.log(n)[-2000:] for n in pending)
            )

    def ready(self, name: str) -> bool:
        try:
            url = f"http://127.0.0.1:{self.ports[name]}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes.clear()


async def eventually(check, timeout: float = 20.0, interval: float = 0.2):  # type: ignore[no-untyped-def]  # noqa: ASYNC109
    """Await `check()` until it returns a truthy value; returns it, or fails with the last."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


async def group_lag(bootstrap: str, group_id: str, topics: list[str]) -> int:
    """Messages not yet committed by a consumer group, summed over the topics' partitions."""
    lags = await partition_lags(bootstrap, {group_id: topics})
    return sum(lags[group_id].values())


async def partition_lags(bootstrap: str, groups: dict[str, list[str]]) -> dict[str, dict[Any, int]]:
    """Per consumer group (its id to its topics) and partition: records after the group's
    committed offset.

    The end of a partition is the high watermark a fetch returns, not the broker's ListOffsets
    answer, which the embedded broker (Tansu) gives as the last record batch's base offset + 1:
    below the end when that batch holds several records. Committed offsets are read first, so a
    record committed while this runs cannot make a lag negative; a negative lag is a commit past
    the log's end.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        partitions_of = {}
        for topic in {topic for topics in groups.values() for topic in topics}:
            partitions_of[topic] = [TopicPartition(topic, partition) for partition in sorted(
                consumer.partitions_for_topic(topic) or await _partitions(consumer, topic))]
        committed = {}
        for group_id, topics in groups.items():
            mine = [tp for topic in topics for tp in partitions_of[topic]]
            offsets = await admin.list_consumer_group_offsets(group_id, partitions=mine)
            committed[group_id] = {
                tp: offsets[tp].offset if tp in offsets and offsets[tp].offset >= 0 else 0
                for tp in mine
            }
        ends = await _high_watermarks(consumer, [tp for tps in partitions_of.values() for tp in tps])
        return {group_id: {tp: ends[tp] - offset for tp, offset in offsets.items()}
                for group_id, offsets in committed.items()}
    finally:
        await admin.close()
        await consumer.stop()


async def _high_watermarks(consumer: Any, partitions: list[Any]) -> dict[Any, int]:
    consumer.assign(partitions)
    # Fetching from near the end keeps the records returned (and dropped) few.
    await consumer.seek_to_end(*partitions)
    deadline = time.monotonic() + 30
    while any(consumer.highwater(tp) is None for tp in partitions):
        assert time.monotonic() < deadline, "no fetch answered for 30 s"
        await consumer.getmany(*partitions, timeout_ms=200)
    return {tp: consumer.highwater(tp) for tp in partitions}


async def _partitions(consumer, topic: str) -> set[int]:  # type: ignore[no-untyped-def]
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


@dataclass
class Record:
    """A consumed record as the pipeline sees it, for tests that drive `BatchPipeline` directly."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def records_of(values: list[bytes], topic: str = "p.feedback") -> list[Record]:
    return [Record(topic, 0, offset, b"k", value) for offset, value in enumerate(values)]


class CollectedDeadLetters:
    """A dead-letter sink that keeps what it is given (the broker path is tested elsewhere)."""

    def __init__(self) -> None:
        self.items: list = []

    async def publish(self, dead_letters) -> None:  # type: ignore[no-untyped-def]
        self.items.extend(dead_letters)


def free_ports_for_run() -> dict[str, str]:
    """A free port for every `*_port` setting (every service and embedded part, so a new one
    cannot be forgotten and fall back to its default, which something else may hold), and a
    free block for SeaweedFS's other listeners."""
    s3_port, seaweed_port_base = free_seaweed_ports()
    seaweed = {"FEEDBACKLOOP_EMBEDDED_S3_PORT": str(s3_port),
               "FEEDBACKLOOP_EMBEDDED_SEAWEED_PORT_BASE": str(seaweed_port_base)}
    ports = {f"FEEDBACKLOOP_{name.upper()}": str(free_port())
             for name in Settings.model_fields
             if name.endswith("_port") and f"FEEDBACKLOOP_{name.upper()}" not in seaweed}
    return ports | seaweed


def start_feedbackloop_run(
    run_env: dict[str, str], timeout: float = 240.0
) -> tuple[subprocess.Popen[str], list[str], threading.Thread]:
    """`feedbackloop run` as a person starts it, ready: (the process, its output so far, the
    thread that keeps reading it, so the pipe never fills and blocks the supervisor's reports).
    Ports `run_env` leaves unset are free ones (`free_ports_for_run`). Kills it and raises if it
    exits or is not ready within `timeout`."""
    run_env = free_ports_for_run() | run_env
    process = subprocess.Popen([sys.executable, "-m", "services.cli.main", "run"], env=run_env,
                               cwd=ROOT, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    output: list[str] = []
    stdout = process.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: output.extend(iter(stdout.readline, "")),
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not any(line.startswith("Press Ctrl-C") for line in list(output)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("feedbackloop run did not become ready:\n" + "".join(output))
        time.sleep(0.2)
    return process, output, reader
