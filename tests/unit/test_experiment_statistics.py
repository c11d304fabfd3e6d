"""The experiments' statistics against values worked by hand, assignment, the spec's rules
and the verdict."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from feedbackloop.experiments.analysis import MetricPoint, UnitsPoint, analyse
from feedbackloop.experiments.assignment import assign, unit_point
from feedbackloop.experiments.definition import ExperimentSpec
from feedbackloop.experiments.statistics import (
    ArmSummary,
    accumulate,
    compare,
    confidence_radii,
    log_mixture_likelihood_ratio,
    log_srm_bayes_factor,
    msprt_p_values,
    running_srm_p_value,
    srm_p_value,
)

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def test_mixture_likelihood_ratio_and_p_value_match_the_formula() -> None:
    # V = 1, tau^2 = 1, effect 2: log L = 0.5 log(1/2) + 4 / (2 * 1 * 2) = 0.653426
    log_l = log_mixture_likelihood_ratio(np.array([2.0]), np.array([1.0]), 1.0)
    assert float(log_l[0]) == pytest.approx(0.5 * math.log(0.5) + 1.0, abs=1e-12)
    assert float(msprt_p_values(np.array([2.0]), np.array([1.0]), 1.0)[0]) == pytest.approx(
        0.520260, abs=1e-6)
    # No effect: L < 1, so the p-value is 1.
    assert float(msprt_p_values(np.array([0.0]), np.array([1.0]), 1.0)[0]) == 1.0


def test_confidence_radius_matches_the_formula() -> None:
    # sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V))) at V = tau^2 = 1
    radius = float(confidence_radii(np.array([1.0]), 1.0, 0.05)[0])
    assert radius == pytest.approx(math.sqrt(2 * (2 * math.log(20) + math.log(2))), abs=1e-12)
    assert radius == pytest.approx(3.656395, abs=1e-6)


def test_the_interval_excludes_zero_exactly_when_p_is_below_alpha() -> None:
    control = ArmSummary.bernoulli(100, 1_000)
    for successes in range(100, 200, 5):
        look = compare(control, ArmSummary.bernoulli(successes, 1_000), tau=0.02, alpha=0.05)
        assert look.tested
        assert (look.lower > 0) == (look.p_value < 0.05), successes


def test_arms_with_too_few_observations_are_not_tested() -> None:
    look = compare(ArmSummary.bernoulli(3, 10), ArmSummary.bernoulli(9, 10), tau=0.02, alpha=0.05)
    assert not look.tested and look.p_value == 1.0 and look.lower == -math.inf
    assert look.effect == pytest.approx(0.6)


def test_arm_summary_of_bounded_values() -> None:
    ratings = [1, 2, 5, 5, 4]
    arm = ArmSummary(n=5, total=sum(ratings), total_sq=sum(r * r for r in ratings))
    assert arm.mean == pytest.approx(3.4)
    assert arm.variance == pytest.approx(float(np.var(ratings)))
    with pytest.raises(ValueError, match="between 0 and n"):
        ArmSummary.bernoulli(11, 10)


def test_running_state_keeps_the_minimum_and_the_intersection() -> None:
    a, b = ArmSummary.bernoulli(100, 1_000), ArmSummary.bernoulli(150, 1_000)
    first = compare(a, b, tau=0.02, alpha=0.05)
    later = compare(ArmSummary.bernoulli(200, 2_000), ArmSummary.bernoulli(210, 2_000),
                    tau=0.02, alpha=0.05)
    state = accumulate([first, later])
    assert state.p_value == min(first.p_value, later.p_value) == first.p_value
    assert state.lower == max(first.lower, later.lower)
    assert state.upper == min(first.upper, later.upper)
    assert state.effect == later.effect


def test_srm_bayes_factor_worked_by_hand() -> None:
    # Dirichlet(1, 1) against (1/2, 1/2), counts (2, 0):
    # BF = G(2)/G(4) * G(3)G(1)/(G(1)G(1)) / (1/2)^2 = (1/6) * 2 * 4 = 4/3
    assert math.exp(log_srm_bayes_factor([2, 0], [1, 1], concentration=2)) == pytest.approx(4 / 3)
    assert srm_p_value([2, 0], [1, 1], concentration=2) == pytest.approx(0.75)
    assert srm_p_value([0, 0], [1, 1]) == 1.0
    with pytest.raises(ValueError, match="one count per variant"):
        srm_p_value([1], [1])


def test_srm_fires_on_a_skewed_split_and_not_on_a_fair_one() -> None:
    fair = [[500 * k + (k % 3), 500 * k - (k % 3)] for k in range(1, 21)]
    assert running_srm_p_value(fair, [1, 1]) > 0.5
    skewed = [[550 * k, 450 * k] for k in range(1, 21)]
    assert running_srm_p_value(skewed, [1, 1]) < 1e-6
    # Unequal planned weights: a 2:1 split is what was asked for.
    assert srm_p_value([6_700, 3_300], [2, 1]) > 0.01


def test_assignment_is_sticky_weighted_and_independent_across_salts() -> None:
    weights = [1.0, 1.0, 2.0]
    units = [f"user-{i}" for i in range(20_000)]
    first = [assign("salt-a", u, weights) for u in units]
    assert first == [assign("salt-a", u, weights) for u in units]
    shares = Counter(first)
    assert abs(shares[2] / len(units) - 0.5) < 0.015
    assert abs(shares[0] / len(units) - 0.25) < 0.015
    other = [assign("salt-b", u, weights) for u in units]
    same = sum(x == y for x, y in zip(first, other, strict=True)) / len(units)
    assert abs(same - (0.25**2 + 0.25**2 + 0.5**2)) < 0.02  # independent: chance agreement
    assert 0 <= unit_point("s", "u") < 1
    with pytest.raises(ValueError, match="positive"):
        assign("s", "u", [1.0, 0.0])


def _spec(**overrides: object) -> ExperimentSpec:
    fields: dict[str, object] = {
        "name": "prompt-v2", "variants": [{"name": "control", "weight": 1},
                                          {"name": "treatment", "weight": 1}],
        "primary_metric": "approval", "guardrail_metrics": ["mean_rating"],
        "minimum_detectable_effect": 0.05, "planned_units": 10_000,
    }
    return ExperimentSpec.model_validate(fields | overrides)


def test_spec_rules() -> None:
    with pytest.raises(ValidationError, match="distinct"):
        _spec(variants=[{"name": "a", "weight": 1}, {"name": "a", "weight": 1}])
    with pytest.raises(ValidationError, match="primary metric cannot also be a guardrail"):
        _spec(guardrail_metrics=["approval"])
    with pytest.raises(ValidationError, match="needs `ranker`"):
        _spec(kind="ranker", unit="session")
    with pytest.raises(ValidationError, match="greater than 0"):
        _spec(variants=[{"name": "a", "weight": 0}, {"name": "b", "weight": 1}])
    ranker = _spec(kind="ranker", unit="session", variants=[
        {"name": "learned", "weight": 1, "ranker": {"policy": "learned"}},
        {"name": "defaults", "weight": 1, "ranker": {"policy": "defaults"}}])
    assert ranker.variants[1].ranker is not None


def _series(control: tuple[int, int], treatment: tuple[int, int], looks: int = 10,
            ratings: tuple[tuple[int, float, float], tuple[int, float, float]] | None = None,
            ) -> tuple[list[UnitsPoint], dict[str, list[MetricPoint]]]:
    units, approval, rating = [], [], []
    for k in range(1, looks + 1):
        bucket = T0 + timedelta(hours=k)
        units.append(UnitsPoint(bucket, {"control": control[1] * k, "treatment": treatment[1] * k}))
        approval.append(MetricPoint(bucket, {
            "control": ArmSummary.bernoulli(control[0] * k, control[1] * k),
            "treatment": ArmSummary.bernoulli(treatment[0] * k, treatment[1] * k)}))
        if ratings:
            rating.append(MetricPoint(bucket, {
                name: ArmSummary(n=n * k, total=s * k, total_sq=q * k)
                for name, (n, s, q) in zip(("control", "treatment"), ratings, strict=True)}))
    return units, {"approval": approval, "mean_rating": rating}


def test_verdict_ships_a_clear_winner() -> None:
    units, metrics = _series((500, 1_000), (600, 1_000))
    result = analyse(_spec(), units, metrics)  # type: ignore[arg-type]
    assert result.verdict.decision == "ship" and result.verdict.variant == "treatment"
    treatment = result.metrics[0].variants[1]
    assert treatment.side == "better" and treatment.lower is not None and treatment.lower > 0
    assert len(treatment.curve) == 10 and not result.sample_ratio.mismatch


def test_verdict_stops_for_harm_on_the_primary_and_on_a_guardrail() -> None:
    units, metrics = _series((600, 1_000), (500, 1_000))
    assert analyse(_spec(), units, metrics).verdict.decision == "stop_for_harm"  # type: ignore[arg-type]
    # Better on approval, a star worse on ratings: the guardrail stops it.
    units, metrics = _series((500, 1_000), (600, 1_000),
                             ratings=((500, 2_000.0, 8_500.0), (500, 1_500.0, 5_000.0)))
    result = analyse(_spec(), units, metrics)  # type: ignore[arg-type]
    assert result.guardrail_breaches == [("treatment", "mean_rating")]
    assert result.verdict.decision == "stop_for_harm"


def test_verdict_flags_a_sample_ratio_mismatch_first() -> None:
    units, metrics = _series((500, 1_100), (600, 900))
    result = analyse(_spec(), units, metrics)  # type: ignore[arg-type]
    assert result.sample_ratio.mismatch and result.verdict.decision == "sample_ratio_mismatch"


def test_verdict_keeps_running_then_finds_no_effect() -> None:
    units, metrics = _series((50, 100), (51, 100), looks=3)
    assert analyse(_spec(), units, metrics).verdict.decision == "keep_running"  # type: ignore[arg-type]
    units, metrics = _series((5_000, 10_000), (5_010, 10_000), looks=10)
    result = analyse(_spec(), units, metrics)  # type: ignore[arg-type]
    assert result.verdict.decision == "stop_no_effect"
