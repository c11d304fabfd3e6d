"""Always-valid inference for experiments: mSPRT p-values and confidence sequences for the
difference of two means, and a sequential sample-ratio-mismatch test. Pure, no I/O.

Comparisons follow the mixture sequential probability ratio test of Johari, Koomen, Pekelis
and Walsh ("Always valid inference", Operations Research 2022; KDD 2017). With `effect` the
difference of the two arms' means and `variance` its variance (`s_a^2/n_a + s_b^2/n_b`, the
per-observation variances estimated from the data), the mixture likelihood ratio against
"no difference" under a normal mixing distribution `N(0, tau^2)` is

    L = sqrt(V / (V + tau^2)) * exp(tau^2 * effect^2 / (2 V (V + tau^2)))

and `1 / L` is a p-value that stays valid however often it is looked at; the running minimum
over the looks is the always-valid p-value. Inverting the test gives the confidence sequence
`effect +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))`, whose
running intersection covers the true difference at every look with probability `1 - alpha`.
The variance is a plug-in estimate, as in the paper's treatment of binary and bounded
metrics: the guarantee is asymptotic, so a comparison starts only once each arm has
`MIN_OBSERVATIONS`.

Sample ratio: the sequential multinomial test of Lindon and Malek ("Anytime-valid inference
for multinomial count data", NeurIPS 2022): the Bayes factor of a Dirichlet(`concentration *
weights`) mixture against the planned weights, whose inverse (running minimum) is an
always-valid p-value for "units arrive in the planned ratio". A chi-square test checked after
every batch would fire on a fair split far more often than its alpha says; this one does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import gammaln

FloatArray = npt.NDArray[np.float64]

MIN_OBSERVATIONS = 30
"""Observations each arm needs before its comparison is tested (the plug-in variance)."""
VARIANCE_FLOOR = 1e-12
SRM_CONCENTRATION = 100.0


@dataclass(frozen=True)
class ArmSummary:
    """The sufficient statistics of one arm on one metric: the number of observations, their
    sum and their sum of squares (a Bernoulli metric: successes twice)."""

    n: int
    total: float
    total_sq: float

    @classmethod
    def bernoulli(cls, successes: int, n: int) -> ArmSummary:
        if not 0 <= successes <= n:
            raise ValueError(f"successes must be between 0 and n, got {successes} of {n}")
        return cls(n=n, total=float(successes), total_sq=float(successes))

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> float:
        """The per-observation (population) variance; 0 with fewer than two observations."""
        if self.n < 2:
            return 0.0
        mean = self.total / self.n
        return max(self.total_sq / self.n - mean * mean, 0.0)


@dataclass(frozen=True)
class Comparison:
    """One look at treatment minus control: the difference of means, its always-valid
    interval at the look (not yet intersected with earlier looks) and p-value (not yet the
    running minimum). `tested` is False while an arm has too few observations: then the
    interval is unbounded and the p-value 1."""

    effect: float
    lower: float
    upper: float
    p_value: float
    tested: bool


def log_mixture_likelihood_ratio(
    effect: FloatArray, variance: FloatArray, tau2: float
) -> FloatArray:
    """`log L` of the module docstring, elementwise."""
    v = np.maximum(variance, VARIANCE_FLOOR)
    result: FloatArray = 0.5 * np.log(v / (v + tau2)) + tau2 * effect**2 / (2 * v * (v + tau2))
    return result


def msprt_p_values(effect: FloatArray, variance: FloatArray, tau2: float) -> FloatArray:
    """`min(1, 1/L)` at each look, elementwise (take the running minimum over looks)."""
    result: FloatArray = np.minimum(
        1.0, np.exp(-log_mixture_likelihood_ratio(effect, variance, tau2))
    )
    return result


def confidence_radii(variance: FloatArray, tau2: float, alpha: float) -> FloatArray:
    """The half-width of the confidence sequence at each look, elementwise."""
    v = np.maximum(variance, VARIANCE_FLOOR)
    result: FloatArray = np.sqrt(
        v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + np.log((v + tau2) / v))
    )
    return result


def compare(control: ArmSummary, treatment: ArmSummary, *, tau: float, alpha: float) -> Comparison:
    """One look at `treatment - control` (see `Comparison`). `tau` is the scale of effects
    the test is tuned to (the minimum detectable effect), in the metric's units."""
    _check_alpha(alpha)
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if control.mean is None or treatment.mean is None:
        return Comparison(effect=0.0, lower=-math.inf, upper=math.inf, p_value=1.0, tested=False)
    effect = treatment.mean - control.mean
    if min(control.n, treatment.n) < MIN_OBSERVATIONS:
        return Comparison(effect=effect, lower=-math.inf, upper=math.inf, p_value=1.0,
                          tested=False)
    variance = np.array([control.variance / control.n + treatment.variance / treatment.n])
    tau2 = tau * tau
    radius = float(confidence_radii(variance, tau2, alpha)[0])
    p_value = float(msprt_p_values(np.array([effect]), variance, tau2)[0])
    return Comparison(effect=effect, lower=effect - radius, upper=effect + radius,
                      p_value=p_value, tested=True)


