"""CPU per event: what the running system spends on a fixed mixed workload, process by process,
beside a raw pipeline doing the least the same work needs, in the same run.

System: with every consumer at lag 0, the CPU times of ingest, the broker, PostgreSQL (the
postmaster and every backend: its process tree, exited backends included through the
postmaster's reaped-children times) and each consumer are read from the kernel
(`/proc/<pid>/stat` through psutil); a fixed workload (`feedbackloop loadgen`'s generator, fixed
seed and count) is sent through ingest as fast as the client goes; when every consumer group
is back at lag 0 the CPU times are read again. The client's own CPU is not counted.

Raw pipeline: the very records ingest put on the topics are read back (unmeasured) and then,
measured the same way, a raw producer process sends them to topics of their own, and one raw
consumer process per stream consumer reads the topics its counterpart reads, decodes each record
(orjson) and COPYs into PostgreSQL as many rows as that consumer wrote for the workload (the
inserts, updates and deletes PostgreSQL counted in its schema), committing offsets per fetch.
Each raw process reports its own CPU once started (interpreter, imports, connections: paid by
the system's processes before their measurement too) and when done; the difference is counted.
That is this machine's limit for this work; the ratio of the system's CPU per event to it is
the figure to compare run to run. PostgreSQL's write-ahead log written per event is reported for
both (the figure that bounds one primary's write rate).
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from feedbackloop.client import AsyncFeedbackClient
from feedbackloop.contract import Topic, TopicNames
from feedbackloop.pipeline.consumer import ConsumerSpec
from services.cli.loadgen import mixed_events
from tests.infra import ROOT, create_topics

# Rows PostgreSQL's statistics count per schema: a busy backend reports them at most once a
# second, an idle one within 10 s, so the counts are read after that long without writes.
_STATS_FLUSH_SECONDS = 11.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and all its descendants, living or exited (reaped)."""
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.Error:
                continue  # exited meanwhile: its time moves to its parent's reaped children
            total += child_times.user + child_times.system
        return total
    except psutil.Error:
        return 0.0


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


@dataclass
class CpuMeter:
    """CPU seconds of named processes (each with its tree) between `start` and `stop`."""

    pids: dict[str, int]

    def start(self) -> None:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._started = time.perf_counter()

    def stop(self) -> dict[str, float]:
        self.wall_seconds = time.perf_counter() - self._started
        return {name: cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()}


async def rows_written(database_url: str, schemas: list[str]) -> dict[str, int]:
    """Rows inserted, updated and deleted so far in each schema, as PostgreSQL counted them."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT schemaname, sum(n_tup_ins + n_tup_upd + n_tup_del)::bigint AS n "
            "FROM pg_stat_user_tables WHERE schemaname = ANY($1::text[]) GROUP BY schemaname",
            schemas,
        )
        return {schema: 0 for schema in schemas} | {r["schemaname"]: int(r["n"]) for r in rows}
    finally:
        await connection.close()


async def wal_position(database_url: str) -> int:
    """PostgreSQL's current write-ahead log position, in bytes."""
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"))
    finally:
        await connection.close()


def fixed_workload(events: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """The first `events` events of the load generator's mixed traffic for `seed`."""
    rng = random.Random(seed)
    workload: list[tuple[str, dict[str, Any]]] = []
    while len(workload) < events:
        workload += mixed_events(rng)
    return workload[:events]


async def _send(ingest_url: str, key: str, workload: list[tuple[str, dict[str, Any]]]) -> None:
    async with AsyncFeedbackClient(ingest_url, key, batch_size=200, flush_interval=0.05) as client:
        for event_type, fields in workload:
            await client.send(event_type, **fields)


async def _ends(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata of every topic
        partitions = [TopicPartition(topic, p) for topic in topics
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def _read_range(bootstrap: str, start: dict[TopicPartition, int],
                      end: dict[TopicPartition, int]) -> list[tuple[str, int, str, str]]:
    """The records between two sets of offsets, as (physical topic, partition, key, value) with
    key and value in latin-1 (a lossless text form of bytes, for the file the producer reads)."""
    wanted = {tp: end[tp] - start.get(tp, 0) for tp in end if end[tp] > start.get(tp, 0)}
    records: list[tuple[str, int, str, str]] = []
    if not wanted:
        return records
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=8_388_608)
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, start.get(tp, 0))
        remaining = dict(wanted)
        while any(remaining.values()):
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, batch in batches.items():
                for record in batch:
                    if record.offset < end[tp] and remaining[tp] > 0:
                        remaining[tp] -= 1
                        records.append((tp.topic, tp.partition,
                                        (record.key or b"").decode("latin-1"),
                                        (record.value or b"").decode("latin-1")))
    finally:
        await consumer.stop()
    return records


def _per_1000(cpu: dict[str, float], events: int) -> dict[str, dict[str, float]]:
    return {name: {"cpu_seconds": round(seconds, 3),
                   "cpu_seconds_per_1000_events": round(1000 * seconds / events, 4)}
            for name, seconds in cpu.items()}


async def measure_cost(
    *,
    ingest_url: str,
    key: str,
    bootstrap: str,
    names: TopicNames,
    database_url: str,
    consumer_pids: dict[str, int],
    infrastructure_pids: dict[str, int],
    specs: tuple[ConsumerSpec[Any], ...],
    lag: Callable[[], Awaitable[int]],
    events: int,
    workdir: Path,
    seed: int = 17,
) -> dict[str, Any]:
    """CPU per 1,000 events of the system and of the raw pipeline, and their ratio."""
    schemas = [spec.schema for spec in specs]
    input_topics = sorted({names.physical(t) for spec in specs for t in spec.topics})
    workload = fixed_workload(events, seed)

    # The system.
    while await lag() > 0:  # noqa: ASYNC110 - polling the broker's offsets
        await asyncio.sleep(0.5)
    await asyncio.sleep(_STATS_FLUSH_SECONDS)
    ends_before = await _ends(bootstrap, input_topics)
    rows_before = await rows_written(database_url, schemas)
    wal_before = await wal_position(database_url)
    meter = CpuMeter(infrastructure_pids | consumer_pids)
    meter.start()
    await _send(ingest_url, key, workload)
    while await lag() > 0:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    system_cpu = meter.stop()
    system_wall = meter.wall_seconds
    system_wal = await wal_position(database_url) - wal_before
    await asyncio.sleep(_STATS_FLUSH_SECONDS)
    rows_after = await rows_written(database_url, schemas)
    rows = {schema: rows_after[schema] - rows_before[schema] for schema in schemas}
    ends_after = await _ends(bootstrap, input_topics)

    # The raw pipeline: the same records, to topics of its own.
    records = await _read_range(bootstrap, ends_before, ends_after)
    raw_names = await create_topics(bootstrap, f"{names.prefix}raw", partitions=3)
    logical = {names.physical(topic): topic for topic in Topic}
    records_file = workdir / "raw-records.jsonl"
    with records_file.open("w") as out:
        for topic, partition, record_key, value in records:
            out.write(json.dumps([raw_names.physical(logical[topic]), partition, record_key,
                                  value]) + "\n")
    await _raw_table(database_url)
    wal_before = await wal_position(database_url)
    raw_meter_pids = dict(infrastructure_pids)
    raw_meter_pids.pop("ingest", None)
    meter = CpuMeter(raw_meter_pids)
    meter.start()
    producer = _spawn("produce", bootstrap, str(records_file))
    consumers: dict[str, subprocess.Popen[bytes]] = {}
    for spec in specs:
        topics = [raw_names.physical(t) for t in spec.topics]
        expected = sum(1 for topic, *_ in records if logical[topic] in spec.topics)
        consumers[spec.name] = _spawn(
            "consume", bootstrap, ",".join(topics), f"{raw_names.prefix}.raw-{spec.name}",
            database_url, str(expected), str(rows[spec.schema]),
        )
    processes = {"raw_producer": producer} | {f"raw_{n}": p for n, p in consumers.items()}
    while any(p.poll() is None for p in processes.values()):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    raw_cpu = meter.stop()
    raw_wall = meter.wall_seconds
    raw_wal = await wal_position(database_url) - wal_before
    for name, process in processes.items():
        output = (process.stdout.read() if process.stdout else b"").decode().split()
        if process.returncode != 0 or len(output) != 2:
            raise RuntimeError(f"{name} failed with {process.returncode}: {output}")
        # Each reports its own CPU once started and when done: the difference is its work.
        raw_cpu[name] = float(output[1]) - float(output[0])
    raw_cpu.pop("ingest", None)

    system_total = sum(system_cpu.values())
    raw_total = sum(raw_cpu.values())
    return {
        "events": events,
        "records_on_topics": len(records),
        "rows_written_by_schema": rows,
        "system": {
            "wall_seconds": round(system_wall, 2),
            "cpu_seconds_per_1000_events": round(1000 * system_total / events, 4),
            "wal_bytes_per_event": round(system_wal / events),
            "processes": _per_1000(system_cpu, events),
        },
        "raw_pipeline": {
            "wall_seconds": round(raw_wall, 2),
            "cpu_seconds_per_1000_events": round(1000 * raw_total / events, 4),
            "wal_bytes_per_event": round(raw_wal / events),
            "processes": _per_1000(raw_cpu, events),
        },
        "ratio_to_raw_pipeline": round(system_total / raw_total, 2) if raw_total else None,
        "load_average": list(psutil.getloadavg()),
    }


async def _raw_table(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS public.raw_pipeline_rows (tenant_id text, event_id uuid, "
            "type text, subject text, occurred_at timestamptz, body jsonb)"
        )
    finally:
        await connection.close()


def _spawn(*arguments: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.bench.raw_pipeline", *arguments],
        cwd=ROOT, stdout=subprocess.PIPE,
    )


def table(cost: dict[str, Any]) -> str:
    system, raw = cost["system"], cost["raw_pipeline"]
    lines = [
        f"CPU per 1,000 events ({cost['events']} events of mixed traffic; load average "
        f"{', '.join(f'{v:.2f}' for v in cost['load_average'])}):",
        f"  system {system['cpu_seconds_per_1000_events']:.3f} s, raw pipeline "
        f"{raw['cpu_seconds_per_1000_events']:.3f} s: ratio {cost['ratio_to_raw_pipeline']}"
        " (target <= 3)",
    ]
    for label, part in (("system", system), ("raw", raw)):
        lines.append(f"  {label}: " + ", ".join(
            f"{name} {figures['cpu_seconds_per_1000_events']:.3f}"
            for name, figures in part["processes"].items()))
    lines.append(f"  PostgreSQL WAL per event: system {system['wal_bytes_per_event']} bytes, raw "
                 f"{raw['wal_bytes_per_event']} bytes")
    lines.append("  rows written per schema: "
                 + ", ".join(f"{k} {v}" for k, v in cost["rows_written_by_schema"].items()))
    return "\n".join(lines)
