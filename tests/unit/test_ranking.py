"""Ranking with weights: order, explanations, exact propensities under exploration."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.learner.ranking import Candidate, rank_candidates, weights_for

CANDIDATES = [
    Candidate("cheap", {"price": 0.9, "quality": 0.2}),
    Candidate("good", {"price": 0.3, "quality": 0.95}, category="plumbing"),
    Candidate("middle", {"price": 0.6, "quality": 0.6}),
    Candidate("unknown", {}),
]


def test_candidates_are_ordered_by_weighted_score_with_contributions() -> None:
    ranked = rank_candidates(CANDIDATES, {"price": 0.8, "quality": 0.2})
    assert [r.item_id for r in ranked] == ["cheap", "middle", "good", "unknown"]
    assert [r.rank for r in ranked] == [1, 2, 3, 4]
    assert ranked[0].contributions == pytest.approx({"price": 0.72, "quality": 0.04})
    assert ranked[0].total == pytest.approx(0.76)
    assert ranked[2].category == "plumbing"
    assert ranked[3].contributions == {} and ranked[3].total == 0.0
    assert all(r.propensity == 1.0 for r in ranked)
    quality_first = rank_candidates(CANDIDATES, {"price": 0.2, "quality": 0.8})
    assert quality_first[0].item_id == "good"


def test_defaults_weigh_the_candidates_factors_alike_until_weights_are_learned() -> None:
    assert weights_for(None, CANDIDATES) == {"price": 0.5, "quality": 0.5}
    assert weights_for({}, CANDIDATES) == {"price": 0.5, "quality": 0.5}
    assert weights_for({"price": 0.7, "quality": 0.3}, CANDIDATES) == {"price": 0.7,
                                                                       "quality": 0.3}


def test_exploration_propensities_match_the_observed_frequencies() -> None:
    weights = {"price": 0.8, "quality": 0.2}
    rate, k, draws = 0.3, 3, 6_000
    rng = random.Random(7)
    placements: Counter[tuple[str, int]] = Counter()
    logged: dict[tuple[str, int], float] = {}
    for _ in range(draws):
        for r in rank_candidates(CANDIDATES, weights, exploration_rate=rate,
                                 explore_top_k=k, rng=rng):
            placements[(r.item_id, r.rank)] += 1
            logged[(r.item_id, r.rank)] = r.propensity
    assert logged[("cheap", 1)] == pytest.approx(0.7 + 0.1)
    assert logged[("good", 1)] == pytest.approx(0.1)
    assert logged[("unknown", 4)] == 1.0
    for placement, propensity in logged.items():
        assert placements[placement] / draws == pytest.approx(propensity, abs=0.02), placement
