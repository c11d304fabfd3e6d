"""An experiment's analysis from its cumulative counts: per variant and metric the estimate,
its always-valid interval and p-value against the control, the sample-ratio check, guardrail
breaches, curves over time, and the verdict. Pure.

Inputs are cumulative series, one point per time bucket (the exact rollups summed from the
start): the units exposed per variant, and per metric each variant's `ArmSummary`. Every look
is a bucket; p-values are running minima and intervals running intersections over the looks
(`feedbackloop.experiments.statistics`), so the answer is valid at whatever moment it is read.

Verdict, in order:
1. `sample_ratio_mismatch`: the units' split departs from the planned weights (sequential
   multinomial test, p < `SRM_ALPHA`): the comparison cannot be trusted, fix the assignment.
2. `stop_for_harm`: a variant is significantly worse than the control on the primary metric
   or breaches a guardrail (its interval lies wholly on the harmful side of zero).
3. `ship`: a variant is significantly better on the primary metric with no guardrail
   breached (the best such one is named).
4. `stop_no_effect`: the planned horizon is reached, or every variant's interval lies within
   plus or minus the minimum detectable effect: nothing worth finding is there.
5. `keep_running`.
Comparisons of k variants against the control each use alpha / k (Bonferroni).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from feedbackloop.experiments.definition import (
    METRIC_INFO,
    Decision,
    ExperimentSpec,
    Metric,
)
from feedbackloop.experiments.statistics import START, ArmSummary, compare, extend, srm_p_value

SRM_ALPHA = 0.001
Side = Literal["better", "worse", "inconclusive"]


@dataclass(frozen=True)
class UnitsPoint:
    bucket: datetime
    units: Mapping[str, int]  # cumulative, by variant


@dataclass(frozen=True)
class MetricPoint:
    bucket: datetime
    arms: Mapping[str, ArmSummary]  # cumulative, by variant


@dataclass(frozen=True)
class CurvePoint:
    bucket: datetime
    effect: float
    lower: float | None
    upper: float | None
    p_value: float


@dataclass(frozen=True)
class VariantResult:
    variant: str
    n: int
    mean: float | None
    effect: float | None = None
    lower: float | None = None
    upper: float | None = None
    p_value: float | None = None
    tested: bool = False
    side: Side | None = None
    curve: list[CurvePoint] = field(default_factory=list)


@dataclass(frozen=True)
class MetricResult:
    metric: Metric
    role: Literal["primary", "guardrail"]
    variants: list[VariantResult]


@dataclass(frozen=True)
class SampleRatio:
    units: dict[str, int]
    expected_shares: dict[str, float]
    p_value: float
    mismatch: bool
    alpha: float = SRM_ALPHA


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    variant: str | None
    reasons: list[str]


@dataclass(frozen=True)
class ExperimentAnalysis:
    units: int
    sample_ratio: SampleRatio
    metrics: list[MetricResult]
    guardrail_breaches: list[tuple[str, Metric]]
    verdict: Verdict


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _side(lower: float, upper: float, direction: int, tested: bool) -> Side:
    if not tested:
        return "inconclusive"
    if (lower > 0 and direction > 0) or (upper < 0 and direction < 0):
        return "better"
    if (upper < 0 and direction > 0) or (lower > 0 and direction < 0):
        return "worse"
    return "inconclusive"


def analyse_metric(spec: ExperimentSpec, metric: Metric, series: Sequence[MetricPoint],
                   role: Literal["primary", "guardrail"]) -> MetricResult:
    """One metric's result per variant, the control first (without a comparison). Alpha is
    split (Bonferroni) over the comparisons with the control and, for a guardrail, over the
    guardrails too: any one guardrail's breach stops the experiment, so together they must
    not cry harm more often than alpha."""
    names = [v.name for v in spec.variants]
    control = names[0]
    info = METRIC_INFO[metric]
    tau = spec.minimum_detectable_effect if role == "primary" else info.guardrail_tau
    family = max(1, len(spec.guardrail_metrics)) if role == "guardrail" else 1
    alpha = spec.alpha / ((len(names) - 1) * family)
    empty = ArmSummary(n=0, total=0.0, total_sq=0.0)
    last = series[-1].arms if series else {}
    results = [VariantResult(variant=control, n=last.get(control, empty).n,
                             mean=last.get(control, empty).mean)]
    for name in names[1:]:
        curve: list[CurvePoint] = []
        state = START
        for point in series:
            look = compare(point.arms.get(control, empty), point.arms.get(name, empty),
                           tau=tau, alpha=alpha)
            state = extend(state, look)
            if state.tested:
                curve.append(CurvePoint(bucket=point.bucket, effect=state.effect,
                                        lower=_finite(state.lower), upper=_finite(state.upper),
                                        p_value=state.p_value))
        arm = last.get(name, empty)
        results.append(VariantResult(
            variant=name, n=arm.n, mean=arm.mean,
            effect=state.effect if arm.mean is not None and results[0].mean is not None else None,
            lower=_finite(state.lower), upper=_finite(state.upper), p_value=state.p_value,
            tested=state.tested, side=_side(state.lower, state.upper, info.direction, state.tested),
            curve=curve,
        ))
    return MetricResult(metric=metric, role=role, variants=results)


def sample_ratio(spec: ExperimentSpec, series: Sequence[UnitsPoint]) -> SampleRatio:
    names = [v.name for v in spec.variants]
    weights = [v.weight for v in spec.variants]
    total_weight = sum(weights)
    p_value = 1.0
    for point in series:
        p_value = min(p_value, srm_p_value([point.units.get(n, 0) for n in names], weights))
    last = series[-1].units if series else {}
    return SampleRatio(
        units={n: last.get(n, 0) for n in names},
        expected_shares={v.name: v.weight / total_weight for v in spec.variants},
        p_value=p_value, mismatch=p_value < SRM_ALPHA,
    )


def analyse(spec: ExperimentSpec, units: Sequence[UnitsPoint],
            metrics: Mapping[Metric, Sequence[MetricPoint]]) -> ExperimentAnalysis:
    """The whole analysis (see the module docstring). `metrics` holds a series for the
    primary metric and each guardrail; a metric without one has no observations yet."""
    srm = sample_ratio(spec, units)
    primary = analyse_metric(spec, spec.primary_metric, metrics.get(spec.primary_metric, ()),
                             "primary")
    guardrails = [analyse_metric(spec, m, metrics.get(m, ()), "guardrail")
                  for m in spec.guardrail_metrics]
    breaches = [(v.variant, g.metric) for g in guardrails for v in g.variants[1:]
                if v.side == "worse"]
    total = sum(srm.units.values())
    return ExperimentAnalysis(
        units=total, sample_ratio=srm, metrics=[primary, *guardrails],
        guardrail_breaches=breaches,
        verdict=decide(spec, srm, primary, breaches, total),
    )


def decide(spec: ExperimentSpec, srm: SampleRatio, primary: MetricResult,
           breaches: Sequence[tuple[str, Metric]], units: int) -> Verdict:
    if srm.mismatch:
        return Verdict("sample_ratio_mismatch", None, [
            f"units split {srm.units} departs from the planned shares {srm.expected_shares} "
            f"(sequential test p = {srm.p_value:.2g} < {srm.alpha})"])
    treatments = primary.variants[1:]
    harmed = [v for v in treatments if v.side == "worse"]
    if harmed or breaches:
        reasons = [f"{v.variant} is worse than {primary.variants[0].variant} on "
                   f"{primary.metric} (p = {v.p_value:.2g})" for v in harmed]
        reasons += [f"{variant} breaches the guardrail {metric}" for variant, metric in breaches]
        first = harmed[0].variant if harmed else breaches[0][0]
        return Verdict("stop_for_harm", first, reasons)
    direction = METRIC_INFO[primary.metric].direction
    winners = [v for v in treatments if v.side == "better"]
    if winners:
        best = max(winners, key=lambda v: direction * (v.effect or 0.0))
        return Verdict("ship", best.variant, [
            f"{best.variant} beats {primary.variants[0].variant} on {primary.metric}: "
            f"{best.effect:+.4g} in [{best.lower:.4g}, {best.upper:.4g}] "
            f"(always-valid p = {best.p_value:.2g}), no guardrail breached"])
    mde = spec.minimum_detectable_effect
    negligible = all(v.tested and v.lower is not None and v.upper is not None
                     and -mde < v.lower and v.upper < mde for v in treatments)
    if negligible:
        return Verdict("stop_no_effect", None, [
            f"every variant's difference on {primary.metric} is within +-{mde:g}"])
    if units >= spec.planned_units:
        return Verdict("stop_no_effect", None, [
            f"the planned {spec.planned_units} units are reached without a difference "
            f"on {primary.metric}"])
    return Verdict("keep_running", None, [
        f"{units} of {spec.planned_units} planned units; no difference is established yet"])
