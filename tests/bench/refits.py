"""Refit time of the learner's segment weights against the number of choices (pure CPU)."""

from __future__ import annotations

import statistics
import time

import numpy as np

from services.learner.learning import ObservedChoice, fit_segments

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
