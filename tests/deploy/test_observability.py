"""deploy/prometheus, deploy/alertmanager and deploy/grafana: wired to the compose services, and
speaking of metrics and label values the code actually exports."""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.support import (
    CONSUMERS,
    ROOT,
    SERVICES,
    compose_model,
    consumer_spec,
    environment_of,
    load_yaml,
    require_project,
    settings_from,
)

DEPLOY = ROOT / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"
SEVERITIES = ("page", "ticket")
# A metric name, but not the middle of a recording rule's `level:metric:operations` name.
METRIC_NAME = re.compile(r"(?<![\w:])feedbackloop_[a-z0-9_]+\b(?!:)")
RECORDED_NAME = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")
INPUT_RATE_RULE = "feedbackloop:consumer_input_events:rate15m"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_model()


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return load_yaml(PROMETHEUS_CONFIG)


@pytest.fixture(scope="module")
def rule_groups(prometheus: dict[str, Any]) -> list[dict[str, Any]]:
    files = sorted(
        {
            Path(path)
            for pattern in prometheus.get("rule_files", [])
            for path in glob.glob(str(PROMETHEUS_CONFIG.parent / pattern))
        }
    )
    assert files, "rule_files matches no file"
    groups = []
    for file in files:
        document = load_yaml(file)
        assert set(document) == {"groups"}, f"{file.name}: a rules file holds `groups` only"
        groups.extend(document["groups"])
    return groups


@pytest.fixture(scope="module")
def exported_metrics() -> set[str]:
    """Every series name the services export, from the code's own metric declarations."""
    observability = require_project("feedbackloop.observability")
    prometheus_client = require_project("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    observability.IngestMetrics(registry)
    observability.ConsumerMetrics(registry, "profiles")
    gauges = require_project("services.query.gauges")
    gauges.AnalyticsGauges(registry, action_types=[], models=[])
    require_project("services.query.experiments_gauges").ExperimentGauges(registry)
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    return {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}


def _mount_target(service: dict[str, Any], source: Path) -> str:
    for volume in service.get("volumes", []):
        host, target = volume.split(":")[:2]
        if (ROOT / host).resolve() == source.resolve():
            return target
    raise AssertionError(f"{service['image']} does not mount {source.relative_to(ROOT)}")


def _container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(entry).split("/")[0].rsplit(":", 1)[-1]) for entry in service.get("ports", [])}


