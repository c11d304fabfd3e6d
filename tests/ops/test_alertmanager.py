"""deploy/alertmanager checked by amtool and by a real Alertmanager: the config loads, alerts
route to page or ticket by severity, and a drop alert inhibits the plain low-approval alert of
the same action type (and only of the same action type)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.ops.tools import ROOT, alertmanager_command

CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def _amtool(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "amtool"), *args], capture_output=True, text=True, timeout=60
    )


def test_config_is_valid(prometheus_bin: Path) -> None:
    result = _amtool(prometheus_bin, "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=FeedbackloopApprovalDropDay", "severity=page", "action_type=todo"], "page"),
        (["alertname=FeedbackloopConsumerNotCommitting", "severity=page", "service=x"], "page"),
        (["alertname=FeedbackloopApprovalLow", "severity=ticket", "action_type=todo"], "ticket"),
        (["alertname=SomethingUnlabelled"], "ticket"),
    ],
)
def test_routing(prometheus_bin: Path, labels: list[str], receiver: str) -> None:
    result = _amtool(
        prometheus_bin, "config", "routes", "test", f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}", *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def alertmanager(prometheus_bin: Path, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        alertmanager_command(
            prometheus_bin,
            f"--config.file={CONFIG}",
            f"--storage.path={tmp_path}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ),
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "alertmanager.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _ready(url):
            assert process.poll() is None, (tmp_path / "alertmanager.log").read_text()
            assert time.monotonic() < deadline, "alertmanager did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _request(url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"},
        method="POST" if data else "GET",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def test_a_drop_inhibits_low_approval_of_the_same_action_type(alertmanager: str) -> None:
    now = datetime.now(UTC)
    window = {"startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}
    _request(f"{alertmanager}/api/v2/alerts", [
        {"labels": {"alertname": "FeedbackloopApprovalDropDay", "severity": "page",
                    "action_type": "todo"}, **window},
        {"labels": {"alertname": "FeedbackloopApprovalLow", "severity": "ticket",
                    "action_type": "todo"}, **window},
        {"labels": {"alertname": "FeedbackloopApprovalLow", "severity": "ticket",
                    "action_type": "email"}, **window},
    ])
    deadline = time.monotonic() + 20
    while True:
        alerts = _request(f"{alertmanager}/api/v2/alerts")
        states = {
            (a["labels"]["alertname"], a["labels"]["action_type"]): a["status"]["state"]
            for a in alerts
        }
        if len(states) == 3 and "unprocessed" not in states.values():
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
    assert states == {
        ("FeedbackloopApprovalDropDay", "todo"): "active",
        ("FeedbackloopApprovalLow", "todo"): "suppressed",
        ("FeedbackloopApprovalLow", "email"): "active",
    }
