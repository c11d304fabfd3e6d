"""Simulated experiments with known truth, vectorised: many runs of a two-arm conversion test
looked at after every batch of units, with the always-valid test and with a fixed-horizon
z-test peeked at the same way; and the sample-ratio check, sequential against a peeked
chi-square. Pure (numpy), seeded, fast enough for a unit test. The tests computed are the
statistics module's own (its array forms), not copies.

Each run assigns every unit to an arm at random (half each) and draws its conversion from the
arm's true rate; after each batch both tests are evaluated on the cumulative counts. A run
"detects" at the first look whose p-value is below alpha (the mSPRT's p-value is the running
minimum; the fixed-horizon one is read at face value, as someone peeking would).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feedbackloop.experiments.statistics import (
    MIN_OBSERVATIONS,
    SRM_CONCENTRATION,
    fixed_horizon_p_values,
    log_srm_bayes_factors,
    msprt_p_values,
)


@dataclass(frozen=True)
class SimulationResult:
    runs: int
    looks: int
    batch_units: int
    msprt_detection_rate: float
    fixed_horizon_detection_rate: float
    mean_units_to_detection: float | None
    """Over the runs the mSPRT detected in, the units exposed (both arms) at detection."""
    wrong_direction_rate: float
    """Runs the mSPRT detected in with the sign opposite to the truth."""


def simulate(*, runs: int, looks: int, batch_units: int, control_rate: float,
             treatment_rate: float, tau: float, alpha: float = 0.05,
             seed: int = 0) -> SimulationResult:
    if not (0 < control_rate < 1 and 0 < treatment_rate < 1):
        raise ValueError("rates must be between 0 and 1")
    rng = np.random.default_rng(seed)
    treated = rng.binomial(batch_units, 0.5, size=(runs, looks)).astype(np.float64)
    controls = batch_units - treated
    n_b = np.cumsum(treated, axis=1)
    n_a = np.cumsum(controls, axis=1)
    x_a = np.cumsum(rng.binomial(controls.astype(np.int64), control_rate), axis=1).astype(
        np.float64)
    x_b = np.cumsum(rng.binomial(treated.astype(np.int64), treatment_rate), axis=1).astype(
        np.float64)
    mean_a, mean_b = x_a / n_a, x_b / n_b
    variance = mean_a * (1 - mean_a) / n_a + mean_b * (1 - mean_b) / n_b
    effect = mean_b - mean_a
    p_msprt = msprt_p_values(effect, variance, tau * tau)
    ready = np.minimum(n_a, n_b) >= MIN_OBSERVATIONS
    p_msprt = np.minimum.accumulate(np.where(ready, p_msprt, 1.0), axis=1)
    p_fixed = fixed_horizon_p_values(x_a, n_a, x_b, n_b)
    hit = p_msprt < alpha
    detected = hit.any(axis=1)
    first = hit.argmax(axis=1)
    units_at = (first + 1) * batch_units
    truth = np.sign(treatment_rate - control_rate)
    signs = np.sign(effect[np.arange(runs), first])
    wrong = detected & (signs != truth) if truth != 0 else np.zeros(runs, dtype=bool)
    return SimulationResult(
        runs=runs, looks=looks, batch_units=batch_units,
        msprt_detection_rate=float(detected.mean()),
        fixed_horizon_detection_rate=float((p_fixed < alpha).any(axis=1).mean()),
        mean_units_to_detection=float(units_at[detected].mean()) if detected.any() else None,
        wrong_direction_rate=float(wrong.mean()),
    )


@dataclass(frozen=True)
class SrmSimulationResult:
    runs: int
    looks: int
    sequential_detection_rate: float
    chi_square_detection_rate: float
    """A chi-square test at the same alpha, read after every batch as someone peeking would."""
    mean_units_to_detection: float | None


def simulate_srm(*, runs: int, looks: int, batch_units: int, planned: tuple[float, ...],
                 actual: tuple[float, ...], alpha: float = 0.05, seed: int = 0,
                 concentration: float | None = None) -> SrmSimulationResult:
    """Runs whose units land in the variants with probabilities `actual` while the plan is
    `planned`, checked after every batch with the sequential test (its running minimum) and
    with a peeked chi-square test."""
    from scipy.stats import chi2

    p = np.array(planned) / sum(planned)
    rng = np.random.default_rng(seed)
    counts = np.cumsum(rng.multinomial(batch_units, np.array(actual) / sum(actual),
                                       size=(runs, looks)), axis=1).astype(np.float64)
    n = counts.sum(axis=2)
    log_bf = log_srm_bayes_factors(counts, p, concentration or SRM_CONCENTRATION)
    p_sequential = np.minimum.accumulate(np.minimum(1.0, np.exp(-log_bf)), axis=1)
    expected = n[..., None] * p
    statistic = ((counts - expected) ** 2 / expected).sum(axis=2)
    p_chi = chi2.sf(statistic, len(planned) - 1)
    hit = p_sequential < alpha
    detected = hit.any(axis=1)
    units_at = (hit.argmax(axis=1) + 1) * batch_units
    return SrmSimulationResult(
        runs=runs, looks=looks,
        sequential_detection_rate=float(detected.mean()),
        chi_square_detection_rate=float((p_chi < alpha).any(axis=1).mean()),
        mean_units_to_detection=float(units_at[detected].mean()) if detected.any() else None,
    )
