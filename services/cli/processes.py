"""The processes `feedbackloop run` supervises: a `Part` (any process it started, with how to
restart it) and a `ServiceProcess` (one service as `python -m services.<name>.main`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Part:
    """One supervised process of the local system.

    `restart` starts it again (blocking until it is ready, raising if it cannot start);
    `exit_code` is None while it runs. `after_restart` runs once it is back.
    """

    name: str
    exit_code: Callable[[], int | None]
    restart: Callable[[], None]
    log_path: Path
    after_restart: Callable[[], str | None] | None = None
    failures: int = 0
    restarts: int = 0
    up_since: float = field(default_factory=time.monotonic)
    retry_at: float | None = None
    last_exit: int | None = None

    @property
    def state(self) -> str:
        return "up" if self.retry_at is None else "restarting"

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "state": self.state, "restarts": self.restarts,
                "last_exit": self.last_exit, "log": str(self.log_path)}


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = field(default=0.0)

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}.main"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.started_at = time.monotonic()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def exit_code_of(process: subprocess.Popen[bytes] | None) -> int | None:
    """None while `process` runs; its exit code once it has ended (reaping it)."""
    if process is None:
        return -1
    return process.poll()
