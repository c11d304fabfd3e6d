"""The console's experiment pages: the tenant's experiments, and one experiment's results
with their curves. Read-only: definitions change through the API or the CLI (admin keys), and
the pages read exactly what the query API shows the signed-in key."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from feedbackloop.experiments.definition import METRIC_INFO, valid_name
from feedbackloop.http.problems import ProblemException
from services.query.console.charts import curve_charts
from services.query.console.pages import console_of, page, signed_in

router = APIRouter(prefix="/console", include_in_schema=False)
GRAINS = ("minute", "hour", "day")


@router.get("/experiments")
async def experiments_page(request: Request) -> HTMLResponse:
    session = await signed_in(request)
    experiments = await console_of(request).read(session, "/v1/experiments")
    return page(request, session, "experiments.html", experiments=experiments)


@router.get("/experiments/{name}")
async def experiment_page(request: Request, name: str) -> HTMLResponse:
    if not valid_name(name):
        raise ProblemException(404, "no such experiment")
    session = await signed_in(request)
    console = console_of(request)
    path = f"/v1/experiments/{quote(name, safe='')}"
    experiment = await console.read(session, path)
    grain = request.query_params.get("grain", "hour")
    if grain not in GRAINS:
        grain = "hour"
    results = await console.read(session, f"{path}/results", {"grain": grain})
    return page(request, session, "experiment.html", experiment=experiment, results=results,
                grain=grain, grains=GRAINS,
                charts=curve_charts(results, _alpha(experiment)),
                metric_info=METRIC_INFO)


def _alpha(experiment: dict[str, Any]) -> float:
    """Each comparison's alpha: the experiment's, split over the variants (Bonferroni)."""
    spec = experiment["spec"]
    return float(spec["alpha"]) / max(len(spec["variants"]) - 1, 1)
