"""An experiment's results: the metrics facts per variant and bucket (`services.metrics.reads`)
made cumulative, analysed (`feedbackloop.experiments.analysis`), and shaped for the API."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import asyncpg
from pydantic import BaseModel, Field

from feedbackloop.experiments.analysis import (
    ExperimentAnalysis,
    MetricPoint,
    UnitsPoint,
    analyse,
)
from feedbackloop.experiments.definition import Decision, Experiment, Metric
from feedbackloop.experiments.statistics import ArmSummary
from services.metrics.reads import Grain, VariantBucket, experiment_buckets


def _arm(metric: Metric, totals: dict[str, int]) -> ArmSummary:
    if metric == "approval":
        n = totals["thumbs_up"] + totals["thumbs_down"]
        return ArmSummary.bernoulli(totals["thumbs_up"], n)
    if metric == "conversion":
        n = totals["sessions"]
        # A choice whose session was never logged under the experiment counts no session.
        return ArmSummary.bernoulli(min(totals["converted_sessions"], n), n)
    prefix = {"mean_rating": "rating", "chosen_rank": "chosen_rank",
              "satisfaction": "satisfaction"}[metric]
    return ArmSummary(n=totals[f"{prefix}_count"], total=float(totals[f"{prefix}_sum"]),
                      total_sq=float(totals[f"{prefix}_sq_sum"]))


def series(experiment: Experiment, buckets: Sequence[VariantBucket]
           ) -> tuple[list[UnitsPoint], dict[Metric, list[MetricPoint]]]:
    """Cumulative series, one point per bucket, of the units and of the experiment's metrics."""
    names = [v.name for v in experiment.spec.variants]
    metrics: list[Metric] = [experiment.spec.primary_metric, *experiment.spec.guardrail_metrics]
    totals: dict[str, dict[str, int]] = {n: defaultdict(int) for n in names}
    by_bucket: dict[datetime, list[VariantBucket]] = defaultdict(list)
    for row in buckets:
        if row.variant in totals:
            by_bucket[row.bucket].append(row)
    units: list[UnitsPoint] = []
    points: dict[Metric, list[MetricPoint]] = {m: [] for m in metrics}
    for bucket in sorted(by_bucket):
        for row in by_bucket[bucket]:
            for name, value in row.__dict__.items():
                if isinstance(value, int):
                    totals[row.variant][name] += value
        units.append(UnitsPoint(bucket, {n: totals[n]["units"] for n in names}))
        for metric in metrics:
            points[metric].append(MetricPoint(bucket, {n: _arm(metric, totals[n]) for n in names}))
    return units, points


class CurvePointOut(BaseModel):
    bucket: datetime
    effect: float
    lower: float | None
    upper: float | None
    p_value: float


class VariantOut(BaseModel):
    variant: str
    observations: int
    mean: float | None
    effect: float | None = Field(default=None, description="Minus the control's mean.")
    lower: float | None = Field(default=None, description="Always-valid interval, low end.")
    upper: float | None = None
    p_value: float | None = Field(default=None, description="Always-valid (mSPRT) p-value.")
    tested: bool = False
    side: str | None = Field(default=None, description="better, worse or inconclusive.")
    curve: list[CurvePointOut] = Field(default_factory=list)


class MetricOut(BaseModel):
    metric: Metric
    role: str
    variants: list[VariantOut]


class SampleRatioOut(BaseModel):
    units: dict[str, int]
    expected_shares: dict[str, float]
    p_value: float
    mismatch: bool
    alpha: float
    test: str = "sequential Dirichlet-multinomial (Lindon and Malek 2022), always valid"


class VerdictOut(BaseModel):
    decision: Decision
    variant: str | None
    reasons: list[str]


class ResultsOut(BaseModel):
    experiment: str
    status: str
    grain: Grain
    units: int
    exposures: int
    crossovers: int
    sample_ratio: SampleRatioOut
    metrics: list[MetricOut]
    guardrail_breaches: list[dict[str, str]]
    verdict: VerdictOut


def results_out(experiment: Experiment, analysis: ExperimentAnalysis,
                buckets: Sequence[VariantBucket], grain: Grain) -> ResultsOut:
    names = {v.name for v in experiment.spec.variants}
    mine = [b for b in buckets if b.variant in names]
    return ResultsOut(
        experiment=experiment.name, status=experiment.status, grain=grain, units=analysis.units,
        exposures=sum(b.exposures for b in mine), crossovers=sum(b.crossovers for b in mine),
        sample_ratio=SampleRatioOut(**analysis.sample_ratio.__dict__),
        metrics=[MetricOut(metric=m.metric, role=m.role, variants=[
            VariantOut(variant=v.variant, observations=v.n, mean=v.mean, effect=v.effect,
                       lower=v.lower, upper=v.upper, p_value=v.p_value, tested=v.tested,
                       side=v.side, curve=[CurvePointOut(**c.__dict__) for c in v.curve])
            for v in m.variants]) for m in analysis.metrics],
        guardrail_breaches=[{"variant": v, "metric": m} for v, m in analysis.guardrail_breaches],
        verdict=VerdictOut(**analysis.verdict.__dict__),
    )


async def experiment_results(connection: asyncpg.Connection, experiment: Experiment,
                             grain: Grain = "hour") -> tuple[ExperimentAnalysis, ResultsOut]:
    buckets = await experiment_buckets(connection, tenant_id=experiment.tenant_id,
                                       experiment=experiment.name, grain=grain)
    units, metrics = series(experiment, buckets)
    analysis = analyse(experiment.spec, units, metrics)
    return analysis, results_out(experiment, analysis, buckets, grain)
