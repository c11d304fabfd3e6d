"""deploy/grafana/dashboards validated against Grafana's own dashboard JSON schema and the schemas
of the panel plugins they use (vendored in tests/ops/schemas, see update_grafana_schemas.py),
and laid out so that no panel hides another."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.ops.tools import ROOT
from tests.ops.update_grafana_schemas import GRAFANA_SCHEMA_VERSION, PANEL_TYPES, SCHEMAS

DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
GRID_COLUMNS = 24


@cache
def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


def _validator(name: str, definition: str | None = None) -> jsonschema.Draft7Validator:
    schema = _schema(name)
    if definition is not None:
        schema = {**schema, "$ref": f"#/definitions/{definition}"}
    return jsonschema.Draft7Validator(schema)


def _errors(validator: jsonschema.Draft7Validator, instance: Any) -> list[str]:
    """Every failure, the failures inside `anyOf` branches included: a panel is a `Panel` or a
    `RowPanel`, and "valid under neither" alone would not say what is wrong with it."""
    found = []
    pending = list(validator.iter_errors(instance))
    while pending:
        error = pending.pop(0)
        found.append(f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}")
        pending += error.context or []
    return found


def _dashboard_errors(dashboard: dict[str, Any]) -> list[str]:
    errors = _errors(_validator("grafana-dashboard.schema.json"), dashboard)
    for panel in dashboard.get("panels", []):
        kind = panel.get("type")
        if kind == "row":
            continue
        if kind not in PANEL_TYPES:
            errors.append(f"panel {panel.get('id')}: no schema vendored for type {kind!r}")
            continue
        name = f"grafana-panel-{kind}.schema.json"
        errors += [
            f"panel {panel.get('id')} options/{error}"
            for error in _errors(_validator(name, "Options"), panel.get("options", {}))
        ]
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
        errors += [
            f"panel {panel.get('id')} fieldConfig/defaults/custom/{error}"
            for error in _errors(_validator(name, "FieldConfig"), custom)
        ]
    return errors


def test_the_vendored_schemas_come_from_the_version_the_script_names() -> None:
    names = ["grafana-dashboard.schema.json", *(f"grafana-panel-{kind}.schema.json" for kind in PANEL_TYPES)]
    for name in names:
        assert f"@grafana/schema@{GRAFANA_SCHEMA_VERSION}" in _schema(name)["$comment"], name
    assert _schema("grafana-dashboard.schema.json")["$ref"] == "#/definitions/Dashboard"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_dashboard_matches_grafanas_schemas(path: Path) -> None:
    assert _dashboard_errors(json.loads(path.read_text())) == []


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda d: d["panels"][0].update(gridpos=d["panels"][0].pop("gridPos")), "gridpos"),
        (lambda d: d["panels"][0]["gridPos"].pop("w"), "'w' is a required property"),
        (lambda d: d.update(schemaVersion="41"), "is not of type 'number'"),
        (lambda d: d["panels"][0].pop("type"), "'type' is a required property"),
        (lambda d: d["panels"][0]["options"]["legend"].update(displayMode="sidebar"), "sidebar"),
        (lambda d: d["panels"][0]["options"].pop("tooltip"), "'tooltip' is a required property"),
        (lambda d: d["panels"][0]["fieldConfig"]["defaults"]["custom"].update(fillOpacity="10"),
         "is not of type 'number'"),
        (lambda d: d["panels"][0]["targets"].append("up"), "is not of type 'object'"),
        (lambda d: d["panels"][0].update(type="graph"), "no schema vendored for type 'graph'"),
    ],
    ids=["misspelt-key", "grid-without-width", "version-as-text", "panel-without-type",
         "unknown-legend-mode", "options-without-tooltip", "opacity-as-text", "target-not-object",
         "panel-type-without-schema"],
)
def test_the_check_rejects_a_broken_dashboard(breakage: Any, expected: str) -> None:
    dashboard = copy.deepcopy(json.loads(DASHBOARDS[0].read_text()))
    assert _dashboard_errors(dashboard) == []
    breakage(dashboard)
    errors = _dashboard_errors(dashboard)
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_panels_fit_the_grid_without_overlapping_and_name_their_queries(path: Path) -> None:
    panels = json.loads(path.read_text())["panels"]
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, f"{panel['title']}: wider than the grid"
        for column in range(grid["x"], grid["x"] + grid["w"]):
            for row in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((column, row), panel["title"])
                assert other == panel["title"], f"{panel['title']} overlaps {other}"
        references = [target["refId"] for target in panel.get("targets", [])]
        assert len(references) == len(set(references)), f"{panel['title']}: duplicate refIds"
        assert all(target.get("expr", "").strip() for target in panel.get("targets", [])), (
            f"{panel['title']}: a query without an expression"
        )
