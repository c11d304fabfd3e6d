"""Ranking candidates with a segment's weights, and the propensity of each placement. Pure.

Scoring is the weighted sum of the factor scores, `total = sum_k w_k * score_k`, and the
contributions `w_k * score_k` are the explanation. A factor a candidate does not carry
contributes 0 (it earns no credit for it); a factor the weights do not know has weight 0.

Exploration (off unless a rate is given): with probability `rate`, the top `k` of the
deterministic order are uniformly shuffled. The propensity of each shown placement is exact:
for a candidate whose deterministic rank is `r <= k`, being shown at `r` has probability
`(1 - rate) + rate / k` and any other rank within the top k `rate / k`; ranks below k are
never shuffled (propensity 1). The learner uses these propensities so that position effects
stay learnable from the randomised placements.

Thompson sampling (`thompson_rank`) is the other exploration: the order of one posterior draw,
with the propensities of the placements estimated from further draws.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from services.learner.learning import default_weights


@dataclass(frozen=True)
class Candidate:
    item_id: str
    scores: Mapping[str, float]
    category: str | None = None


@dataclass(frozen=True)
class RankedCandidate:
    item_id: str
    rank: int
    total: float
    contributions: dict[str, float]
    propensity: float
    category: str | None


def factors_of_candidates(candidates: Sequence[Candidate]) -> list[str]:
    return sorted({name for candidate in candidates for name in candidate.scores})


def weights_for(
    learned: Mapping[str, float] | None, candidates: Sequence[Candidate]
) -> dict[str, float]:
    """The learned weights when there are any, else equal weights over the candidates'
    factors (the defaults)."""
    if learned:
        return dict(learned)
    return default_weights(factors_of_candidates(candidates))


def contributions(candidate: Candidate, weights: Mapping[str, float]) -> dict[str, float]:
    return {name: weights.get(name, 0.0) * float(score)
            for name, score in sorted(candidate.scores.items())}


def rank_candidates(
    candidates: Sequence[Candidate],
    weights: Mapping[str, float],
    *,
    exploration_rate: float = 0.0,
    explore_top_k: int = 3,
    rng: random.Random | None = None,
) -> list[RankedCandidate]:
    """Candidates in the order shown, ranks from 1, each with its explanation and propensity.
    Ties are broken by item id so the deterministic order is stable."""
    explained = [(candidate, contributions(candidate, weights)) for candidate in candidates]
    explained.sort(key=lambda pair: (-sum(pair[1].values()), pair[0].item_id))
    k = min(explore_top_k, len(explained)) if exploration_rate > 0 else 0
    shown = list(explained)
    home = {pair[0].item_id: index for index, pair in enumerate(explained)}
    if k > 1:
        rng = rng or random.Random()
        if rng.random() < exploration_rate:
            top = shown[:k]
            rng.shuffle(top)
            shown[:k] = top
    ranked = []
    for index, (candidate, parts) in enumerate(shown):
        if k > 1 and index < k:
            stay = home[candidate.item_id] == index
            propensity = (1 - exploration_rate) + exploration_rate / k if stay else (
                exploration_rate / k
            )
        else:
            propensity = 1.0
        ranked.append(
            RankedCandidate(
                item_id=candidate.item_id,
                rank=index + 1,
                total=sum(parts.values()),
                contributions=parts,
                propensity=propensity,
                category=candidate.category,
            )
        )
    return ranked


THOMPSON_DRAWS = 256


def thompson_rank(
    candidates: Sequence[Candidate],
    weights: Mapping[str, float],
    coefficients: Mapping[str, float],
    covariance: Sequence[Sequence[float]],
    *,
    rng: np.random.Generator,
    draws: int = THOMPSON_DRAWS,
) -> list[RankedCandidate]:
    """Thompson sampling: candidates ordered by one draw of the coefficients from the
    segment's posterior `N(coefficients, covariance)` (clipped at 0 like the fit), so the
    order explores exactly as much as the posterior is unsure. The propensity of each shown
    placement is the share of `draws` further draws (and the one used) that put the candidate
    at that rank. Contributions and totals are those of the served `weights`, the
    explanation a customer sees; only the order follows the draw."""
    factors = list(coefficients)
    mean = np.array([coefficients[name] for name in factors], dtype=float)
    scores = np.array(
        [[float(c.scores.get(name, 0.0)) for name in factors] for c in candidates], dtype=float
    )
    sampled = np.maximum(
        rng.multivariate_normal(mean, np.array(covariance, dtype=float), size=draws + 1,
                                method="eigh"), 0.0)
    utility = sampled @ scores.T  # (draws + 1, candidates)
    ids = np.array([c.item_id for c in candidates])
    # Ties broken by item id, as in the deterministic order.
    tie = np.argsort(np.argsort(ids)) * 1e-12
    orders = np.argsort(-(utility - tie), axis=1, kind="stable")
    ranks = np.empty_like(orders)
    rows = np.arange(orders.shape[0])[:, None]
    ranks[rows, orders] = np.arange(orders.shape[1])[None, :]
    shown = orders[0]
    ranked = []
    for position, index in enumerate(shown):
        candidate = candidates[int(index)]
        parts = contributions(candidate, weights)
        ranked.append(RankedCandidate(
            item_id=candidate.item_id,
            rank=position + 1,
            total=sum(parts.values()),
            contributions=parts,
            propensity=float((ranks[:, index] == position).mean()),
            category=candidate.category,
        ))
    return ranked
