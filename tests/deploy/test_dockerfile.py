"""The Dockerfile (parsed with BuildKit's own parser), its build context, the lock it installs
from, and the healthcheck script it ships."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.support import DOCKERFILE, ROOT, SERVICES, require, settings_from

HEALTHCHECK_SCRIPT = ROOT / "deploy" / "docker" / "healthcheck.py"
LOCK = ROOT / "requirements.lock"
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|[a-z0-9.+]+-dev)\b")
ROOT_USERS = {"root", "0"}


@dataclass
class Stage:
    name: str
    base: str
    commands: list[Any] = field(default_factory=list)

    def of(self, instruction: str) -> list[Any]:
        return [command for command in self.commands if command.cmd.upper() == instruction]


def _substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda match: args.get(match[1], match[0]), text)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    dockerfile_module = require("dockerfile")
    commands = dockerfile_module.parse_file(str(DOCKERFILE))
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for command in commands:
        instruction = command.cmd.upper()
        if instruction == "FROM":
            assert len(command.value) == 3 and command.value[1].upper() == "AS", (
                f"name every stage: {command.original}"
            )
            result.append(Stage(command.value[2], _substitute(command.value[0], global_args)))
        elif not result:
            assert instruction == "ARG", f"only ARG may precede the first FROM: {command.original}"
            name, _, default = command.value[0].partition("=")
            global_args[name] = default
        else:
            result[-1].commands.append(command)
    return result


def test_stages_build_on_slim_python_matching_the_project(stages: list[Stage]) -> None:
    specifiers = require("packaging.specifiers")
    requires_python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert [stage.name for stage in stages] == ["assets", "build", "runtime"]
    for stage in stages[1:]:
        match = re.fullmatch(r"python:(3\.\d+)(?:\.\d+)?-slim(?:-[a-z]+)?", stage.base)
        assert match, f"stage {stage.name} must build on a slim python image, not {stage.base}"
        assert match[1] == "3.11", f"stage {stage.name}: python {match[1]}, expected 3.11"
        assert specifiers.SpecifierSet(requires_python).contains(match[1] + ".0")
    assert len({stage.base for stage in stages[1:]}) == 1, (
        "both stages must share the base image: the virtual environment is copied between them"
    )


def test_build_stage_installs_the_lock_then_the_project_without_resolving(
    stages: list[Stage],
) -> None:
    build = _stage(stages, "build")
    lines = [command.original for command in build.commands]

    def index(pattern: str) -> int:
        found = [number for number, line in enumerate(lines) if re.search(pattern, line)]
        assert found, f"the build stage has no instruction matching {pattern!r}"
        return found[0]

    copy_lock = index(r"^COPY\s+requirements\.lock\s")
    install_lock = index(r"pip install .*-r requirements\.lock")
    copy_code = min(index(r"^COPY\s+libs\s"), index(r"^COPY\s+services\s"))
    install_project = index(r"pip install --no-deps \.")
    assert copy_lock < install_lock < copy_code < install_project, (
        "copy and install the lock before the code, so code changes reuse the dependency layer"
    )
    assert re.search(r"pip check", lines[install_project]), "verify the lock with pip check"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    license_ = project.get("license")
    metadata_files = [project.get("readme"), license_.get("file") if isinstance(license_, dict) else None]
    for name in filter(lambda value: isinstance(value, str), metadata_files):
        assert index(rf"^COPY\s+.*\b{re.escape(name)}\b") < install_project, (
            f"pyproject.toml names {name}: copy it before installing the project"
        )
    assert any("python -m venv /opt/feedbackloop" in line for line in lines)


def test_runtime_stage_is_non_root_without_build_tools(stages: list[Stage]) -> None:
    assets, build, runtime = stages
    users = runtime.of("USER")
    assert users, "the runtime stage must switch to a non-root user"
    user = users[-1].value[0].split(":")[0]
    assert user not in ROOT_USERS, f"runtime runs as {user}"
    for command in runtime.of("RUN"):
        text = " ".join(command.value)
        assert not BUILD_TOOLS.search(text), f"build tools in the runtime stage: {text}"
        assert "pip install" not in text, "the runtime stage installs nothing: copy the venv"
    copies_from = [command for command in runtime.of("COPY") if _flag(command, "from") == build.name]
    assert copies_from, "the runtime stage must copy the virtual environment from the build"
    for command in copies_from:
        assert command.value == ("/opt/feedbackloop", "/opt/feedbackloop"), command.original
    for command in runtime.of("COPY"):
        assert _flag(command, "from") in (None, build.name, assets.name), command.original
    env = _env(runtime)
    assert env["PATH"].split(":")[0] == "/opt/feedbackloop/bin"
    assert env.get("FEEDBACKLOOP_HOST") == "0.0.0.0", "bind all interfaces inside a container"
    assert env.get("FEEDBACKLOOP_ENVIRONMENT") == "production"


def _stage(stages: list[Stage], name: str) -> Stage:
    found = [stage for stage in stages if stage.name == name]
    assert found, f"no stage named {name}"
    return found[0]


def test_assets_stage_builds_the_widget_and_console_from_their_locks(stages: list[Stage]) -> None:
    assets = _stage(stages, "assets")
    assert re.fullmatch(r"node:20-bookworm-slim", assets.base), assets.base
    lines = [command.original for command in assets.commands]
    installs = [number for number, line in enumerate(lines) if "npm ci" in line]
    builds = [number for number, line in enumerate(lines) if "npm run" in line]
    sources = [number for number, line in enumerate(lines) if re.search(r"^COPY\s+libs/\w+/src\s", line)]
    assert installs and builds and sources
    assert max(installs) < min(sources) <= max(sources) < min(builds), (
        "install from the locks before copying the sources, so source changes reuse the npm layer"
    )
    assert all("npm install" not in line for line in lines), "npm ci only: the lock is the dependency set"


def test_runtime_serves_the_assets_it_copies(stages: list[Stage], monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = _stage(stages, "runtime")
    copied = {
        command.value[1]: command.value[0]
        for command in runtime.of("COPY")
        if _flag(command, "from") == "assets"
    }
    assert copied == {
        "/opt/feedbackloop/assets/widget": "/src/libs/widget/dist",
        "/opt/feedbackloop/assets/console": "/src/libs/console/dist",
    }
    env = _env(runtime)
    settings = settings_from(
        {name: env[name] for name in ("FEEDBACKLOOP_WIDGET_DIR", "FEEDBACKLOOP_CONSOLE_DIR")}, monkeypatch
    )
    assert str(settings.widget_dir) == "/opt/feedbackloop/assets/widget"
    assert str(settings.console_dir) == "/opt/feedbackloop/assets/console"


def test_assets_stage_copies_everything_the_builds_read(stages: list[Stage], tmp_path: Path) -> None:
    """Replays the stage's copies into an empty directory and runs its builds there, with the
    node_modules `make widget` and `make console` installed from the same locks: a source the
    build reads but the stage does not copy fails the build here, as it would in the image."""
    assets = _stage(stages, "assets")
    workdir = tmp_path / "src" / "libs"
    for command in assets.commands:
        if command.cmd.upper() == "WORKDIR":
            assert command.value[0] == "/src/libs"
        if command.cmd.upper() != "COPY":
            continue
        *sources, destination = command.value
        target = workdir / destination
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, target / path.name if destination.endswith("/") else target)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
    for package in ("widget", "console"):
        modules = ROOT / "libs" / package / "node_modules"
        if not modules.is_dir():
            pytest.fail(f"{modules} is missing: run `make {package}`")
        (workdir / package / "node_modules").symlink_to(modules)
        built = subprocess.run(
            ["npm", "run", "--silent", "build"], cwd=workdir / package, capture_output=True, text=True
        )
        assert built.returncode == 0, built.stdout + built.stderr
    assert (workdir / "widget" / "dist" / "feedbackloop.js").is_file()
    assert (workdir / "console" / "dist" / "console.js").is_file()
    assert (workdir / "console" / "dist" / "console.css").is_file()


def test_healthcheck_runs_the_shipped_script_with_python(stages: list[Stage]) -> None:
    runtime = stages[-1]
    healthchecks = runtime.of("HEALTHCHECK")
    assert len(healthchecks) == 1, "the runtime stage needs one HEALTHCHECK"
    healthcheck = healthchecks[0]
    assert healthcheck.json, "use the exec form: the slim image has no curl, python is enough"
    assert healthcheck.value[:2] == ("CMD", "python"), healthcheck.original
    script = healthcheck.value[2]
    sources = {
        command.value[-1]: command.value[0] for command in runtime.of("COPY") if not _flag(command, "from")
    }
    assert script in sources, f"{script} is not copied into the runtime stage"
    assert (ROOT / sources[script]).resolve() == HEALTHCHECK_SCRIPT
    assert "/healthz" in HEALTHCHECK_SCRIPT.read_text()
    flags = dict(flag.lstrip("-").split("=", 1) for flag in healthcheck.flags)
    assert {"interval", "timeout", "retries"} <= set(flags), healthcheck.original


def test_default_command_runs_a_service(stages: list[Stage]) -> None:
    commands = stages[-1].of("CMD")
    assert len(commands) == 1 and commands[0].json, "one exec-form CMD"
    argv = list(commands[0].value)
    assert argv[:2] == ["python", "-m"]
    assert argv[2] in {f"services.{name}.main" for name in SERVICES}, argv
    assert not stages[-1].of("ENTRYPOINT"), "no ENTRYPOINT: the command alone picks the process"


def test_exposed_ports_are_the_service_ports(stages: list[Stage], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from({}, monkeypatch)
    expected = {getattr(settings, f"{name}_port") for name in SERVICES}
    exposed = {int(port.split("/")[0]) for command in stages[-1].of("EXPOSE") for port in command.value}
    assert exposed == expected


def test_every_copied_source_is_in_the_build_context(stages: list[Stage]) -> None:
    context = _build_context()
    for stage in stages:
        for command in stage.of("COPY") + stage.of("ADD"):
            if _flag(command, "from"):
                continue
            for source in command.value[:-1]:
                source = source.rstrip("/")
                inside = [path for path in context if path == source or path.startswith(source + "/")]
                assert inside, f"{command.original}: {source} is missing or .dockerignore'd"


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    patterns = _dockerignore()
    for path in (
        ".env",
        ".git/config",
        ".venv/bin/python",
        ".data/kafka/log",
        "tests/unit/test_contract.py",
        "docker-compose.yml",
        "k8s/base/kustomization.yaml",
        "libs/feedbackloop/__pycache__/settings.cpython-311.pyc",
        "feedbackloop.egg-info/PKG-INFO",
    ):
        assert _excluded(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in (
        "pyproject.toml",
        "requirements.lock",
        "libs/feedbackloop/settings.py",
        "services/ingest/main.py",
        "deploy/docker/healthcheck.py",
    ):
        assert not _excluded(path, patterns), f"{path} is needed by the build"


def test_lock_pins_exactly_the_runtime_dependencies() -> None:
    requirements = require("packaging.requirements")
    utils = require("packaging.utils")
    assert LOCK.is_file(), "requirements.lock is missing: the image installs its dependencies from it"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned: dict[str, str] = {}
    for number, raw in enumerate(LOCK.read_text().splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("-"), f"requirements.lock:{number}: options do not belong: {line}"
        requirement = requirements.Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", (
            f"requirements.lock:{number}: pin one exact version: {line}"
        )
        assert requirement.url is None, f"requirements.lock:{number}: no URLs: {line}"
        pinned[utils.canonicalize_name(requirement.name)] = specifiers[0].version
    assert utils.canonicalize_name(project["name"]) not in pinned, "the lock must not pin the project"
    runtime = _runtime_closure(project["dependencies"])
    assert runtime <= set(pinned), f"requirements.lock misses {sorted(runtime - set(pinned))}"
    excluded = {
        utils.canonicalize_name(requirements.Requirement(entry).name)
        for extra in ("embedded", "dev")
        for entry in project.get("optional-dependencies", {}).get(extra, [])
    } - runtime
    leaked = excluded & set(pinned)
    assert not leaked, f"requirements.lock pins packages the images do not need: {sorted(leaked)}"
    for entry in project["dependencies"]:
        requirement = requirements.Requirement(entry)
        name = utils.canonicalize_name(requirement.name)
        assert name in pinned, f"requirements.lock does not pin {requirement.name}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements.lock pins {name}=={pinned[name]}, pyproject.toml wants {entry}"
        )


def _runtime_closure(entries: list[str]) -> set[str]:
    """Every distribution the runtime dependencies pull in (extras and markers applied), read
    from the installed metadata: a package a runtime dependency needs belongs in the lock even
    when a dev tool needs it too."""
    from importlib import metadata

    requirements = require("packaging.requirements")
    utils = require("packaging.utils")
    found: set[str] = set()
    pending = [(requirements.Requirement(entry), frozenset()) for entry in entries]
    while pending:
        requirement, _ = pending.pop()
        name = utils.canonicalize_name(requirement.name)
        extras = frozenset(requirement.extras)
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in found:
            continue
        found.add(key)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        for raw in requires:
            child = requirements.Requirement(raw)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                pending.append((child, frozenset()))
    return {key.split("[", 1)[0] for key in found}


# The healthcheck script itself.


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("feedbackloop_healthcheck", HEALTHCHECK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_recognises_service_command_lines(healthcheck: ModuleType) -> None:
    assert healthcheck.SERVICES == SERVICES
    for name in SERVICES:
        assert healthcheck.service_in(["python", "-m", f"services.{name}.main"]) == name
    assert healthcheck.service_in(["/opt/feedbackloop/bin/python", "-m", "services.query.main"]) == ("query")
    assert healthcheck.service_in(["feedbackloop", "migrate"]) is None
    assert healthcheck.service_in(["python", "-m", "services.cli.main"]) is None
    assert healthcheck.service_in(["python", "services/ingest/main.py"]) is None


def test_healthcheck_finds_the_service_behind_an_init_process(
    healthcheck: ModuleType, tmp_path: Path
) -> None:
    for pid, argv in (
        (1, [b"/sbin/tini", b"--", b"sleep", b"1"]),
        (7, [b"python", b"-m", b"services.metrics.main"]),
    ):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    (tmp_path / "self").mkdir()
    assert healthcheck.running_service(tmp_path) == "metrics"
    (tmp_path / "7" / "cmdline").write_bytes(b"feedbackloop\0migrate\0")
    assert healthcheck.running_service(tmp_path) is None


def test_healthcheck_reads_the_port_from_the_service_settings(
    healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_from({"FEEDBACKLOOP_QUERY_PORT": "9123", "FEEDBACKLOOP_HOST": "0.0.0.0"}, monkeypatch)
    assert healthcheck.service_address("query") == ("127.0.0.1", 9123)


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_healthcheck_exit_code_follows_healthz(healthcheck: ModuleType, status: int, exit_code: int) -> None:
    with _server(status) as port:
        assert healthcheck.main(["healthcheck.py", str(port)]) == exit_code


def test_healthcheck_fails_when_nothing_listens(healthcheck: ModuleType) -> None:
    with _server(200) as port:
        pass
    assert healthcheck.is_live("127.0.0.1", port, timeout=1.0) is False


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def _server(status: int) -> Iterator[int]:
    handler = type("Handler", (_Handler,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# Build context: .dockerignore with Docker's matching rules (patterns match a path or any of its
# parent directories; `**` spans directories; the last matching pattern wins; `!` re-includes).


def _flag(command: Any, name: str) -> str | None:
    for flag in command.flags:
        key, _, value = flag.lstrip("-").partition("=")
        if key == name:
            return value
    return None


def _env(stage: Stage) -> dict[str, str]:
    result: dict[str, str] = {}
    for command in stage.of("ENV"):
        pairs = list(command.value)
        for key, value in zip(pairs[::2], pairs[1::2], strict=True):
            result[key] = _substitute(value, {**os.environ, **result}) if key == "PATH" else value
    return result


def _pattern(text: str) -> re.Pattern[str]:
    regex, index = "", 0
    while index < len(text):
        char = text[index]
        if text.startswith("**", index):
            index += 2
            if text.startswith("/", index):
                index += 1
                regex += "(?:.*/)?"
            else:
                regex += ".*"
            continue
        if char == "*":
            regex += "[^/]*"
        elif char == "?":
            regex += "[^/]"
        elif char == "[":
            end = text.index("]", index)
            regex += text[index : end + 1]
            index = end + 1
            continue
        elif char == "\\":
            regex += re.escape(text[index + 1])
            index += 2
            continue
        else:
            regex += re.escape(char)
        index += 1
    return re.compile(f"^{regex}$")


def _dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        cleaned = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        patterns.append((negate, _pattern(cleaned)))
    return patterns


def _excluded(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    excluded = False
    for negate, pattern in patterns:
        if any(pattern.match(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def _build_context() -> set[str]:
    patterns = _dockerignore()
    skip = {".git", ".venv", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".data"}
    context = set()
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [name for name in subdirectories if name not in skip]
        relative = Path(directory).relative_to(ROOT)
        for name in files:
            path = (relative / name).as_posix()
            if not _excluded(path, patterns):
                context.add(path)
    return context
