"""Refit time of the learner's segment weights against the number of choices (pure CPU)."""

from __future__ import annotations

import statistics
import time

import numpy as np

from services.learner.choice_data import ObservedChoice
from services.learner.learning import fit_segments

FACTORS = ("price", "quality", "speed", "locality")
TRUE_WEIGHTS = {
    "price_sensitive": (3.0, 0.8, 0.6, 0.2),
    "quality_focused": (0.5, 3.0, 0.8, 0.4),
    "speed_priority": (0.6, 0.8, 3.0, 0.3),
}


def synthetic_choices(segment: str, count: int, rng: np.random.Generator) -> list[ObservedChoice]:
    """Customers choosing among 6 shown options by a logit of the true weights and a position
    bias, as logged by the product."""
    weights = np.array(TRUE_WEIGHTS[segment])
    position = -0.25 * np.arange(6)
    choices = []
    for _ in range(count):
        scores = rng.random((6, len(FACTORS)))
        utility = scores @ weights + position + rng.gumbel(size=6)
        options = [
            {"item_id": f"i{rank}", "rank": rank + 1,
             "scores": dict(zip(FACTORS, map(float, scores[rank]), strict=True))}
            for rank in range(6)
        ]
        choices.append(ObservedChoice(options, f"i{int(np.argmax(utility))}"))
    return choices


def refit_seconds(sizes: tuple[int, ...] = (300, 1_000, 3_000, 10_000), rounds: int = 3
                  ) -> dict[str, float]:
    """Median seconds of a full refit (global fit plus three segments) per total choices."""
    rng = np.random.default_rng(0)
    timings: dict[str, float] = {}
    for size in sizes:
        per_segment = size // len(TRUE_WEIGHTS)
        data = {segment: synthetic_choices(segment, per_segment, rng) for segment in TRUE_WEIGHTS}
        runs = []
        for _ in range(rounds):
            started = time.perf_counter()
            fit_segments(data)
            runs.append(time.perf_counter() - started)
        timings[str(per_segment * len(TRUE_WEIGHTS))] = statistics.median(runs)
    return timings


def update_against_refit(sizes: tuple[int, ...] = (1_000, 10_000), batch: int = 10,
                         rounds: int = 3) -> list[dict[str, float]]:
    """Side by side: the incremental update of a posterior fitted on N choices with `batch`
    new ones (what a choice waits for between refits) against the full refit on N + batch
    (what it waited for before), median seconds and their ratio."""
    from services.learner.adaptive import incremental_update
    from services.learner.choice_data import pack_choices
    from services.learner.learning import FitOptions

    rng = np.random.default_rng(1)
    rows = []
    for size in sizes:
        history = synthetic_choices("price_sensitive", size, rng)
        new = synthetic_choices("price_sensitive", batch, rng)
        fit = fit_segments({"price_sensitive": history}, FitOptions())
        assert fit is not None and fit.segments["price_sensitive"].posterior is not None
        posterior = fit.segments["price_sensitive"].posterior
        incremental, full = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            incremental_update(posterior, pack_choices(new, posterior.factors))
            incremental.append(time.perf_counter() - started)
            started = time.perf_counter()
            fit_segments({"price_sensitive": history + new}, FitOptions())
            full.append(time.perf_counter() - started)
        rows.append({"choices": size, "batch": batch,
                     "incremental_s": statistics.median(incremental),
                     "full_refit_s": statistics.median(full),
                     "ratio": statistics.median(full) / statistics.median(incremental)})
    return rows


def learning_simulations(choices_per_segment: int = 1_500, seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
                         ) -> dict[str, object]:
    """Full-size simulations with known truth (tests/learning_sim.py): cumulative regret per
    policy over three segments, side by side in one run; and, over `seeds`, how soon a shift
    is detected and how soon the served weights return within 1.3x of the post-change
    oracle's error."""
    from tests.learning_sim import (
        TRUTHS,
        OnlineLearner,
        oracle_errors,
        recovery_choices,
        simulate,
    )

    sessions = int(choices_per_segment / 0.7)  # conversion is about 70% in this world
    regret: dict[str, float] = {}
    conversions: dict[str, float] = {}
    for policy in ("none", "shuffle", "thompson"):
        runs = [simulate(policy, sessions, 100 + index, truth=truth,
                         learner=OnlineLearner(detect_shifts=False))
                for index, truth in enumerate(TRUTHS.values())]
        regret[policy] = sum(run.regret for run in runs)
        conversions[policy] = sum(run.conversions for run in runs)
    shifts = []
    for seed in seeds:
        run = simulate("shuffle", 2 * sessions, seed, truth=TRUTHS["price_sensitive"],
                       change_at=sessions, changed=TRUTHS["quality_focused"])
        before = len(run.learner.choices) - len(run.post_change)
        oracle = oracle_errors(run.post_change, TRUTHS["quality_focused"],
                               [n for n, _ in run.errors])
        shifts.append({
            "seed": seed,
            # Every detection, in choices after the change (negative: a false alarm before it).
            "detected_after_choices": [at - before for at in run.learner.shifts],
            "recovered_within_1_3x_after_choices": recovery_choices(run.errors, oracle),
            "final_error": run.errors[-1][1], "final_oracle_error": oracle[-1][1],
        })
    return {"sessions_per_segment": sessions, "regret": regret,
            "expected_conversions": conversions, "shifts": shifts}


def learning_table(updates: list[dict[str, float]], simulations: dict[str, object]) -> str:
    lines = ["learner: incremental update of a batch against the full refit it replaces"]
    for row in updates:
        lines.append(f"  {row['choices']:>6} choices + {row['batch']}: incremental "
                     f"{row['incremental_s'] * 1000:.1f} ms, full refit "
                     f"{row['full_refit_s'] * 1000:.0f} ms, ratio {row['ratio']:.0f}x")
    regret = simulations["regret"]
    conversions = simulations["expected_conversions"]
    assert isinstance(regret, dict) and isinstance(conversions, dict)
    lines.append("learner: cumulative regret (expected conversions lost against the true order)"
                 f", 3 segments x {simulations['sessions_per_segment']} sessions")
    for policy, value in regret.items():
        lines.append(f"  {policy:<9} regret {value:7.1f}   expected conversions "
                     f"{conversions[policy]:8.1f}   ratio to shuffle {value / regret['shuffle']:.2f}")
    lines.append("learner: preference shift mid-stream (seed: detections in choices after the "
                 "change, negative = false alarm; recovered within 1.3x of the oracle after)")
    shifts = simulations["shifts"]
    assert isinstance(shifts, list)
    for shift in shifts:
        lines.append(f"  seed {shift['seed']}: {shift['detected_after_choices']}, "
                     f"{shift['recovered_within_1_3x_after_choices']}  (final error "
                     f"{shift['final_error']:.3f} vs oracle {shift['final_oracle_error']:.3f})")
    return "\n".join(lines)


if __name__ == "__main__":
    print(learning_table(update_against_refit(), learning_simulations()))