def test_prometheus_scrapes_every_service_on_its_port(
    prometheus: dict[str, Any], compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    targets = {job["job_name"]: _targets(job) for job in prometheus["scrape_configs"]}
    for service in SERVICES:
        settings = settings_from(environment_of(compose["services"][service]), monkeypatch)
        expected = f"{service}:{getattr(settings, f'{service}_port')}"
        assert targets.get(service) == [expected], f"job {service} must scrape {expected}"
    for job in prometheus["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for config in job.get("static_configs", []) + job.get("dns_sd_configs", []):
            assert "service" not in config.get("labels", {}), (
                "consumer series carry their own `service` label; a target label would rename it"
            )


def test_prometheus_loads_its_config_and_rules_from_the_mounted_folder(
    prometheus: dict[str, Any], compose: dict[str, Any]
) -> None:
    service = compose["services"]["prometheus"]
    mounted = _mount_target(service, PROMETHEUS_CONFIG.parent)
    assert f"--config.file={mounted}/{PROMETHEUS_CONFIG.name}" in service["command"]
    for pattern in prometheus["rule_files"]:
        assert not Path(pattern).is_absolute(), "relative rule paths resolve in compose and locally"
    alertmanagers = [
        target
        for manager in prometheus["alerting"]["alertmanagers"]
        for config in manager["static_configs"]
        for target in config["targets"]
    ]
    host, port = alertmanagers[0].split(":")
    assert len(alertmanagers) == 1 and host in compose["services"]
    assert int(port) in _container_ports(compose["services"][host])


def test_rules_are_well_formed_and_alerts_carry_a_routed_severity(
    rule_groups: list[dict[str, Any]],
) -> None:
    names = [group["name"] for group in rule_groups]
    assert len(names) == len(set(names)), f"duplicate rule groups: {names}"
    records = [rule for group in rule_groups for rule in group["rules"] if "record" in rule]
    alerts = [rule for group in rule_groups for rule in group["rules"] if "alert" in rule]
    assert any(
        "feedbackloop_ingest_events_total" in r["expr"] and 'outcome="accepted"' in r["expr"] for r in records
    )
    assert any("feedbackloop_consumer_last_commit_timestamp_seconds" in a["expr"] for a in alerts)
    for rule in records + alerts:
        assert set(rule) & {"record", "alert"} and rule["expr"].strip()
    for record in records:
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", record["record"]), (
            f"{record['record']}: recording rules are named level:metric:operations"
        )
    for alert in alerts:
        assert alert["labels"]["severity"] in SEVERITIES, alert["alert"]
        assert alert["annotations"].get("summary"), alert["alert"]


def test_rules_and_dashboards_use_metrics_the_code_exports(
    rule_groups: list[dict[str, Any]], exported_metrics: set[str]
) -> None:
    expressions = [rule["expr"] for group in rule_groups for rule in group["rules"]]
    expressions += [target["expr"] for _, target in _dashboard_targets()]
    used = {name for expression in expressions for name in METRIC_NAME.findall(expression)}
    assert used, "no feedbackloop metric is used"
    unknown = used - exported_metrics
    assert not unknown, f"not exported by any service: {sorted(unknown)}"
    recorded = {rule["record"] for group in rule_groups for rule in group["rules"] if "record" in rule}
    used_records = {name for expression in expressions for name in RECORDED_NAME.findall(expression)}
    assert used_records <= recorded, f"never recorded: {sorted(used_records - recorded)}"
    observability = require_project("feedbackloop.observability")
    for expression in expressions:
        for outcome in re.findall(r'outcome="([^"]+)"', expression):
            assert outcome in observability.INGEST_OUTCOMES | observability.CONSUMER_OUTCOMES, outcome


def test_consumer_input_rates_follow_the_topics_each_consumer_reads(
    rule_groups: list[dict[str, Any]],
) -> None:
    contract = require_project("feedbackloop.contract")
    rules = {
        rule["labels"]["service"]: rule["expr"]
        for group in rule_groups
        for rule in group["rules"]
        if rule.get("record") == INPUT_RATE_RULE
    }
    assert set(rules) == set(CONSUMERS), "one input rate per consumer"
    for service, expression in rules.items():
        found = re.search(r'event_type=~"((?:[^"\\]|\\.)*)"', expression)
        assert found, f"{service}: the input rate selects no event types"
        pattern = re.compile(found[1].replace("\\\\", "\\"))
        selected = {event for event in contract.EVENT_TYPES if pattern.fullmatch(event)}
        topics = set(consumer_spec(service).topics)
        expected = {event for event, topic in contract.TOPIC_OF_TYPE.items() if topic in topics}
        assert selected == expected, f"{service} reads {sorted(expected)}, the rule counts {sorted(selected)}"


def test_alertmanager_routes_page_and_ticket(compose: dict[str, Any]) -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    receivers = {receiver["name"] for receiver in config["receivers"]}
    route = config["route"]
    assert route["receiver"] in receivers, "the default route needs a receiver"
    routed = {}
    for child in route.get("routes", []):
        assert child["receiver"] in receivers, child
        for matcher in child.get("matchers", []):
            found = re.fullmatch(r'\s*severity\s*=\s*"?([a-z]+)"?\s*', matcher)
            if found:
                routed[found[1]] = child["receiver"]
    assert routed == {severity: severity for severity in SEVERITIES}, routed
    for rule in config.get("inhibit_rules", []):
        assert rule.get("equal"), "an inhibit rule without `equal` silences unrelated alerts"
    service = compose["services"]["alertmanager"]
    mounted = _mount_target(service, ALERTMANAGER_CONFIG.parent)
    assert f"--config.file={mounted}/{ALERTMANAGER_CONFIG.name}" in service["command"]


def test_grafana_provisioning_points_at_the_compose_services(compose: dict[str, Any]) -> None:
    service = compose["services"]["grafana"]
    provisioning = _mount_target(service, GRAFANA_PROVISIONING)
    assert provisioning == "/etc/grafana/provisioning", "Grafana reads provisioning from there"
    datasources = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    prometheus = [source for source in datasources if source["type"] == "prometheus"]
    assert len(prometheus) == 1 and prometheus[0].get("uid")
    url = urlsplit(prometheus[0]["url"])
    assert url.hostname in compose["services"], f"{url.hostname} is no compose service"
    assert url.port in _container_ports(compose["services"][url.hostname])
    providers = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "feedbackloop.yml")["providers"]
    for provider in providers:
        path = provider["options"]["path"]
        assert path == _mount_target(service, DEPLOY / "grafana" / "dashboards"), (
            f"dashboard provider reads {path}, which is not where the dashboards are mounted"
        )


def test_dashboards_are_valid_and_use_the_provisioned_datasource() -> None:
    datasources = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    uids = {source["uid"] for source in datasources}
    dashboards = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    assert dashboards, "no dashboard"
    seen = set()
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard.get("uid") and dashboard["uid"] not in seen, f"{path.name}: uid"
        assert dashboard.get("id") is None, f"{path.name}: provisioned dashboards carry no id"
        seen.add(dashboard["uid"])
        panel_ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(panel_ids) == len(set(panel_ids)), f"{path.name}: duplicate panel ids"
    targets = _dashboard_targets()
    assert targets
    for panel, target in targets:
        for source in (panel.get("datasource"), target.get("datasource")):
            if source is not None:
                assert source.get("uid") in uids, f"{panel['title']}: datasource {source}"
    expressions = " ".join(target["expr"] for _, target in targets)
    assert "feedbackloop_ingest_events_total" in expressions and "outcome" in expressions
    assert "feedbackloop_consumer_messages_total" in expressions


def _targets(job: dict[str, Any]) -> list[str]:
    """host:port of every target of a scrape job, static or found by DNS."""
    targets = [target for config in job.get("static_configs", []) for target in config["targets"]]
    for config in job.get("dns_sd_configs", []):
        assert config.get("type", "SRV") == "A", "compose DNS answers A records, not SRV"
        targets += [f"{name}:{config['port']}" for name in config["names"]]
    return targets


def _dashboard_targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    result = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                result.append((panel, target))
    return result
