"""deploy/prometheus checked by promtool itself: the config and rule files load, every alert
has unit tests that show it firing and staying silent, and every dashboard query parses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.ops.tools import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))


def _promtool(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "promtool"), *args], capture_output=True, text=True, timeout=120
    )


def test_prometheus_config_and_rules_load(prometheus_bin: Path) -> None:
    result = _promtool(prometheus_bin, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules found" in result.stdout


def test_rule_unit_tests_pass(prometheus_bin: Path) -> None:
    assert RULE_TESTS, "no promtool rule tests"
    result = _promtool(prometheus_bin, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    alerts = {
        rule["alert"]
        for path in sorted((PROMETHEUS / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - silent == set(), "alerts never shown silent"


def test_every_dashboard_query_parses(prometheus_bin: Path, tmp_path: Path) -> None:
    expressions = [
        target["expr"]
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        for target in panel.get("targets", [])
    ]
    assert expressions
    # promtool parses PromQL only inside rule files: one recording rule per expression.
    rules: dict[str, Any] = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expression_{index}:check", "expr": _grafana_free(expr)}
        for index, expr in enumerate(expressions)
    ]}]}
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump(rules))
    result = _promtool(prometheus_bin, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def _grafana_free(expression: str) -> str:
    """Grafana's range variables replaced by a duration, as Grafana does before querying."""
    for variable in ("$__rate_interval", "$__interval", "$__range"):
        expression = expression.replace(variable, "5m")
    return expression
