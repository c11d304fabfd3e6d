"""Where the system `feedbackloop run` (`make run`) started on this machine can be reached, so
the other commands (`keys`, `export`, `dead-letters`, `migrate`) work beside it with no settings.

`feedbackloop run` writes `<data dir>/system.json` once its PostgreSQL and broker are up and
removes it when it stops. A command that finds no database or broker in its settings takes them
from that file, if the process that wrote it is still running. Settings always win.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from feedbackloop.embedded import process_alive
from feedbackloop.settings import Settings

SYSTEM_FILE = "system.json"


def record(
    data_dir: Path,
    *,
    database_url: str,
    bootstrap: str,
    embedded_broker: bool,
    parts: list[dict[str, object]] | None = None,
    object_export: dict[str, object] | None = None,
) -> None:
    """Note, for the other commands, where this process's system runs and how its parts are."""
    path = data_dir / SYSTEM_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({
        "pid": os.getpid(),
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap,
        # The embedded broker cannot issue producer ids.
        "kafka_enable_idempotence": not embedded_broker,
        "parts": parts or [],
        # Where exports to object storage go: the embedded SeaweedFS, when it runs.
        "object_export": object_export or {},
    }))
    temporary.chmod(0o600)
    temporary.replace(path)


def forget(data_dir: Path) -> None:
    path = data_dir / SYSTEM_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _running_system(settings: Settings) -> dict[str, Any] | None:
    """What the running `feedbackloop run` wrote of itself; None when none is running."""
    try:
        found = json.loads((settings.data_dir / SYSTEM_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict):
        return None
    pid = found.get("pid")
    return found if isinstance(pid, int) and pid > 0 and process_alive(pid) else None


def with_local_system(settings: Settings) -> Settings:
    """`settings`, with the database and broker of a running `feedbackloop run` filled in
    where the settings name none (and, with its database, its HMAC secret if none is set)."""
    if settings.database_url.get_secret_value() and settings.kafka_bootstrap_servers:
        return settings
    found = _running_system(settings)
    if found is None:
        return settings
    update: dict[str, object] = {}
    if not settings.database_url.get_secret_value() and found.get("database_url"):
        update["database_url"] = SecretStr(str(found["database_url"]))
        # Its services' HMAC secret too (kept by `feedbackloop run`), so what the CLI derives
        # from it (the key sealing webhook endpoint secrets) is theirs.
        if not settings.user_id_hmac_secret.get_secret_value():
            try:
                local = json.loads((settings.data_dir / "local-secrets.json").read_text())
            except (OSError, ValueError):
                local = None
            if isinstance(local, dict) and isinstance(local.get("user_id_hmac_secret"), str):
                update["user_id_hmac_secret"] = SecretStr(local["user_id_hmac_secret"])
    if not settings.kafka_bootstrap_servers and found.get("kafka_bootstrap_servers"):
        update["kafka_bootstrap_servers"] = str(found["kafka_bootstrap_servers"])
        update["kafka_enable_idempotence"] = bool(found.get("kafka_enable_idempotence", True))
    if not settings.object_export_endpoint and isinstance(found.get("object_export"), dict):
        for name, value in found["object_export"].items():
            if name in ("endpoint", "bucket", "prefix", "allow_http"):
                update[f"object_export_{name}"] = value
            elif name in ("access_key_id", "secret_access_key"):
                update[f"object_export_{name}"] = SecretStr(str(value))
    return settings.model_copy(update=update)


def status(settings: Settings) -> str | None:
    """The parts of the running local system and their state, one line each; None when no
    system started by `feedbackloop run` is running."""
    found = _running_system(settings)
    if found is None:
        return None
    lines = [f"feedbackloop run (pid {found['pid']})"]
    for part in found.get("parts", []):
        exited = f", last exit code {part['last_exit']}" if part.get("last_exit") is not None else ""
        lines.append(f"  {part['name']:<10} {part['state']:<11} restarts {part['restarts']}{exited}")
    return "\n".join(lines)


def missing(what: str, variable: str, settings: Settings) -> str:
    """What to say when neither the settings nor a running local system name `what`."""
    where = (settings.data_dir / SYSTEM_FILE).resolve()
    return (
        f"no {what} to connect to: {variable} is not set, and no system started by `make run` "
        f"is running (it records itself in {where}). Start one with `make run` in another "
        f"terminal, or set {variable}."
    )
