"""Known truth: A/A experiments looked at after every batch keep the always-valid test's
false-positive rate under its alpha, where a fixed-horizon test peeked at the same way fires
far more often; a real lift is found, and how soon is reported."""

from __future__ import annotations

import time

from feedbackloop.experiments.simulation import simulate, simulate_srm

RUNS, LOOKS, BATCH = 1_000, 100, 200  # 1,000 runs, a look after every 200 units, 20,000 units


def test_a_a_false_positives_stay_under_alpha_while_peeking() -> None:
    started = time.perf_counter()
    for rate, seed in ((0.10, 1), (0.50, 2)):
        result = simulate(runs=RUNS, looks=LOOKS, batch_units=BATCH, control_rate=rate,
                          treatment_rate=rate, tau=0.02, alpha=0.05, seed=seed)
        print(f"A/A at {rate:.0%}: always-valid false positives {result.msprt_detection_rate:.1%}, "
              f"fixed-horizon peeked {result.fixed_horizon_detection_rate:.1%}")
        assert result.msprt_detection_rate <= 0.05
        assert result.fixed_horizon_detection_rate > 0.15
    assert time.perf_counter() - started < 30


def test_a_b_with_a_known_lift_is_detected_and_reports_units_to_detection() -> None:
    result = simulate(runs=RUNS, looks=LOOKS, batch_units=BATCH, control_rate=0.10,
                      treatment_rate=0.12, tau=0.02, alpha=0.05, seed=3)
    print(f"A/B 10% -> 12%: detected in {result.msprt_detection_rate:.1%} of runs, after "
          f"{result.mean_units_to_detection:.0f} units on average, wrong sign in "
          f"{result.wrong_direction_rate:.1%}")
    assert result.msprt_detection_rate >= 0.9
    assert result.wrong_direction_rate == 0.0
    assert result.mean_units_to_detection is not None
    assert result.mean_units_to_detection < LOOKS * BATCH * 0.6


def test_the_sequential_srm_test_stays_valid_while_peeking_and_finds_a_skew() -> None:
    fair = simulate_srm(runs=RUNS, looks=LOOKS, batch_units=BATCH, planned=(1, 1),
                        actual=(1, 1), alpha=0.05, seed=5)
    print(f"SRM on a fair split: sequential {fair.sequential_detection_rate:.1%}, "
          f"chi-square peeked {fair.chi_square_detection_rate:.1%}")
    assert fair.sequential_detection_rate <= 0.05
    assert fair.chi_square_detection_rate > 0.15
    three = simulate_srm(runs=RUNS, looks=LOOKS, batch_units=BATCH, planned=(2, 1, 1),
                         actual=(2, 1, 1), alpha=0.05, seed=6)
    assert three.sequential_detection_rate <= 0.05
    skewed = simulate_srm(runs=RUNS, looks=LOOKS, batch_units=BATCH, planned=(1, 1),
                          actual=(52, 48), alpha=0.001, seed=7)
    print(f"SRM on a 52/48 split at p < 0.001: found in {skewed.sequential_detection_rate:.1%} "
          f"of runs after {skewed.mean_units_to_detection:.0f} units on average")
    assert skewed.sequential_detection_rate >= 0.8
