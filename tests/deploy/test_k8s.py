"""k8s/: both overlays render with kubectl's kustomize, every resource validates offline (the
Kubernetes schemas of `kubernetes-validate`, the Strimzi CRD schemas vendored in schemas/), and
the manifests agree with the code and with each other: settings, ports, probes, topics,
partitions and replicas."""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import (
    CONSUMERS,
    HTTP_SERVICES,
    OVERLAYS,
    SERVICES,
    consumer_spec,
    named,
    of_kind,
    render,
    require,
    require_project,
    settings_fields,
    settings_from,
)

# The oldest Kubernetes these manifests support, and the newest schema bundled with the validator.
MINIMUM_KUBERNETES = "1.30"
STRIMZI_SCHEMAS = Path(__file__).parent / "schemas" / "strimzi-v1.json"
STRIMZI_GROUP = "kafka.strimzi.io"
SECRET_NAME = "feedbackloop-secrets"
SECRET_VARIABLES = {
    "FEEDBACKLOOP_DATABASE_URL": "database-url",
    "FEEDBACKLOOP_USER_ID_HMAC_SECRET": "user-id-hmac-secret",
}
# The key endpoint secrets are sealed under, for the containers that seal (query, where the CLI
# runs too) and open (webhooks) them, and no other: their keys in the Secret, both optional (a
# system that ran without one keeps the key derived from the HMAC secret).
WEBHOOKS_KEY_VARIABLES = {
    "FEEDBACKLOOP_WEBHOOKS_SECRET_KEY": "webhooks-secret-key",
    "FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS": "webhooks-previous-secret-keys",
}
SEALING_CONTAINERS = {("feedbackloop-query", "query"), ("feedbackloop-webhooks", "webhooks")}
# Placeholders standing in for the Secret's values when the settings are built offline.
SECRET_PLACEHOLDERS = {
    "FEEDBACKLOOP_DATABASE_URL": "postgresql://feedbackloop:password@postgres:5432/feedbackloop",
    "FEEDBACKLOOP_USER_ID_HMAC_SECRET": "k8s-test-hmac-secret-0123456789abcdef",
    "FEEDBACKLOOP_WEBHOOKS_SECRET_KEY": base64.b64encode(b"k8s-test-webhooks-key-of-32bytes").decode(),
    "FEEDBACKLOOP_WEBHOOKS_PREVIOUS_SECRET_KEYS": "",
}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def resources(overlay: str) -> list[dict[str, Any]]:
    return render(overlay)


def deployment(resources: list[dict[str, Any]], service: str) -> dict[str, Any]:
    return named(resources, "Deployment", f"feedbackloop-{service}")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def all_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def main_container(workload: dict[str, Any], service: str) -> dict[str, Any]:
    matching = [c for c in pod_spec(workload)["containers"] if c["name"] == service]
    assert len(matching) == 1, f"{workload['metadata']['name']} has no container {service}"
    return matching[0]


def config_map(resources: list[dict[str, Any]]) -> dict[str, str]:
    maps = [
        m for m in of_kind(resources, "ConfigMap") if m["metadata"]["name"].startswith("feedbackloop-config")
    ]
    assert len(maps) == 1, "expected one feedbackloop-config ConfigMap"
    return maps[0]["data"]


