"""`make run` as a person uses it: `feedbackloop run` starts the whole system on embedded
infrastructure, the README's other commands find it with no settings, and Ctrl-C stops it in
order. Without a running system, those commands say what to do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from tests.infra import start_feedbackloop_run

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "services.cli.main"]


def _clean_env(data_dir: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("FEEDBACKLOOP_")}
    return env | {"FEEDBACKLOOP_DATA_DIR": str(data_dir)}


@dataclass
class LocalSystem:
    process: subprocess.Popen[str]
    env: dict[str, str]
    output: list[str]
    reader: threading.Thread

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        # Only the data dir: everything else must come from the running system.
        return subprocess.run([*CLI, *args], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=120)


@pytest.fixture(scope="module")
def local_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    data_dir = tmp_path_factory.mktemp("make-run") / ".data"
    run_env = _clean_env(data_dir)
    # Memory keeps the test quick; the durable broker log is tested in test_broker_restart.
    run_env["FEEDBACKLOOP_EMBEDDED_BROKER_STORAGE"] = "memory"
    process, output, reader = start_feedbackloop_run(run_env)
    try:
        yield LocalSystem(process, _clean_env(data_dir), output, reader)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()


def _printed_key(output: list[str]) -> str:
    line = next(line for line in output if line.strip().startswith("API key"))
    return line.split()[2]


def test_the_readme_commands_find_the_running_system(local_system: LocalSystem) -> None:
    created = local_system.cli("keys", "create", "--tenant", "acme", "--name", "web",
                               "--scopes", "ingest,read")
    assert created.returncode == 0, created.stderr
    key = next(line.split()[1] for line in created.stdout.splitlines() if line.startswith("key:"))
    listed = local_system.cli("keys", "list")
    assert listed.returncode == 0 and "acme" in listed.stdout, listed.stderr

    ingest_url = next(line.split()[1] for line in local_system.output
                      if line.split()[:1] == ["ingest"] and "http://" in line)
    sent = httpx.post(f"{ingest_url}/v1/feedback", headers={"Authorization": f"Bearer {key}"},
                      json={"response_id": "r1", "thumb": "up", "user_id": "u1"}, timeout=30)
    assert sent.status_code == 202, sent.text
    # The feedback topic holds the event, read with the command the README gives for kcat's.
    read = local_system.cli("read", "feedback", "--values")
    assert read.returncode == 0, read.stderr
    assert any(orjson.loads(line)["payload"]["response_id"] == "r1"
               for line in read.stdout.splitlines()), read.stdout
    letters = local_system.cli("dead-letters", "list", "--topic", "feedback")
    assert letters.returncode == 0 and "0 dead letter(s)" in letters.stdout, letters.stderr
    export = local_system.cli("export", "--tenant", "acme", "--format", "trl-kto",
                              "--out", str(Path(local_system.env["FEEDBACKLOOP_DATA_DIR"]) / "x"))
    assert export.returncode == 0, export.stderr
    assert _printed_key(local_system.output)
    # Its webhook receivers may be on this machine, and it says so.
    assert any("FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS=true" in line
               for line in local_system.output), local_system.output
    # The console link it prints opens the sign-in page, and the printed key signs in.
    console_url = next(line.split()[1] for line in local_system.output
                       if line.split()[:1] == ["console"] and "http://" in line)
    page = httpx.get(console_url, timeout=30, follow_redirects=True)
    assert page.status_code == 200 and "Sign in" in page.text, page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    signed = httpx.post(console_url + "sign-in", data={"api_key": _printed_key(local_system.output)},
                        timeout=30)
    assert signed.status_code == 303 and signed.headers["location"] == "/console/queue"


def _child(system: LocalSystem, marker: str) -> psutil.Process:
    for child in psutil.Process(system.process.pid).children():
        if any(marker in part for part in child.cmdline()):
            return child
    raise AssertionError(f"no child process of feedbackloop run matches {marker!r}")


def _parts(system: LocalSystem) -> dict[str, tuple[str, int]]:
    report = system.cli("status")
    assert report.returncode == 0, report.stderr
    return {line.split()[0]: (line.split()[1], int(line.split()[3].rstrip(",")))
            for line in report.stdout.splitlines()[1:]}


def test_every_part_that_dies_is_reaped_and_restarted(local_system: LocalSystem) -> None:
    assert set(_parts(local_system)) == {"postgres", "broker", "ingest", "profiles", "learner",
                                         "trainer", "metrics", "webhooks", "query"}
    victims = {"postgres": psutil.Process(_postmaster_pid(local_system)),
               "broker": _child(local_system, "tansu"),
               "metrics": _child(local_system, "services.metrics.main")}
    for victim in victims.values():
        victim.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        parts = _parts(local_system)
        if all(parts[name] == ("up", 1) for name in victims):
            break
        assert time.monotonic() < deadline, parts
        time.sleep(0.5)
    assert all(restarts == 0 for name, (_, restarts) in parts.items() if name not in victims)
    for victim in victims.values():
        assert not victim.is_running() or victim.status() != psutil.STATUS_ZOMBIE
    # The restarted system takes and serves events again.
    key = _printed_key(local_system.output)
    ingest, query = (next(line.split()[1] for line in local_system.output
                          if line.split()[:1] == [name] and "http://" in line)
                     for name in ("ingest", "query"))
    deadline = time.monotonic() + 120
    while True:
        sent = httpx.post(f"{ingest}/v1/feedback", headers={"Authorization": f"Bearer {key}"},
                          json={"response_id": "after", "thumb": "down", "user_id": "u2",
                                "action_type": "healed"}, timeout=30)
        if sent.status_code == 202:
            break
        assert sent.status_code == 503 and time.monotonic() < deadline, sent.text
        time.sleep(1)
    deadline = time.monotonic() + 120
    while True:
        approval = httpx.get(f"{query}/v1/analytics/approval?group_by=action_type",
                             headers={"Authorization": f"Bearer {key}"}, timeout=30)
        groups = {g["group"]: g for g in approval.json().get("groups", [])} \
            if approval.status_code == 200 else {}
        if groups.get("healed", {}).get("down") == 1:
            break
        assert time.monotonic() < deadline, approval.text
        time.sleep(1)
    restarted = "".join(local_system.output)
    assert "postgres restarted" in restarted and "broker restarted" in restarted, restarted


def _postmaster_pid(system: LocalSystem) -> int:
    lock = Path(system.env["FEEDBACKLOOP_DATA_DIR"]) / "postgres" / "postmaster.pid"
    return int(lock.read_text().split()[0])


def test_ctrl_c_stops_everything_in_order_and_forgets_the_system(
    local_system: LocalSystem,
) -> None:
    data_dir = Path(local_system.env["FEEDBACKLOOP_DATA_DIR"])
    assert (data_dir / "system.json").exists()
    local_system.process.send_signal(signal.SIGINT)
    assert local_system.process.wait(timeout=120) == 0
    local_system.reader.join(timeout=10)
    rest = "".join(local_system.output)
    stopped = [line.split()[0] for line in rest.splitlines() if line.strip().endswith("stopped")]
    assert stopped[0] == "ingest" and stopped[-1] == "postgres", rest
    assert stopped.index("query") > stopped.index("metrics"), rest
    assert not (data_dir / "system.json").exists()
    after = local_system.cli("keys", "list")
    assert after.returncode != 0
    assert "make run" in after.stderr and "FEEDBACKLOOP_DATABASE_URL" in after.stderr


def test_without_a_system_each_command_says_what_to_set(tmp_path: Path) -> None:
    env = _clean_env(tmp_path / ".data")
    for args, variable in ((["keys", "list"], "FEEDBACKLOOP_DATABASE_URL"),
                           (["export", "--tenant", "t", "--format", "trl-kto", "--out",
                             str(tmp_path / "x")], "FEEDBACKLOOP_DATABASE_URL"),
                           (["dead-letters", "list", "--topic", "feedback"],
                            "FEEDBACKLOOP_KAFKA_BOOTSTRAP_SERVERS")):
        result = subprocess.run([*CLI, *args], env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode != 0, args
        assert variable in result.stderr and "make run" in result.stderr, result.stderr
