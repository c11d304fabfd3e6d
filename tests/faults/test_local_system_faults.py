"""`make run` heals itself: the system `feedbackloop run` starts, on its durable configuration
(the broker's log in SeaweedFS), under a stream of events while its infrastructure is SIGKILLed.

In turn, while clients stream `FEEDBACKLOOP_LOCAL_FAULTS_EVENTS` events (responses and thumbs,
with flips and retractions among them, 4,000 by default) with known ids, retrying 5xx and
connection errors with the same ids: the broker, SeaweedFS and the PostgreSQL postmaster are
SIGKILLed (the postmaster is a child of `feedbackloop run`, so a supervisor that does not reap it
leaves a zombie whose lock file stops PostgreSQL from starting again), and bodies in UTF-16 and
UTF-32 carrying a field the contract does not define are sent. Nothing is restarted by the test.
Then every part is up again with one restart, the refused bodies changed nothing, and profiles,
trainer and metrics each materialized exactly the ids that got a 2xx, once, with rollups equal
to a recount of the current signals.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson
import psutil
import pytest

from tests.faults.test_faults import Ledger, _send, _stream, current_thumbs
from tests.infra import start_feedbackloop_run

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "services.cli.main"]
EVENTS = int(os.environ.get("FEEDBACKLOOP_LOCAL_FAULTS_EVENTS", "4000"))
SEND_SECONDS = 60.0
BATCH = 50
STREAM_CONSUMERS = ("profiles", "trainer", "metrics")
INFRASTRUCTURE = ("broker", "seaweedfs", "postgres")


@dataclass
class Running:
    process: subprocess.Popen[str]
    env: dict[str, str]
    data_dir: Path
    output: list[str]

    def url(self, service: str) -> str:
        return next(line.split()[1] for line in self.output
                    if line.split()[:1] == [service] and "http://" in line)

    @property
    def key(self) -> str:
        return next(line.split()[2] for line in self.output if line.strip().startswith("API key"))

    def parts(self) -> dict[str, tuple[str, int]]:
        report = subprocess.run([*CLI, "status"], env=self.env, cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert report.returncode == 0, report.stderr
        return {line.split()[0]: (line.split()[1], int(line.split()[3].rstrip(",")))
                for line in report.stdout.splitlines()[1:]}

    def child(self, program: str) -> psutil.Process:
        for child in psutil.Process(self.process.pid).children():
            if Path(child.cmdline()[0]).name == program:
                return child
        raise AssertionError(f"no child of feedbackloop run runs {program!r}")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data_dir = tmp_path_factory.mktemp("local-faults") / ".data"
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("FEEDBACKLOOP_")} | {"FEEDBACKLOOP_DATA_DIR": str(data_dir)}
    run_env = env | {
        "FEEDBACKLOOP_EMBEDDED_BROKER_STORAGE": "s3",
        "FEEDBACKLOOP_RATE_LIMIT_REQUESTS_PER_SECOND": "0",
        "FEEDBACKLOOP_CONSUMER_RETRY_MAX_SECONDS": "1",
    }
    process, output, _ = start_feedbackloop_run(run_env)
    try:
        yield Running(process, env, data_dir, output)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(180)
        except subprocess.TimeoutExpired:
            process.kill()
        print("".join(output))


async def _stream_all(running: Running, events: list[dict], ledger: Ledger) -> None:
    batches = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
    started = time.monotonic()
    interval = SEND_SECONDS / len(batches)
    queue: asyncio.Queue[tuple[int, list[dict]]] = asyncio.Queue()
    for item in enumerate(batches):
        queue.put_nowait(item)

    async def sender() -> None:
        async with httpx.AsyncClient(base_url=running.url("ingest"), timeout=30,
                                     headers={"Authorization": f"Bearer {running.key}"}) as client:
            while not queue.empty():
                index, batch = queue.get_nowait()
                await asyncio.sleep(max(0.0, started + index * interval - time.monotonic()))
                await _send(client, batch, ledger)

    await asyncio.gather(sender(), sender())


def _postmaster(running: Running) -> psutil.Process:
    lock = running.data_dir / "postgres" / "postmaster.pid"
    return psutil.Process(int(lock.read_text().split()[0]))


async def _refused_bodies(running: Running) -> list[str]:
    """Bodies in UTF-16 and UTF-32 with a field the contract does not define: each refused."""
    ids = []
    async with httpx.AsyncClient(base_url=running.url("ingest"), timeout=30,
                                 headers={"Authorization": f"Bearer {running.key}"}) as client:
        for encoding in ("utf-16-le", "utf-16", "utf-32-be", "utf-32"):
            event_id = str(uuid.uuid4())
            body = {"events": [{"type": "feedback.submitted", "event_id": event_id,
                                "response_id": "f-0", "thumb": "down", "sneaky": True}]}
            while True:
                answer = await client.post("/v1/events", headers={
                    "Content-Type": "application/json"},
                    content=orjson.dumps(body).decode().encode(encoding))
                if answer.status_code not in (502, 503):
                    break
                await asyncio.sleep(0.5)
            assert answer.status_code == 415, answer.text
            ids.append(event_id)
    return ids


async def test_feedbackloop_run_heals_its_infrastructure_and_loses_nothing(
    running: Running,
) -> None:
    events = _stream(EVENTS)
    ledger = Ledger(events={e["event_id"]: e for e in events})
    sending = asyncio.create_task(_stream_all(running, events, ledger))
    log: list[str] = []

    async def when_accepted(fraction: float) -> None:
        while len(ledger.accepted) < fraction * len(events) and not sending.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert not sending.done(), f"the stream ended before a fault ({log})"

    await when_accepted(0.15)
    running.child("tansu").send_signal(signal.SIGKILL)
    log.append(f"broker SIGKILLed at {len(ledger.accepted)} accepted")
    await when_accepted(0.35)
    running.child("weed").send_signal(signal.SIGKILL)
    log.append(f"seaweedfs SIGKILLed at {len(ledger.accepted)} accepted")
    await when_accepted(0.55)
    postmaster = _postmaster(running)
    postmaster.send_signal(signal.SIGKILL)
    log.append(f"postmaster {postmaster.pid} SIGKILLed at {len(ledger.accepted)} accepted")
    await when_accepted(0.75)
    refused = await _refused_bodies(running)
    await asyncio.wait_for(sending, timeout=600)
    print("\n".join(["", *log, f"accepted {len(ledger.accepted)} of {len(events)}; retries "
                     f"{dict(ledger.retries)}"]))

    deadline = time.monotonic() + 240
    while True:
        parts = running.parts()
        if all(parts[name] == ("up", 1) for name in INFRASTRUCTURE):
            break
        assert time.monotonic() < deadline, parts
        await asyncio.sleep(1)
    assert not psutil.pid_exists(postmaster.pid) or \
        psutil.Process(postmaster.pid).status() != psutil.STATUS_ZOMBIE, "the postmaster is a zombie"

    database_url = orjson.loads((running.data_dir / "system.json").read_bytes())["database_url"]
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + 300
        while True:
            counts = {name: await connection.fetchval(
                f"SELECT count(*) FROM {name}.processed_events WHERE tenant_id = 'dev'")
                for name in STREAM_CONSUMERS}
            if all(count >= len(ledger.accepted) for count in counts.values()):
                break
            assert time.monotonic() < deadline, counts
            await asyncio.sleep(1)
        assert ledger.accepted == set(ledger.events), "an event never got a 2xx"
        for name in STREAM_CONSUMERS:
            processed = [str(row["event_id"]) for row in await connection.fetch(
                f"SELECT event_id FROM {name}.processed_events WHERE tenant_id = 'dev'")]
            assert len(processed) == len(set(processed)), f"{name}: an id twice"
            assert set(processed) == ledger.accepted, f"{name}: ids differ"
            assert not set(processed) & set(refused), f"{name}: a refused body was applied"
        expected = Counter(e["thumb"] for e in current_thumbs(events))
        for table in ("feedback_minute", "feedback_hour", "feedback_day"):
            row = await connection.fetchrow(
                f"SELECT sum(thumbs_up) AS up, sum(thumbs_down) AS down FROM metrics.{table} "
                "WHERE tenant_id = 'dev'")
            assert (row["up"], row["down"]) == (expected["up"], expected["down"]), table
        # The same data, on demand, to the system's own S3 store (SeaweedFS).
        # No settle time: the stream has just ended, and everything stored is to go.
        exported = await asyncio.to_thread(
            subprocess.run, [*CLI, "export-objects"], cwd=ROOT, capture_output=True, text=True,
            env=running.env | {"FEEDBACKLOOP_OBJECT_EXPORT_SETTLE_SECONDS": "0"}, timeout=300)
        assert exported.returncode == 0, exported.stderr
        rows = {line.split()[1]: int(line.split()[2]) for line in exported.stdout.splitlines()
                if line.startswith("dev ")}
        responses = await connection.fetchval(
            "SELECT count(*) FROM trainer.responses WHERE tenant_id = 'dev'")
        feedback = await connection.fetchval(
            "SELECT count(*) FROM trainer.feedback WHERE tenant_id = 'dev'")
        assert rows == {"examples": rows["examples"], "feedback": feedback,
                        "responses": responses}, exported.stdout
        print(f"{len(ledger.accepted)} events' data exported to SeaweedFS: {rows}")
        print(f"each of {', '.join(STREAM_CONSUMERS)} materialized {len(ledger.accepted)}; "
              f"rollups up {expected['up']} / down {expected['down']} equal a recount; "
              f"parts {parts}")
    finally:
        await connection.close()