@dataclass(frozen=True)
class AlwaysValid:
    """The always-valid state after a series of looks: the running minimum of the p-values
    and the running intersection of the intervals (the latest look's effect)."""

    effect: float
    lower: float
    upper: float
    p_value: float
    tested: bool


START = AlwaysValid(effect=0.0, lower=-math.inf, upper=math.inf, p_value=1.0, tested=False)
"""The state before any look."""


def extend(state: AlwaysValid, look: Comparison) -> AlwaysValid:
    """The state after one more look: running minimum p-value, running intersection of the
    intervals. An empty intersection (possible only by chance, at rate alpha) is reported as
    the latest look's interval."""
    if not look.tested:
        return AlwaysValid(effect=look.effect, lower=state.lower, upper=state.upper,
                           p_value=state.p_value, tested=state.tested)
    lower, upper = max(state.lower, look.lower), min(state.upper, look.upper)
    if lower > upper:
        lower, upper = look.lower, look.upper
    return AlwaysValid(effect=look.effect, lower=lower, upper=upper,
                       p_value=min(state.p_value, look.p_value), tested=True)


def accumulate(looks: Sequence[Comparison]) -> AlwaysValid:
    """The state after `looks`, in order (see `extend`)."""
    state = START
    for look in looks:
        state = extend(state, look)
    return state


def log_srm_bayes_factors(counts: FloatArray, shares: FloatArray,
                          concentration: float = SRM_CONCENTRATION) -> FloatArray:
    """The log Bayes factor of the Dirichlet-multinomial mixture (prior `concentration *
    shares`) against the planned `shares` (summing to 1), over the last axis of `counts`."""
    a = concentration * shares
    n = counts.sum(axis=-1)
    result: FloatArray = (gammaln(a.sum()) - gammaln(a.sum() + n)
                          + (gammaln(a + counts) - gammaln(a)).sum(axis=-1)
                          - (counts * np.log(shares)).sum(axis=-1))
    return result


def log_srm_bayes_factor(counts: Sequence[int], weights: Sequence[float],
                         concentration: float = SRM_CONCENTRATION) -> float:
    """`log_srm_bayes_factors` for one look at the arms' unit counts, `weights` relative."""
    if len(counts) != len(weights) or len(counts) < 2:
        raise ValueError("one count per variant, at least two variants")
    if any(c < 0 for c in counts):
        raise ValueError("counts cannot be negative")
    if any(w <= 0 for w in weights) or concentration <= 0:
        raise ValueError("weights and concentration must be positive")
    total_weight = sum(weights)
    shares = np.array([w / total_weight for w in weights])
    return float(log_srm_bayes_factors(np.array(counts, dtype=np.float64), shares,
                                       concentration))


def srm_p_value(counts: Sequence[int], weights: Sequence[float],
                concentration: float = SRM_CONCENTRATION) -> float:
    """`min(1, 1/BF)` for one look (take the running minimum over looks)."""
    return min(1.0, math.exp(-log_srm_bayes_factor(counts, weights, concentration)))


def running_srm_p_value(looks: Sequence[Sequence[int]], weights: Sequence[float],
                        concentration: float = SRM_CONCENTRATION) -> float:
    """The always-valid SRM p-value after a series of looks at cumulative counts."""
    p_value = 1.0
    for counts in looks:
        p_value = min(p_value, srm_p_value(counts, weights, concentration))
    return p_value


def fixed_horizon_p_values(control_successes: FloatArray, control_n: FloatArray,
                           treatment_successes: FloatArray, treatment_n: FloatArray) -> FloatArray:
    """The classical two-sided pooled z-test of two proportions, elementwise: valid at one
    planned look only. Here to show what peeking at it does, never to decide."""
    from scipy.special import ndtr

    pooled = (control_successes + treatment_successes) / np.maximum(control_n + treatment_n, 1)
    se = np.sqrt(np.maximum(pooled * (1 - pooled) * (1 / np.maximum(control_n, 1)
                                                     + 1 / np.maximum(treatment_n, 1)),
                            VARIANCE_FLOOR))
    z = (treatment_successes / np.maximum(treatment_n, 1)
         - control_successes / np.maximum(control_n, 1)) / se
    result: FloatArray = 2 * (1 - ndtr(np.abs(z)))
    return result


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
