"""Choices packed for the likelihood of the choice model (`learning`). Pure: numpy, no I/O.

- A factor an option does not carry takes the mean of that factor over the options shown with
  it, so it moves no option up or down (a conditional logit only sees differences within a
  session).
- Ranks 2 to `max_rank_terms` each get an indicator column (rank 1 is the reference); ranks
  from `max_rank_terms` on share the last one.
- Propensities are used as clipped, self-normalised inverse-propensity weights per *session*:
  `w_i = 1 / max(product of the shown options' propensities, 0.05)`, rescaled to mean 1. The
  product stands for the probability of the arrangement shown (exact when only one placement
  was randomised, an approximation otherwise). Why a session weight and not the chosen
  option's `1 / propensity`: that weight depends on the outcome (which option was taken), and
  outcome-dependent weights bias a choice model; in the simulation it pushed the rank-4..6
  effects to -2.2 against a true -1.1. Why not an offset: `log propensity` offsets correct for
  sampled choice *sets*, while the logged propensity is the probability of a *placement*, whose
  effect the rank terms model. The session weights make the sample resemble one in which every
  arrangement was equally likely, which protects the weights when the logging policy's
  placements correlate with something the model does not see. With deterministic ranking every
  propensity is 1 and this is the plain conditional logit. Rescaling to mean 1 keeps the prior's
  strength and the Laplace sample size comparable to an unweighted fit; the clip bounds the
  variance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_PROPENSITY = 0.05


@dataclass(frozen=True)
class ObservedChoice:
    """One session that ended in a choice: the options shown and which one was taken.

    `options` are the logged options (`item_id`, `rank`, `scores`, optional `propensity`).
    """

    options: Sequence[Mapping[str, Any]]
    chosen_item_id: str


@dataclass(frozen=True)
class ChoiceData:
    """Choices packed for the likelihood: `design` is (sessions, max options, parameters) with
    the factor scores then the rank indicators; `mask` marks real options."""

    factors: tuple[str, ...]
    rank_terms: int
    design: np.ndarray
    mask: np.ndarray
    chosen: np.ndarray
    weights: np.ndarray
    max_rank: int

    @property
    def size(self) -> int:
        return int(self.chosen.shape[0])


def factors_of(choices: Iterable[ObservedChoice]) -> tuple[str, ...]:
    """Every factor any shown option carried, sorted."""
    names: set[str] = set()
    for choice in choices:
        for option in choice.options:
            names.update(option.get("scores") or {})
    return tuple(sorted(names))


def pack_choices(
    choices: Sequence[ObservedChoice], factors: Sequence[str], *, max_rank_terms: int = 10
) -> ChoiceData:
    """Choices as arrays. A choice whose chosen item is not among its options, or whose
    session showed a single option (nothing to learn), is skipped."""
    usable = [
        choice
        for choice in choices
        if len(choice.options) >= 2
        and any(option.get("item_id") == choice.chosen_item_id for option in choice.options)
    ]
    k = len(factors)
    rank_terms = max_rank_terms - 1
    width = max((len(choice.options) for choice in usable), default=2)
    design = np.zeros((len(usable), width, k + rank_terms))
    mask = np.zeros((len(usable), width), dtype=bool)
    chosen = np.zeros(len(usable), dtype=np.int64)
    # The probability of the arrangement shown, approximated by the product of the marginals.
    propensity = np.ones(len(usable))
    for i, choice in enumerate(usable):
        options = sorted(choice.options, key=lambda option: int(option.get("rank", 1)))
        scores = np.array(
            [[_score(option, name) for name in factors] for option in options], dtype=float
        )
        # A missing factor takes the set's mean: no difference, no pull either way.
        present = ~np.isnan(scores)
        sums = np.where(present, scores, 0.0).sum(axis=0, keepdims=True)
        means = sums / np.maximum(present.sum(axis=0, keepdims=True), 1)
        scores = np.where(present, scores, means)
        design[i, : len(options), :k] = scores
        for j, option in enumerate(options):
            bucket = min(int(option.get("rank", j + 1)), max_rank_terms) - 2
            if bucket >= 0:
                design[i, j, k + bucket] = 1.0
            if option.get("item_id") == choice.chosen_item_id:
                chosen[i] = j
            logged = option.get("propensity")
            propensity[i] *= float(logged) if logged else 1.0
        mask[i, : len(options)] = True
    weights = 1.0 / np.maximum(propensity, MIN_PROPENSITY)
    if weights.size:
        weights = weights / weights.mean()
    max_rank = max(
        (int(option.get("rank", 1)) for choice in usable for option in choice.options), default=1
    )
    return ChoiceData(
        tuple(factors), rank_terms, design, mask, chosen, weights, min(max_rank, max_rank_terms)
    )


def _score(option: Mapping[str, Any], name: str) -> float:
    value = (option.get("scores") or {}).get(name)
    return float(value) if value is not None else float("nan")
