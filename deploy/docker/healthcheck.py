"""Container liveness check: GET /healthz of the feedbackloop service running in this container.

One HEALTHCHECK fits every service: the service is found in the process list
(`python -m services.<name>.main`) and its port and bind address come from the same settings the
service reads. A port given as the only argument skips the discovery.

Exits 0 when /healthz answers 200 and 1 otherwise, as Docker expects.
"""

from __future__ import annotations

import itertools
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

SERVICES = ("ingest", "query", "profiles", "learner", "trainer", "metrics", "webhooks")
TIMEOUT_SECONDS = 3.0
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")


def service_in(argv: Sequence[str]) -> str | None:
    """The service a command line runs, if it is `python -m services.<name>.main`."""
    for flag, module in itertools.pairwise(argv):
        if flag != "-m":
            continue
        parts = module.split(".")
        if len(parts) == 3 and parts[0] == "services" and parts[2] == "main":
            return parts[1] if parts[1] in SERVICES else None
    return None


def running_service(proc: Path = Path("/proc")) -> str | None:
    """The first service process found; PID 1 unless an init process runs in front of it."""
    pids = sorted(int(entry.name) for entry in proc.iterdir() if entry.name.isdigit())
    for pid in pids:
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        service = service_in([part.decode(errors="replace") for part in raw.split(b"\0")])
        if service is not None:
            return service
    return None


def service_address(service: str) -> tuple[str, int]:
    from feedbackloop.settings import Settings

    settings = Settings()
    host = "127.0.0.1" if settings.host in WILDCARD_ADDRESSES else settings.host
    return host, int(getattr(settings, f"{service}_port"))


def is_live(host: str, port: int, timeout: float = TIMEOUT_SECONDS) -> bool:
    url = f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        host, port = "127.0.0.1", int(argv[1])
    else:
        service = running_service()
        if service is None:
            print("no feedbackloop service is running in this container", file=sys.stderr)
            return 1
        try:
            host, port = service_address(service)
        except Exception as error:
            print(f"cannot read the {service} settings: {error}", file=sys.stderr)
            return 1
    if is_live(host, port):
        return 0
    print(f"/healthz on {host} port {port} did not answer 200", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
