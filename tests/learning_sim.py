"""Simulated customers with known utilities, for the learner's tests and benchmarks: logit
customers with position bias and an outside option, ranked by one of three policies (no
exploration, the shuffle, Thompson sampling) while the learner learns online the way the
service does (a full fit once there are enough choices, then incremental updates every batch,
a full refit every `refit_every` choices, shift detection on every batch).

Pure and seeded: the same seed gives the same numbers.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from services.learner.adaptive import (
    BatchScore,
    batch_score,
    detect_shift,
    incremental_update,
)
from services.learner.choice_data import ObservedChoice, pack_choices
from services.learner.learning import (
    FitOptions,
    Posterior,
    default_weights,
    fit_segments,
    normalize,
)
from services.learner.ranking import Candidate, rank_candidates, thompson_rank

FACTORS = ("locality", "price", "quality", "speed")
UTILITY_SCALE = 6.0
POSITION_BIAS = (0.0, -0.5, -0.8, -1.0, -1.1, -1.2)
OUTSIDE_OPTION = 4.0
OPTIONS = 6
TRUTHS = {
    "price_sensitive": {"price": 0.55, "quality": 0.2, "speed": 0.15, "locality": 0.1},
    "quality_focused": {"price": 0.1, "quality": 0.6, "speed": 0.15, "locality": 0.15},
    "speed_priority": {"price": 0.15, "quality": 0.15, "speed": 0.6, "locality": 0.1},
}


def truth_vector(truth: Mapping[str, float]) -> np.ndarray:
    return np.array([truth[name] for name in FACTORS])


def conversion(utilities: np.ndarray) -> float:
    """P(the customer takes an option) when options of these utilities are shown in order."""
    shown = np.exp(utilities + np.array(POSITION_BIAS[: utilities.size]))
    return float(shown.sum() / (shown.sum() + np.exp(OUTSIDE_OPTION)))


@dataclass
class OnlineLearner:
    """The service's learning loop, in memory (see services/learner/refits/)."""

    min_choices: int = 30
    batch: int = 25
    refit_every: int = 250
    shift_alpha: float = 1e-3
    shift_batches: int = 40
    shift_min_history: int = 200
    detect_shifts: bool = True
    posterior: Posterior | None = None
    choices: list[ObservedChoice] = field(default_factory=list)
    window_start: int = 0
    pending: list[ObservedChoice] = field(default_factory=list)
    scores: list[tuple[int, BatchScore]] = field(default_factory=list)  # (first index, score)
    since_refit: int = 0
    shifts: list[int] = field(default_factory=list)  # choice counts at which shifts were found

    def observe(self, choice: ObservedChoice) -> None:
        self.choices.append(choice)
        self.pending.append(choice)
        if self.posterior is None:
            if len(self.choices) - self.window_start >= self.min_choices:
                self.refit()
            return
        if len(self.pending) >= self.batch:
            self.update()

    def refit(self) -> None:
        window = self.choices[self.window_start:]
        fit = fit_segments({"segment": window}, FitOptions())
        assert fit is not None
        self.posterior = fit.segments["segment"].posterior
        self.pending, self.since_refit = [], 0

    def update(self) -> None:
        assert self.posterior is not None
        data = pack_choices(self.pending, self.posterior.factors)
        first = len(self.choices) - len(self.pending)
        self.scores.append((first, batch_score(self.posterior, data)))
        self.scores = self.scores[-self.shift_batches:]
        updated = incremental_update(self.posterior, data)
        if updated is not None:
            self.posterior = updated
        self.since_refit += len(self.pending)
        self.pending = []
        if self.detect_shifts and len(self.choices) - self.window_start >= self.shift_min_history:
            kept = [(at, score) for at, score in self.scores if at >= self.window_start]
            test = detect_shift([score for _, score in kept], alpha=self.shift_alpha)
            if test.detected:
                self.window_start = kept[test.change_batch][0]
                self.scores = [(at, s) for at, s in self.scores if at >= self.window_start]
                self.shifts.append(len(self.choices))
                self.refit()
                return
        if self.since_refit >= self.refit_every:
            self.refit()

    def served(self) -> dict[str, float]:
        if self.posterior is None:
            return default_weights(FACTORS)
        weights = normalize(self.posterior.beta)
        return dict(zip(self.posterior.factors, map(float, weights), strict=True))


