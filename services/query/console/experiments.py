"""The console's experiment pages: the tenant's experiments, and one experiment's results
with their curves. Read-only: definitions change through the API or the CLI (admin keys), and
the pages read exactly what the query API shows the signed-in key."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from feedbackloop.experiments.definition import METRIC_INFO, valid_name
from feedbackloop.http.problems import ProblemException
from services.query.console.routes import _console, _page, _session

router = APIRouter(prefix="/console", include_in_schema=False)
GRAINS = ("minute", "hour", "day")


@router.get("/experiments")
async def experiments_page(request: Request) -> HTMLResponse:
    session = await _session(request)
    experiments = await _console(request).read(session, "/v1/experiments")
    return _page(request, session, "experiments.html", experiments=experiments)


@router.get("/experiments/{name}")
async def experiment_page(request: Request, name: str) -> HTMLResponse:
    if not valid_name(name):
        raise ProblemException(404, "no such experiment")
    session = await _session(request)
    console = _console(request)
    path = f"/v1/experiments/{quote(name, safe='')}"
    experiment = await console.read(session, path)
    grain = request.query_params.get("grain", "hour")
    if grain not in GRAINS:
        grain = "hour"
    results = await console.read(session, f"{path}/results", {"grain": grain})
    return _page(request, session, "experiment.html", experiment=experiment, results=results,
                 grain=grain, grains=GRAINS,
                 charts=curve_charts(results, _alpha(experiment)),
                 metric_info=METRIC_INFO)


def _alpha(experiment: dict[str, Any]) -> float:
    """Each comparison's alpha: the experiment's, split over the variants (Bonferroni)."""
    spec = experiment["spec"]
    return float(spec["alpha"]) / max(len(spec["variants"]) - 1, 1)


def _stamp(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def curve_charts(results: dict[str, Any], alpha: float) -> list[dict[str, Any]]:
    """Per metric and variant: the effect with its always-valid interval as bands and zero as
    the line to cross; and the always-valid p-value against alpha."""
    charts = []
    for metric in results["metrics"]:
        for variant in metric["variants"][1:]:
            curve = variant["curve"]
            if not curve:
                continue
            x = [_stamp(point["bucket"]) for point in curve]
            charts.append({
                "metric": metric["metric"], "variant": variant["variant"],
                "effect": {"x": x, "series": [
                    {"label": f"{variant['variant']} - control", "values": [p["effect"] for p in curve]},
                    {"label": "interval low", "band": True, "values": [p["lower"] for p in curve]},
                    {"label": "interval high", "band": True, "values": [p["upper"] for p in curve]},
                    {"label": "no difference", "threshold": True, "values": [0 for _ in curve]},
                ]},
                "p_value": {"x": x, "y_max": 1, "series": [
                    {"label": "always-valid p-value", "values": [p["p_value"] for p in curve]},
                    {"label": "alpha", "threshold": True,
                     "values": [alpha for _ in curve]},
                ]},
            })
    return charts
