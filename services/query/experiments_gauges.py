"""Gauges of the running experiments, refreshed by a job: units per variant, the sample-ratio
check, each variant's effect on each metric with its always-valid interval and p-value,
guardrail breaches and the verdict. What the alert rules for SRM and guardrail harm read.

Labels: `experiment_id` (the experiment's UUID), `arm` (`control`, `variant-1`, `variant-2`...
in the order of its definition), `metric` (one of five) and `decision` (one of five): bounded
by the running experiments, which admins create, never by traffic. Names of experiments and
variants are the tenants' own text and stay out of the operator's series, like every tenant
value; `GET /v1/experiments` (a tenant's key) maps an id to its experiment and the arms to its
variants. Only running experiments are reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from feedbackloop.experiments.analysis import ExperimentAnalysis
from feedbackloop.experiments.definition import DECISIONS, Experiment
from feedbackloop.pipeline.jobs import Job
from services.experiments import reads
from services.experiments.results import experiment_results

UNITS = "feedbackloop_experiment_units"
SRM_P = "feedbackloop_experiment_srm_p_value"
SRM = "feedbackloop_experiment_sample_ratio_mismatch"
EFFECT = "feedbackloop_experiment_effect"
LOWER = "feedbackloop_experiment_effect_lower"
UPPER = "feedbackloop_experiment_effect_upper"
P_VALUE = "feedbackloop_experiment_p_value"
BREACH = "feedbackloop_experiment_guardrail_breached"
VERDICT = "feedbackloop_experiment_verdict"
EVALUATED = "feedbackloop_experiment_evaluated_timestamp_seconds"
INTERVAL_SECONDS = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Evaluated:
    experiment: Experiment
    analysis: ExperimentAnalysis


class ExperimentGauges(Collector):
    """Registered on the service's registry; `update` replaces what the next scrape reports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._evaluated: list[_Evaluated] = []
        self._at: float | None = None
        registry.register(self)

    def update(self, evaluated: list[tuple[Experiment, ExperimentAnalysis]], at: float) -> None:
        self._evaluated = [_Evaluated(e, a) for e, a in evaluated]
        self._at = at

    def collect(self) -> Iterator[GaugeMetricFamily]:
        base = ["experiment_id"]
        units = GaugeMetricFamily(UNITS, "Units exposed, by arm.", labels=[*base, "arm"])
        srm_p = GaugeMetricFamily(SRM_P, "Always-valid p-value of the sample-ratio check.",
                                  labels=base)
        srm = GaugeMetricFamily(SRM, "1 when the units' split departs from the plan.",
                                labels=base)
        per_metric = [*base, "arm", "metric"]
        effect = GaugeMetricFamily(EFFECT, "Variant minus control.", labels=per_metric)
        lower = GaugeMetricFamily(LOWER, "Always-valid interval, low end.", labels=per_metric)
        upper = GaugeMetricFamily(UPPER, "Always-valid interval, high end.", labels=per_metric)
        p_value = GaugeMetricFamily(P_VALUE, "Always-valid (mSPRT) p-value against the "
                                    "control.", labels=per_metric)
        breach = GaugeMetricFamily(BREACH, "1 when the variant is significantly worse on the "
                                   "guardrail metric.", labels=per_metric)
        verdict = GaugeMetricFamily(VERDICT, "1 for the experiment's current decision.",
                                    labels=[*base, "decision"])
        for item in self._evaluated:
            ids = [item.experiment.experiment_id]
            a = item.analysis
            arms = arm_labels([v.name for v in item.experiment.spec.variants])
            for variant, count in a.sample_ratio.units.items():
                units.add_metric([*ids, arms[variant]], count)
            srm_p.add_metric(ids, a.sample_ratio.p_value)
            srm.add_metric(ids, int(a.sample_ratio.mismatch))
            for metric in a.metrics:
                for v in metric.variants[1:]:
                    labels = [*ids, arms[v.variant], metric.metric]
                    if v.effect is not None:
                        effect.add_metric(labels, v.effect)
                    if v.lower is not None and v.upper is not None:
                        lower.add_metric(labels, v.lower)
                        upper.add_metric(labels, v.upper)
                    if v.p_value is not None:
                        p_value.add_metric(labels, v.p_value)
                    if metric.role == "guardrail":
                        breach.add_metric(labels, int(v.side == "worse"))
            for decision in DECISIONS:
                verdict.add_metric([*ids, decision], int(a.verdict.decision == decision))
        yield from (units, srm_p, srm, effect, lower, upper, p_value, breach, verdict)
        evaluated = GaugeMetricFamily(EVALUATED, "Unix time of the last evaluation.")
        if self._at is not None:
            evaluated.add_metric([], self._at)
        yield evaluated


def arm_labels(variants: list[str]) -> dict[str, str]:
    """Variant name -> its arm label: `control` for the first, `variant-<n>` after it."""
    return {name: "control" if index == 0 else f"variant-{index}"
            for index, name in enumerate(variants)}


def experiment_gauges_job(pool: asyncpg.Pool, gauges: ExperimentGauges,
                          interval: float = INTERVAL_SECONDS) -> Job:
    """Every `interval`, analyse every tenant's running experiments into `gauges` (on every
    replica: each serves its own /metrics). Returns 0, so the runner waits the interval."""

    async def run() -> int:
        async with pool.acquire() as connection:
            running = await reads.experiments(connection, tenant_id=None, statuses=["running"])
            evaluated = []
            for experiment in running:
                analysis, _ = await experiment_results(connection, experiment, "hour")
                evaluated.append((experiment, analysis))
        gauges.update(evaluated, time.time())
        return 0

    return Job("experiment-gauges", run, interval=interval)