def container_env(resources: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets, with placeholders for Secret references."""
    env: dict[str, str] = {}
    maps = {m["metadata"]["name"]: m.get("data", {}) for m in of_kind(resources, "ConfigMap")}
    for source in container.get("envFrom", []):
        reference = source.get("configMapRef")
        assert reference, f"{container['name']}: only ConfigMaps are loaded with envFrom"
        assert reference["name"] in maps, f"{container['name']}: unknown ConfigMap {reference['name']}"
        env.update(maps[reference["name"]])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            secret = variable["valueFrom"]["secretKeyRef"]
            assert secret["name"] == SECRET_NAME, f"{variable['name']}: secret {secret['name']}"
            env[variable["name"]] = SECRET_PLACEHOLDERS.get(variable["name"], "from-secret")
    return env


def test_overlays_render_the_expected_resources(resources: list[dict[str, Any]], overlay: str) -> None:
    kinds = {(r["kind"], r["metadata"]["name"]) for r in resources}
    for service in SERVICES:
        for kind in ("Deployment", "Service", "PodDisruptionBudget"):
            assert (kind, f"feedbackloop-{service}") in kinds, f"{overlay}: no {kind} for {service}"
    for service in HTTP_SERVICES:
        assert ("HorizontalPodAutoscaler", f"feedbackloop-{service}") in kinds
    assert ("Job", "feedbackloop-migrate") in kinds
    assert of_kind(resources, "KafkaTopic"), f"{overlay}: no KafkaTopic"
    assert len(of_kind(resources, "Kafka")) == 1, f"{overlay}: one Strimzi Kafka cluster"
    namespaces = {r["metadata"].get("namespace") for r in resources}
    assert len(namespaces) == 1 and None not in namespaces, f"{overlay}: namespaces {namespaces}"


def test_builtin_resources_validate_against_the_kubernetes_schemas(
    resources: list[dict[str, Any]], overlay: str
) -> None:
    kubernetes_validate = require("kubernetes_validate")
    versions = sorted({MINIMUM_KUBERNETES, kubernetes_validate.latest_version()})
    builtin = [r for r in resources if not r["apiVersion"].startswith(STRIMZI_GROUP)]
    assert builtin
    for version in versions:
        for resource in builtin:
            label = f"{overlay}: {resource['kind']}/{resource['metadata']['name']} on {version}"
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{label}: {'.'.join(map(str, error.path))}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                pytest.fail(f"{label}: {error.message}")


def test_strimzi_resources_validate_against_the_crd_schemas(
    resources: list[dict[str, Any]], overlay: str
) -> None:
    jsonschema = require("jsonschema")
    vendored = json.loads(STRIMZI_SCHEMAS.read_text())
    strimzi = [r for r in resources if r["apiVersion"].startswith(STRIMZI_GROUP)]
    assert strimzi
    for resource in strimzi:
        label = f"{overlay}: {resource['kind']}/{resource['metadata']['name']}"
        assert resource["apiVersion"] == f"{vendored['group']}/{vendored['version']}", (
            f"{label}: Strimzi serves {vendored['group']}/{vendored['version']}"
        )
        schema = vendored["kinds"].get(resource["kind"])
        assert schema is not None, f"{label}: no vendored schema for {resource['kind']}"
        errors = sorted(
            jsonschema.Draft7Validator(_closed(schema)).iter_errors(resource),
            key=lambda error: list(error.path),
        )
        assert not errors, f"{label}: " + "; ".join(
            f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors
        )
        name = resource["metadata"]["name"]
        assert len(name) <= 63 and name.replace("-", "").isalnum() and name.islower(), label
        if resource["kind"] != "Kafka":
            cluster = resource["metadata"].get("labels", {}).get("strimzi.io/cluster")
            assert cluster in {k["metadata"]["name"] for k in of_kind(resources, "Kafka")}, (
                f"{label}: strimzi.io/cluster={cluster} names no Kafka cluster in this overlay"
            )


def test_kafka_cluster_can_hold_every_topic(resources: list[dict[str, Any]], overlay: str) -> None:
    kafka = of_kind(resources, "Kafka")[0]
    cluster = kafka["metadata"]["name"]
    pools = [
        p
        for p in of_kind(resources, "KafkaNodePool")
        if p["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    ]
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    assert brokers >= 1 and controllers % 2 == 1, f"{overlay}: {brokers} brokers, {controllers} controllers"
    config = kafka["spec"]["kafka"]["config"]
    assert config.get("auto.create.topics.enable") is False, "topics exist only as KafkaTopics"
    assert config["min.insync.replicas"] <= config["default.replication.factor"] <= brokers
    assert config["offsets.topic.replication.factor"] <= brokers
    assert kafka["spec"].get("entityOperator", {}).get("topicOperator") is not None, (
        "the Topic Operator must run for the KafkaTopic resources to take effect"
    )
    for topic in of_kind(resources, "KafkaTopic"):
        spec = topic["spec"]
        assert spec["replicas"] <= brokers, f"{topic['metadata']['name']}: more replicas than brokers"
        assert int(spec["config"]["min.insync.replicas"]) <= spec["replicas"]
        if spec["replicas"] > 1:
            assert int(spec["config"]["min.insync.replicas"]) >= 2, (
                f"{topic['metadata']['name']}: replicated but acks=all waits for one copy only"
            )


def test_topics_are_the_ones_the_code_uses(resources: list[dict[str, Any]], overlay: str) -> None:
    contract = require_project("feedbackloop.contract")
    config = config_map(resources)
    prefix = config["FEEDBACKLOOP_KAFKA_TOPIC_PREFIX"]
    topics = of_kind(resources, "KafkaTopic")
    names = sorted(t["spec"].get("topicName", t["metadata"]["name"]) for t in topics)
    assert names == sorted(contract.TopicNames(prefix).all_physical()), overlay
    for topic in topics:
        label = f"{overlay}: {topic['spec']['topicName']}"
        assert topic["spec"]["partitions"] == int(config["FEEDBACKLOOP_KAFKA_PARTITIONS"]), label
        assert topic["spec"]["replicas"] == int(config["FEEDBACKLOOP_KAFKA_REPLICATION_FACTOR"]), label


def test_services_reach_the_cluster_bootstrap(resources: list[dict[str, Any]]) -> None:
    kafka = of_kind(resources, "Kafka")[0]
    plain = [
        listener
        for listener in kafka["spec"]["kafka"]["listeners"]
        if listener["type"] == "internal" and not listener.get("tls")
    ]
    assert plain, "the services speak PLAINTEXT: the cluster needs an internal plain listener"
    expected = f"{kafka['metadata']['name']}-kafka-bootstrap:{plain[0]['port']}"
    assert config_map(resources)["FEEDBACKLOOP_KAFKA_BOOTSTRAP_SERVERS"] == expected


def test_consumer_replicas_never_exceed_the_partitions(resources: list[dict[str, Any]], overlay: str) -> None:
    contract = require_project("feedbackloop.contract")
    config = config_map(resources)
    names = contract.TopicNames(config["FEEDBACKLOOP_KAFKA_TOPIC_PREFIX"])
    partitions = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in of_kind(resources, "KafkaTopic")}
    autoscaled = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(resources, "HorizontalPodAutoscaler")
    }
    for service in CONSUMERS:
        spec = consumer_spec(service)
        assert spec.name == service, f"services/{service} runs the consumer {spec.name}"
        read = [names.physical(topic) for topic in spec.topics]
        assert all(topic in partitions for topic in read), f"{service} reads a topic with no KafkaTopic"
        limit = min(partitions[topic] for topic in read)
        workload = deployment(resources, service)
        replicas = workload["spec"].get("replicas", 1)
        surge = _surge(workload, replicas)
        assert replicas + surge <= limit, (
            f"{overlay}: {service} may run {replicas} + {surge} (surge) members for {limit} partitions"
        )
        hpa = autoscaled.get(workload["metadata"]["name"])
        if hpa is not None:
            assert hpa["spec"]["maxReplicas"] + surge <= limit, (
                f"{overlay}: {service} autoscales past {limit}"
            )


def test_settings_of_every_container_are_complete(
    resources: list[dict[str, Any]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = settings_fields()
    workloads = [*of_kind(resources, "Deployment"), *of_kind(resources, "Job")]
    assert workloads
    for workload in workloads:
        for container in all_containers(workload):
            label = f"{overlay}: {workload['metadata']['name']}/{container['name']}"
            env = container_env(resources, container)
            unknown = {key for key in env if key.startswith("FEEDBACKLOOP_") and key not in known}
            assert not unknown, f"{label} sets variables no setting reads: {sorted(unknown)}"
            for variable, key in SECRET_VARIABLES.items():
                references = [v for v in container.get("env", []) if v["name"] == variable]
                assert references and references[0].get("valueFrom", {}).get("secretKeyRef") == {
                    "name": SECRET_NAME,
                    "key": key,
                }, f"{label}: {variable} must come from Secret {SECRET_NAME}, key {key}"
            seals = (workload["metadata"]["name"], container["name"]) in SEALING_CONTAINERS
            for variable, key in WEBHOOKS_KEY_VARIABLES.items():
                references = [v for v in container.get("env", []) if v["name"] == variable]
                if not seals:
                    assert not references, f"{label} needs no {variable}"
                    continue
                expected = {"name": SECRET_NAME, "key": key, "optional": True}
                assert references and references[0].get("valueFrom", {}).get("secretKeyRef") == (
                    expected), f"{label}: {variable} must come from Secret {SECRET_NAME}, optional key {key}"
            if seals:
                box_of = require_project("services.webhooks.sealing").SecretBox.from_settings
                # A Secret without the optional keys (a system of before): the derived key.
                absent = {k: v for k, v in env.items() if k not in WEBHOOKS_KEY_VARIABLES}
                box_of(settings_from(absent, monkeypatch))
            settings = settings_from(env, monkeypatch)
            if seals:
                box_of(settings)
            settings.require_runtime()
            assert settings.environment == "production", label
            assert settings.host == "0.0.0.0", label
            assert settings.kafka_enable_idempotence, f"{label}: producers must be idempotent"


def test_no_secret_values_in_the_manifests(resources: list[dict[str, Any]], overlay: str) -> None:
    assert not of_kind(resources, "Secret"), f"{overlay}: Secrets are created by the operator"
    config = config_map(resources)
    for variable in [*SECRET_VARIABLES, *WEBHOOKS_KEY_VARIABLES]:
        assert variable not in config, f"{overlay}: {variable} in the ConfigMap"


def test_probes_and_scraping_use_the_service_port(
    resources: list[dict[str, Any]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for service in SERVICES:
        workload = deployment(resources, service)
        container = main_container(workload, service)
        label = f"{overlay}: {service}"
        assert container["command"] == ["python", "-m", f"services.{service}.main"], label
        settings = settings_from(container_env(resources, container), monkeypatch)
        port = getattr(settings, f"{service}_port")
        ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
        assert list(ports.values()) == [port], f"{label}: container ports {ports}, listens on {port}"

        def resolve(reference: int | str, ports: dict[str | None, int] = ports) -> int:
            return ports[reference] if isinstance(reference, str) else reference

        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container.get(probe, {}).get("httpGet")
            assert get, f"{label}: no HTTP {probe}"
            assert get["path"] == path, f"{label}: {probe} on {get['path']}, expected {path}"
            assert resolve(get["port"]) == port, f"{label}: {probe} on port {get['port']}"
        startup = container.get("startupProbe", {}).get("httpGet")
        if startup:
            assert startup["path"] == "/healthz" and resolve(startup["port"]) == port, label
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", f"{label}: not scraped"
        assert int(annotations["prometheus.io/port"]) == port, f"{label}: scraped on another port"
        assert annotations.get("prometheus.io/path", "/metrics") == "/metrics", label
        service_resource = named(resources, "Service", f"feedbackloop-{service}")
        for service_port in service_resource["spec"]["ports"]:
            assert resolve(service_port.get("targetPort", service_port["port"])) == port, label


def test_selectors_match_their_pods(resources: list[dict[str, Any]], overlay: str) -> None:
    for workload in of_kind(resources, "Deployment"):
        name = workload["metadata"]["name"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert _selects(workload["spec"]["selector"]["matchLabels"], labels), name
        budgets = [
            b
            for b in of_kind(resources, "PodDisruptionBudget")
            if _selects(b["spec"]["selector"]["matchLabels"], labels)
        ]
        assert len(budgets) == 1, f"{overlay}: {name} needs exactly one PodDisruptionBudget"
        budget = budgets[0]["spec"]
        assert "maxUnavailable" in budget or budget.get("minAvailable", 0) < workload["spec"].get(
            "replicas", 1
        ), f"{overlay}: the budget of {name} would block every voluntary disruption"
        services = [
            s for s in of_kind(resources, "Service") if _selects(s["spec"].get("selector", {}), labels)
        ]
        assert [s["metadata"]["name"] for s in services] == [name], f"{overlay}: services of {name}"
    for service in of_kind(resources, "Service"):
        selector = service["spec"]["selector"]
        pods = [
            w
            for w in of_kind(resources, "Deployment")
            if _selects(selector, w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(pods) == 1, (
            f"{overlay}: Service {service['metadata']['name']} selects {len(pods)} Deployments"
        )


def test_stateless_services_autoscale(resources: list[dict[str, Any]], overlay: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(resources, "Deployment")}
    for hpa in of_kind(resources, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments, target
        assert "replicas" not in deployments[target["name"]]["spec"], (
            f"{overlay}: {target['name']} sets replicas, which every apply would reset under the HPA"
        )
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        container = pod_spec(deployments[target["name"]])["containers"][0]
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Resource":
                resource = metric["resource"]["name"]
                assert resource in container["resources"]["requests"], (
                    f"{overlay}: {target['name']} scales on {resource} utilization without a request"
                )
    autoscaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(resources, "HorizontalPodAutoscaler")}
    assert autoscaled == {f"feedbackloop-{service}" for service in HTTP_SERVICES}


def test_every_container_has_resources_and_a_locked_down_context(
    resources: list[dict[str, Any]], overlay: str
) -> None:
    for workload in [*of_kind(resources, "Deployment"), *of_kind(resources, "Job")]:
        pod = pod_spec(workload)
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, workload["metadata"]["name"]
        assert pod.get("automountServiceAccountToken") is False, workload["metadata"]["name"]
        for container in all_containers(workload):
            label = f"{overlay}: {workload['metadata']['name']}/{container['name']}"
            requests = container.get("resources", {}).get("requests", {})
            limits = container.get("resources", {}).get("limits", {})
            assert {"cpu", "memory"} <= set(requests), f"{label}: requests {requests}"
            assert "memory" in limits, f"{label}: no memory limit"
            for resource, request in requests.items():
                limit = limits.get(resource)
                assert limit is None or _quantity(request) <= _quantity(limit), (
                    f"{label}: {resource} request {request} above its limit {limit}"
                )
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, label
            assert context.get("readOnlyRootFilesystem") is True, label
            assert context.get("capabilities", {}).get("drop") == ["ALL"], label


def test_migrations_run_before_any_service(resources: list[dict[str, Any]]) -> None:
    job = named(resources, "Job", "feedbackloop-migrate")
    assert [c["command"] for c in pod_spec(job)["containers"]] == [["feedbackloop", "migrate"]]
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    for service in SERVICES:
        init = pod_spec(deployment(resources, service)).get("initContainers", [])
        assert [c["command"] for c in init] == [["feedbackloop", "migrate"]], (
            f"{service} must not start before the schema exists"
        )


def test_all_containers_run_the_same_image(resources: list[dict[str, Any]], overlay: str) -> None:
    images = {
        container["image"]
        for workload in [*of_kind(resources, "Deployment"), *of_kind(resources, "Job")]
        for container in all_containers(workload)
    }
    assert len(images) == 1, f"{overlay}: {images}"
    image = images.pop()
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), (
        f"{overlay}: pin an image tag, not {image}"
    )


def test_prod_is_durable_and_has_room_to_scale() -> None:
    resources = render("prod")
    config = config_map(resources)
    assert config["FEEDBACKLOOP_KAFKA_REPLICATION_FACTOR"] == "3"
    assert config["FEEDBACKLOOP_KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    for topic in of_kind(resources, "KafkaTopic"):
        assert topic["spec"]["replicas"] == 3, topic["metadata"]["name"]
        assert int(topic["spec"]["config"]["min.insync.replicas"]) == 2, topic["metadata"]["name"]
    kafka = of_kind(resources, "Kafka")[0]["spec"]["kafka"]["config"]
    assert kafka["default.replication.factor"] == 3
    assert kafka["min.insync.replicas"] == 2
    assert kafka["offsets.topic.replication.factor"] == 3
    assert kafka["transaction.state.log.min.isr"] == 2
    assert kafka.get("unclean.leader.election.enable") is False
    brokers = sum(
        pool["spec"]["replicas"]
        for pool in of_kind(resources, "KafkaNodePool")
        if "broker" in pool["spec"]["roles"]
    )
    assert brokers >= 3
    for pool in of_kind(resources, "KafkaNodePool"):
        for volume in pool["spec"]["storage"].get("volumes", [pool["spec"]["storage"]]):
            assert volume["type"] == "persistent-claim", "production brokers keep their log on disk"
            assert volume.get("deleteClaim", False) is False, "deleting the cluster must keep the log"
    for service in CONSUMERS:
        assert deployment(resources, service)["spec"]["replicas"] >= 2, f"{service}: no redundancy"
    for hpa in of_kind(resources, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["minReplicas"] >= 2, hpa["metadata"]["name"]


_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?")
_SCALE = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def _quantity(value: int | float | str) -> float:
    """A Kubernetes resource quantity in base units; the API server refuses anything else."""
    match = _QUANTITY.fullmatch(str(value))
    assert match, f"{value!r} is not a resource quantity"
    return float(match[1]) * _SCALE[match[2]]


def _surge(workload: dict[str, Any], replicas: int) -> int:
    strategy = workload["spec"].get("strategy", {})
    if strategy.get("type") == "Recreate":
        return 0
    surge = strategy.get("rollingUpdate", {}).get("maxSurge", "25%")
    if isinstance(surge, str) and surge.endswith("%"):
        return math.ceil(replicas * int(surge[:-1]) / 100)
    return int(surge)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def _closed(schema: Any) -> Any:
    """The schema with unknown fields refused where the API server would refuse them (kubectl
    validates strictly by default): objects with declared properties and no preserve marker."""
    schema = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
                and node is not schema["properties"].get("metadata")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema
