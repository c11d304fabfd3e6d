"""The other commands take the database and broker of a running `feedbackloop run` from its
`system.json` only while the process that wrote it runs: a dead one (even a zombie, dead but
not yet reaped) is not running."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pydantic import SecretStr

from feedbackloop.settings import Settings
from services.cli.local_system import SYSTEM_FILE, with_local_system


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, database_url=SecretStr(""), kafka_bootstrap_servers="")


def _write(data_dir: Path, pid: int) -> None:
    (data_dir / SYSTEM_FILE).write_text(json.dumps({
        "pid": pid, "database_url": "postgresql://feedbackloop@127.0.0.1:1/x",
        "kafka_bootstrap_servers": "127.0.0.1:2", "kafka_enable_idempotence": False,
    }))


def test_a_running_writer_lends_its_database_and_broker(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _write(tmp_path, child.pid)
        found = with_local_system(_settings(tmp_path))
        assert found.kafka_bootstrap_servers == "127.0.0.1:2"
        assert found.database_url.get_secret_value().endswith("127.0.0.1:1/x")
    finally:
        child.kill()
        child.wait()


def test_a_zombie_writer_is_not_running(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.05)
        _write(tmp_path, child.pid)
        found = with_local_system(_settings(tmp_path))
        assert found.kafka_bootstrap_servers == ""
        assert found.database_url.get_secret_value() == ""
    finally:
        child.wait()
