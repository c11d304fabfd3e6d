"""`make bench`: the system measured side by side with its baselines, in one run.

Starts PostgreSQL and the broker (embedded, in memory) and the services as processes, then:
1. single-event ingest (`POST /v1/feedback`) against a bare FastAPI endpoint validating the same
   model, same server and process model, same client, same concurrency;
2. batch ingest (`POST /v1/events`, batches of 500, through the Python client) against a raw
   aiokafka producer sending the same serialized events to the same broker;
3. consumer throughput: consumers start after 1 and 2, and drain what was ingested (time from
   their launch, process start and group join included, to every event applied), against a
   raw asyncpg COPY of rows;
4. end to end: a ladder of offered rates of mixed traffic through all four consumers, with
   freshness (accepted to visible in the query API) and the time to lag 0 after each step; the
   highest rate held (see `tests/bench/endtoend.py`); peak RSS of every service under it;
5. queries: p50/p95 of the analytics endpoints after 1 million and 10 million events, beside
   the minute scan they replaced (see `tests/bench/queries.py`);
6. the learner's refit time against the number of choices (global fit plus three segments);
   its incremental update against the full refit it replaces; regret per exploration policy and
   recovery after a preference shift in full-size simulations with known truth;
7. cost: CPU seconds per 1,000 events of every process while the system drains a fixed mixed
   workload, beside a raw pipeline doing the same work in the same run (see
   `tests/bench/cost.py`); `--profile DIR` records py-spy profiles of the consumers meanwhile;
8. the rank API's p50/p99 at a fixed offered rate (200 requests/s) beside a bare endpoint.
`--quick` shrinks every section so that a run takes a few minutes.
Rounds alternate system and baseline (the machine is shared and noisy); medians and ratios are
reported. The report is written as JSON and as a table under bench-results/<timestamp>/.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import psutil
from aiokafka import AIOKafkaProducer

from feedbackloop.client import AsyncFeedbackClient
from feedbackloop.contract import Topic, TopicNames, encode_event
from feedbackloop.contract.requests import FeedbackRequest, build_event
from feedbackloop.embedded import EmbeddedPostgres, TansuBroker, free_port
from feedbackloop.http.auth import ALL_SCOPES
from services.cli.admin import create_key
from services.learner.handlers import SPEC as LEARNER
from services.metrics.handlers import SPEC as METRICS
from services.profiles.handlers import SPEC as PROFILES
from services.trainer.handlers import SPEC as TRAINER
from tests.bench.cost import measure_cost, postmaster_pid
from tests.bench.cost import table as cost_table
from tests.bench.endtoend import sustained_load
from tests.bench.queries import measure_queries
from tests.bench.queries import table as queries_table
from tests.bench.rank import offered_rate
from tests.bench.refits import (
    learning_simulations,
    learning_table,
    refit_seconds,
    update_against_refit,
)
from tests.infra import ROOT, ServiceProcesses, create_database, create_topics, group_lag

CONSUMERS = ("profiles", "trainer", "metrics")
SPECS = (PROFILES, LEARNER, TRAINER, METRICS)
HMAC_SECRET = "bench-secret-" + "x" * 32


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _hammer(url: str, headers: dict[str, str], seconds: float, concurrency: int) -> dict:
    """POST one small feedback event per request from `concurrency` keep-alive connections for
    `seconds`. A minimal HTTP/1.1 client over asyncio streams: httpx's pool, measured here, tops
    out near 200 requests/s at 32 connections, which would make the client the bottleneck."""
    target = urlsplit(url)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(target.hostname, target.port)
        try:
            while time.perf_counter() < deadline:
                body = orjson.dumps({"response_id": f"r{uuid.uuid4().hex[:8]}", "thumb": "up",
                                     "user_id": "bench-user", "event_id": str(uuid.uuid4())})
                started = time.perf_counter()
                writer.write(
                    f"POST {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n{extra}"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                    .encode() + body
                )
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                if status == 202:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "accepted": len(latencies),
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": 1000 * _percentile(latencies, 0.5),
        "p99_ms": 1000 * _percentile(latencies, 0.99),
        "errors": errors,
    }


def _feedback_batch(count: int, action_type: str) -> list[dict[str, Any]]:
    return [
        {"type": "feedback.submitted", "event_id": str(uuid.uuid4()), "response_id": f"r{i}",
         "thumb": "up" if i % 4 else "down", "user_id": f"user-{i % 1000}",
         "action_type": action_type}
        for i in range(count)
    ]


async def _batch_ingest(url: str, key: str, events: int, parallel: int) -> float:
    per_client = events // parallel

    async def one(index: int) -> None:
        async with AsyncFeedbackClient(url, key, batch_size=500, flush_interval=0) as client:
            for event in _feedback_batch(per_client, f"bench_{index}"):
                fields = {k: v for k, v in event.items() if k != "type"}
                await client.send(event["type"], **fields)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(parallel)))
    return per_client * parallel / (time.perf_counter() - started)


async def _raw_produce(bootstrap: str, names: TopicNames, events: int) -> float:
    received = datetime.now(UTC)
    messages = []
    for doc in _feedback_batch(events, "raw"):
        fields = {k: v for k, v in doc.items() if k not in ("type", "user_id")}
        event = build_event("feedback.submitted", FeedbackRequest.model_validate(fields),
                            tenant_id="bench", user_hash="h" * 64, received_at=received)
        messages.append((f"bench:{event.subject}".encode(), encode_event(event)))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=1_048_576)
    await producer.start()
    try:
        topic = names.physical(Topic.FEEDBACK)
        started = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
        return events / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def _drain_seconds(database_url: str, expected: dict[str, int], started: float,
                         limit_seconds: float = 600) -> dict[str, float]:
    """Seconds from `started` until each consumer has applied `expected[name]` events (its
    processed ids)."""
    done: dict[str, float] = {}
    connection = await asyncpg.connect(database_url)
    try:
        while len(done) < len(expected) and time.perf_counter() - started < limit_seconds:
            for name, count in expected.items():
                if name not in done and await connection.fetchval(
                    f"SELECT count(*) FROM {name}.processed_events"
                ) >= count:
                    done[name] = time.perf_counter() - started
            await asyncio.sleep(0.25)
    finally:
        await connection.close()
    return done


async def _copy_rows(database_url: str, rows: int) -> float:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "CREATE TEMP TABLE copy_bench (tenant_id text, event_id uuid, response_id text, "
            "user_id text, thumb text, occurred_at timestamptz)"
        )
        now = datetime.now(UTC)
        records = [("bench", uuid.uuid4(), f"r{i}", "h" * 64, "up", now) for i in range(rows)]
        started = time.perf_counter()
        await connection.copy_records_to_table("copy_bench", records=records)
        return rows / (time.perf_counter() - started)
    finally:
        await connection.close()


class PeakMemory:
    """Peak resident memory of each service process, sampled while the benchmark runs."""

    def __init__(self, services: ServiceProcesses) -> None:
        self.services = services
        self.peak: dict[str, int] = {}

    def sample(self) -> None:
        for name, process in list(self.services.processes.items()):
            try:
                rss = psutil.Process(process.pid).memory_info().rss
            except psutil.Error:
                continue
            self.peak[name] = max(self.peak.get(name, 0), rss)


async def _sampling(memory: PeakMemory, stop: asyncio.Event) -> None:
    while not stop.is_set():
        memory.sample()
        await asyncio.sleep(0.2)


async def measure(arguments: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(), "cpus": os.cpu_count()}
    postgres = EmbeddedPostgres(workdir / "pg", free_port(), fast=True)
    broker = TansuBroker(workdir / "tansu.log", free_port())
    postgres.start()
    if arguments.profile is not None:
        # Statement statistics for the profile: PostgreSQL's side of each consumer's work.
        await _enable_statement_statistics(postgres)
    broker.start()
    services: ServiceProcesses | None = None
    bare: subprocess.Popen[bytes] | None = None
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        database_url = await create_database(postgres.url)
        names = await create_topics(broker.bootstrap_servers, prefix, partitions=3)
        _, key = await create_key(database_url, tenant_id="bench", name="bench",
                                  scopes=list(ALL_SCOPES))
        env = dict(os.environ) | {
            "FEEDBACKLOOP_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "FEEDBACKLOOP_DATABASE_URL": database_url,
            "FEEDBACKLOOP_KAFKA_TOPIC_PREFIX": prefix,
            "FEEDBACKLOOP_USER_ID_HMAC_SECRET": HMAC_SECRET,
            "FEEDBACKLOOP_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "FEEDBACKLOOP_API_KEY_CACHE_SECONDS": "5",
            # The benchmark measures throughput; per-key rate limiting would measure the limit.
            "FEEDBACKLOOP_RATE_LIMIT_REQUESTS_PER_SECOND": "0",
        }
        services = ServiceProcesses(env, workdir)
        # Consumers start after the ingest measurements, so that what was ingested is a backlog
        # whose drain time measures them.
        services.start(("ingest", "query"))
        bare_port = free_port()
        bare = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
            [sys.executable, "-m", "uvicorn", "tests.bench.bare_app:app", "--port",
             str(bare_port), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(2)
        memory = PeakMemory(services)
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sampling(memory, stop))
        headers = {"Authorization": f"Bearer {key}"}

        # 1. single events
        system_runs, bare_runs = [], []
        for _ in range(arguments.rounds):
            system_runs.append(await _hammer(f"{services.url('ingest')}/v1/feedback", headers,
                                             arguments.seconds, arguments.concurrency))
            bare_runs.append(await _hammer(f"http://127.0.0.1:{bare_port}/v1/feedback", headers,
                                           arguments.seconds, arguments.concurrency))
        singles = sum(r["accepted"] for r in system_runs)
        system_rps = statistics.median(r["requests_per_second"] for r in system_runs)
        bare_rps = statistics.median(r["requests_per_second"] for r in bare_runs)
        report["single_event"] = {
            "concurrency": arguments.concurrency,
            "ingest": {"requests_per_second": system_rps,
                       "p50_ms": statistics.median(r["p50_ms"] for r in system_runs),
                       "p99_ms": statistics.median(r["p99_ms"] for r in system_runs),
                       "errors": sum(r["errors"] for r in system_runs)},
            "bare_fastapi": {"requests_per_second": bare_rps,
                             "p50_ms": statistics.median(r["p50_ms"] for r in bare_runs),
                             "p99_ms": statistics.median(r["p99_ms"] for r in bare_runs)},
            "ratio": system_rps / bare_rps, "target_ratio": 0.7,
        }

        # 2. batches
        system_eps, raw_eps = [], []
        parallel = 4
        per_round = arguments.batch_events // parallel * parallel
        for _ in range(arguments.rounds):
            system_eps.append(await _batch_ingest(services.url("ingest"), key,
                                                  per_round, parallel=parallel))
            raw_eps.append(await _raw_produce(broker.bootstrap_servers, names, per_round))
        batched = raw = per_round * arguments.rounds
        report["batch_ingest"] = {
            "batch_size": 500,
            "ingest_events_per_second": statistics.median(system_eps),
            "raw_producer_events_per_second": statistics.median(raw_eps),
            "ratio": statistics.median(system_eps) / statistics.median(raw_eps),
            "target_events_per_second": 30_000, "target_ratio": 0.4,
        }

        # 3. consumers drain what was ingested (timed from their readiness: includes joining)
        with_user = singles + batched  # profiles keeps feedback of known users only
        total = with_user + raw
        launched = time.perf_counter()
        services.start(CONSUMERS)
        drained = await _drain_seconds(
            database_url, {"profiles": with_user, "trainer": total, "metrics": total}, launched
        )
        copy_rps = await _copy_rows(database_url, 50_000)
        report["consumers"] = {
            "backlog_when_measured": total,
            "seconds_to_zero_lag": drained,
            "raw_copy_rows_per_second": copy_rps,
        }

        # 4. end to end under sustained load, all four consumers; peak memory under that load
        services.start(("learner",))
        _, probe_key = await create_key(database_url, tenant_id="probe", name="probe",
                                        scopes=list(ALL_SCOPES))

        async def lag() -> int:
            return sum([
                await group_lag(broker.bootstrap_servers, f"{prefix}.{spec.name}",
                                [names.physical(topic) for topic in spec.topics])
                for spec in SPECS
            ])

        while await lag() > 0:  # noqa: ASYNC110 - the learner catches up with the backlog
            await asyncio.sleep(0.5)

        # 7. cost per event, beside the raw pipeline; profiles of the consumers meanwhile
        consumer_pids = {name: services.processes[name].pid for name in (*CONSUMERS, "learner")}
        profilers = _start_profilers(arguments.profile, consumer_pids)
        if arguments.profile is not None:
            await _reset_statement_statistics(database_url)
        try:
            report["cpu_per_event"] = await measure_cost(
                ingest_url=services.url("ingest"), key=key, bootstrap=broker.bootstrap_servers,
                names=names, database_url=database_url, consumer_pids=consumer_pids,
                infrastructure_pids={
                    "ingest": services.processes["ingest"].pid,
                    "broker": broker.process.pid if broker.process else 0,
                    "postgresql": postmaster_pid(postgres.data_dir),
                },
                specs=SPECS, lag=lag, events=arguments.cost_events, workdir=workdir,
            )
        finally:
            _stop_profilers(profilers)
        if arguments.profile is not None:
            statements = await _statement_statistics(database_url)
            (arguments.profile / "postgresql-statements.json").write_text(
                json.dumps(statements, indent=2))
            report["cpu_per_event"]["postgresql_statements_top"] = statements[:12]

        # 8. the rank API at a fixed offered rate, beside the bare endpoint
        report["rank"] = await offered_rate(
            f"{services.url('ingest')}/v1/recommendations/rank", headers,
            rate=arguments.rank_rate, seconds=arguments.rank_seconds,
        ) | {"load_average": list(psutil.getloadavg())}
        report["rank"]["bare_endpoint"] = await offered_rate(
            f"http://127.0.0.1:{bare_port}/v1/recommendations/rank", headers,
            rate=arguments.rank_rate, seconds=arguments.rank_seconds,
        )
        memory.peak.clear()
        report["end_to_end"] = await sustained_load(
            services.url("ingest"), services.url("query"), key, probe_key, lag,
            rates=arguments.rates, step_seconds=arguments.step_seconds,
        )
        stop.set()
        await sampler
        report["peak_rss_mib"] = {name: round(rss / 2**20, 1) for name, rss in memory.peak.items()}

        # 5. queries against the number of events (bulk-loaded read models, another tenant)
        _, query_key = await create_key(database_url, tenant_id="bench-queries", name="queries",
                                        scopes=list(ALL_SCOPES))
        report["queries"] = await measure_queries(
            database_url, services.url("query"), query_key, "bench-queries",
            sizes=tuple(arguments.query_sizes), user_id_hmac_secret=HMAC_SECRET,
        )
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(10)
        if services is not None:
            services.stop()
        broker.stop()
        postgres.stop()
    return report


async def _enable_statement_statistics(postgres: EmbeddedPostgres) -> None:
    connection = await asyncpg.connect(postgres.url)
    try:
        await connection.execute(
            "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    finally:
        await connection.close()
    postgres.stop()
    postgres.start()


async def _reset_statement_statistics(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await connection.execute("SELECT pg_stat_statements_reset()")
    finally:
        await connection.close()


async def _statement_statistics(database_url: str) -> list[dict[str, Any]]:
    """The statements of the cost run by total execution time, with their calls and rows."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            """
            SELECT round(total_exec_time::numeric, 1)::float AS total_ms, calls, rows,
                   round((total_exec_time / greatest(calls, 1))::numeric, 3)::float AS mean_ms,
                   left(regexp_replace(query, '\\s+', ' ', 'g'), 300) AS query
            FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 40
            """
        )
        return [dict(row) for row in rows]
    finally:
        await connection.close()


def _start_profilers(folder: Path | None,
                     pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """py-spy recording each process (collapsed stacks, `<name>.txt`) until stopped."""
    if folder is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
             "--format", "raw", "--rate", "50", "--output", str(folder / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def _stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        try:
            profiler.wait(30)
        except subprocess.TimeoutExpired:
            profiler.kill()


def _table(report: dict[str, Any]) -> str:
    single, batch = report["single_event"], report["batch_ingest"]
    lines = [
        "measurement                        system        baseline      ratio   target",
        f"single POST /v1/feedback (req/s)   {single['ingest']['requests_per_second']:>10.0f}"
        f"    {single['bare_fastapi']['requests_per_second']:>10.0f}    {single['ratio']:>5.2f}"
        f"   >= {single['target_ratio']}",
        f"  latency p50 / p99 (ms)           {single['ingest']['p50_ms']:>5.1f} / "
        f"{single['ingest']['p99_ms']:<6.1f}  {single['bare_fastapi']['p50_ms']:>5.1f} / "
        f"{single['bare_fastapi']['p99_ms']:<6.1f}",
        f"batch POST /v1/events (events/s)   {batch['ingest_events_per_second']:>10.0f}"
        f"    {batch['raw_producer_events_per_second']:>10.0f}    {batch['ratio']:>5.2f}"
        f"   >= {batch['target_ratio']} and >= {batch['target_events_per_second']}/s",
    ]
    consumers = report["consumers"]
    for name, seconds in consumers["seconds_to_zero_lag"].items():
        rate = consumers["backlog_when_measured"] / seconds if seconds else float("inf")
        lines.append(f"consumer {name:<9} drain (events/s)  {rate:>10.0f}"
                     f"    {consumers['raw_copy_rows_per_second']:>10.0f}    "
                     f"{rate / consumers['raw_copy_rows_per_second']:>5.2f}   (raw COPY)")
    e2e = report["end_to_end"]
    lines.append(f"end to end: highest offered rate held {e2e['highest_rate_held']} events/s "
                 f"(freshness p99 < {e2e['freshness_target_s']} s, {e2e['step_seconds']:.0f} s steps;"
                 " target 10000)")
    lines.append("  offered  achieved  fresh p50  fresh p99  lag 0 after stop  held")
    for step in e2e["steps"]:
        lines.append(f"  {step['offered_events_per_second']:>7}  {step['achieved_events_per_second']:>8.0f}"
                     f"  {step['freshness_p50_s']:>8} s  {step['freshness_p99_s']:>8} s"
                     f"  {step['seconds_to_zero_lag_after_stop']:>14} s  {step['held']}")
    lines.append(cost_table(report["cpu_per_event"]))
    rank = report["rank"]
    lines.append(f"rank API at {rank['offered_per_second']} requests/s: p50 {rank['p50_ms']} ms, "
                 f"p99 {rank['p99_ms']} ms, errors {rank['errors']} (bare endpoint: p50 "
                 f"{rank['bare_endpoint']['p50_ms']} ms, p99 {rank['bare_endpoint']['p99_ms']} ms;"
                 " target p99 < 20 ms)")
    lines.append("learner refit (s) by choices: " + ", ".join(
        f"{n}: {seconds:.2f}" for n, seconds in report["refit_seconds_by_choices"].items()))
    if "learning_updates" in report:
        lines.append(learning_table(report["learning_updates"], report["learning_simulations"]))
    lines.append("peak RSS under the end-to-end load (MiB): "
                 + ", ".join(f"{k} {v}" for k, v in report["peak_rss_mib"].items()))
    lines += ["", "queries after N events (bulk-loaded read models; target p95 < 50 ms at 10M):",
              queries_table(report["queries"])]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-events", type=int, default=20_000)
    parser.add_argument("--rates", type=lambda text: [int(r) for r in text.split(",")],
                        default=[250, 500, 1000, 2000, 4000, 7000, 10000],
                        help="offered events/s of the end-to-end ladder, comma-separated")
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument("--query-sizes", type=lambda text: [int(n) for n in text.split(",")],
                        default=[1_000_000, 10_000_000],
                        help="events loaded before timing the queries, comma-separated")
    parser.add_argument("--cost-events", type=int, default=20_000,
                        help="events of the fixed mixed workload the CPU per event is taken on")
    parser.add_argument("--rank-rate", type=float, default=200.0)
    parser.add_argument("--rank-seconds", type=float, default=20.0)
    parser.add_argument("--profile", type=Path, default=None,
                        help="folder for py-spy profiles of the consumers during the cost run")
    parser.add_argument("--quick", action="store_true",
                        help="a short run (a few minutes): every section shrunk, no simulations")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.rounds, arguments.seconds, arguments.batch_events = 1, 2.0, 4_000
        arguments.rates, arguments.step_seconds = [250, 1000, 2000], 8.0
        arguments.query_sizes, arguments.cost_events = [100_000], 10_000
        arguments.rank_seconds = 8.0
    with tempfile.TemporaryDirectory(prefix="fbl-bench-") as workdir:
        report = asyncio.run(measure(arguments, Path(workdir)))
    report["quick"] = arguments.quick
    report["refit_seconds_by_choices"] = refit_seconds(rounds=arguments.rounds)
    if not arguments.quick:
        report["learning_updates"] = update_against_refit(rounds=arguments.rounds)
        report["learning_simulations"] = learning_simulations()
    folder = arguments.out / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder.mkdir(parents=True, exist_ok=True)
    table = _table(report)
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    (folder / "report.txt").write_text(table + "\n")
    print(table)
    print(f"\nreport: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