def _session(rng: np.random.Generator, index: int) -> list[Candidate]:
    scores = rng.uniform(0.0, 1.0, size=(OPTIONS, len(FACTORS)))
    return [Candidate(f"i{index}-{j}", dict(zip(FACTORS, map(float, row), strict=True)))
            for j, row in enumerate(scores)]


def _show(policy: str, candidates: list[Candidate], learner: OnlineLearner,
          shuffle: random.Random, draws: np.random.Generator) -> list[dict[str, object]]:
    weights = learner.served()
    if policy == "thompson" and learner.posterior is not None:
        posterior = learner.posterior
        coefficients = dict(zip(posterior.factors, map(float, posterior.beta), strict=True))
        ranked = thompson_rank(candidates, weights, coefficients,
                               posterior.beta_covariance.tolist(), rng=draws, draws=64)
    else:
        rate = 0.3 if policy in ("shuffle", "thompson") else 0.0
        ranked = rank_candidates(candidates, weights, exploration_rate=rate, rng=shuffle)
    scores = {c.item_id: dict(c.scores) for c in candidates}
    return [{"item_id": r.item_id, "rank": r.rank, "scores": scores[r.item_id],
             "propensity": r.propensity} for r in ranked]


@dataclass(frozen=True)
class Run:
    regret: float  # cumulative, in expected conversions
    conversions: float  # expected conversions of the shown orders
    learner: OnlineLearner
    errors: list[tuple[int, float]]  # (choices since the change, mean absolute weight error)
    post_change: list[ObservedChoice]


def simulate(
    policy: str, sessions: int, seed: int, *, truth: Mapping[str, float],
    change_at: int | None = None, changed: Mapping[str, float] | None = None,
    learner: OnlineLearner | None = None, checkpoint_every: int = 50,
) -> Run:
    """Sessions ranked by `policy` (`none`, `shuffle` or `thompson`) with the learner learning
    online; customers follow `truth`, then `changed` from session `change_at` on. Regret per
    session is the conversion probability of the true order minus that of the order shown."""
    rng = np.random.default_rng(seed)
    shuffle, draws = random.Random(seed), np.random.default_rng(seed + 1)
    learner = learner or OnlineLearner()
    regret = conversions = 0.0
    errors: list[tuple[int, float]] = []
    post_change: list[ObservedChoice] = []
    for index in range(sessions):
        after = change_at is not None and index >= change_at
        current = truth_vector(changed if after and changed else truth)
        candidates = _session(rng, index)
        shown = _show(policy, candidates, learner, shuffle, draws)
        scores = np.array([[option["scores"][name] for name in FACTORS]  # type: ignore[index]
                           for option in shown])
        utility = UTILITY_SCALE * scores @ current
        got = conversion(utility)
        regret += conversion(np.sort(utility)[::-1]) - got
        conversions += got
        noisy = utility + np.array(POSITION_BIAS) + rng.gumbel(size=OPTIONS)
        best = int(np.argmax(noisy))
        if noisy[best] < OUTSIDE_OPTION + rng.gumbel():
            continue
        choice = ObservedChoice(shown, str(shown[best]["item_id"]))
        learner.observe(choice)
        if after:
            post_change.append(choice)
            if len(post_change) % checkpoint_every == 0:
                served = np.array([learner.served()[name] for name in FACTORS])
                errors.append((len(post_change), float(np.abs(served - current).mean())))
    return Run(regret, conversions, learner, errors, post_change)


def oracle_errors(post_change: Sequence[ObservedChoice], truth: Mapping[str, float],
                  checkpoints: Sequence[int]) -> list[tuple[int, float]]:
    """The error of a fit on the first n post-change choices only, at each checkpoint n."""
    target = truth_vector(truth)
    errors = []
    for n in checkpoints:
        fit = fit_segments({"segment": list(post_change[:n])}, FitOptions())
        assert fit is not None
        posterior = fit.segments["segment"].posterior
        assert posterior is not None
        weights = dict(zip(posterior.factors, normalize(posterior.beta), strict=True))
        errors.append((n, float(np.abs(np.array([weights[f] for f in FACTORS])
                                       - target).mean())))
    return errors


def recovery_choices(served: Sequence[tuple[int, float]], oracle: Sequence[tuple[int, float]],
                     ratio: float = 1.3) -> int | None:
    """The first checkpoint from which the served error stays within `ratio` times the
    oracle's at every later checkpoint; None when it never does."""
    oracle_at = dict(oracle)
    recovered: int | None = None
    for n, error in served:
        if error <= ratio * oracle_at[n]:
            recovered = n if recovered is None else recovered
        else:
            recovered = None
    return recovered
