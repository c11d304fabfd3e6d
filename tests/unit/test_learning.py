"""The pure parts of learning: packing choices, bounds and normalisation, defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.learner.choice_data import ObservedChoice, pack_choices
from services.learner.learning import (
    FitOptions,
    WeightBounds,
    default_weights,
    fit_segments,
    normalize,
    project_to_bounds,
)
from services.learner.processing import PendingChoices, segments_due, weights_message


def _option(item: str, rank: int, propensity: float | None = None, **scores: float) -> dict:
    option: dict = {"item_id": item, "rank": rank, "scores": scores}
    if propensity is not None:
        option["propensity"] = propensity
    return option


def test_a_missing_factor_takes_the_sessions_mean_so_it_favours_no_option() -> None:
    choice = ObservedChoice(
        [_option("a", 1, price=0.2, quality=0.9), _option("b", 2, price=0.6),
         _option("c", 3, price=1.0, quality=0.3)],
        "b",
    )
    data = pack_choices([choice], ("price", "quality"), max_rank_terms=4)
    assert data.design[0, :, 1].tolist() == pytest.approx([0.9, 0.6, 0.3])
    assert data.design[0, :, 0].tolist() == pytest.approx([0.2, 0.6, 1.0])
    # Rank indicators: rank 1 is the reference, ranks 2 and 3 have a column each.
    assert data.design[0, :, 2:].tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    assert data.chosen.tolist() == [1]
    assert data.max_rank == 3


def test_choices_that_teach_nothing_are_skipped() -> None:
    alone = ObservedChoice([_option("a", 1, price=1.0)], "a")
    unknown = ObservedChoice([_option("a", 1, price=1.0), _option("b", 2, price=0.0)], "zzz")
    assert pack_choices([alone, unknown], ("price",)).size == 0
    assert fit_segments({"balanced": [alone, unknown]}) is None
    assert fit_segments({}) is None


def test_session_weights_follow_the_arrangement_propensity_and_average_one() -> None:
    shown = [
        ObservedChoice([_option("a", 1, 0.9, price=1.0), _option("b", 2, 0.5, price=0.0)], "b"),
        ObservedChoice([_option("a", 1, price=1.0), _option("b", 2, price=0.0)], "a"),
        ObservedChoice([_option("a", 1, 0.01, price=1.0), _option("b", 2, 0.01, price=0.0)], "a"),
    ]
    weights = pack_choices(shown, ("price",)).weights
    raw = np.array([1 / 0.45, 1.0, 1 / 0.05])  # the last is clipped at 0.05
    assert weights.tolist() == pytest.approx((raw / raw.mean()).tolist())
    assert weights.mean() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("raw", "bounds", "expected"),
    [
        ([0.5, 0.3, 0.2], WeightBounds(0.02, 0.8), [0.5, 0.3, 0.2]),
        ([0.97, 0.02, 0.01], WeightBounds(0.02, 0.8), [0.8, 0.105, 0.095]),
        ([0.6, 0.4, 0.0], WeightBounds(0.05, 0.8), [0.575, 0.375, 0.05]),
        ([1.0], WeightBounds(0.02, 0.8), [1.0]),  # one factor: the cap widens to 1
    ],
)
def test_served_weights_are_projected_into_bounds_and_sum_to_one(
    raw: list[float], bounds: WeightBounds, expected: list[float]
) -> None:
    projected = project_to_bounds(np.array(raw), bounds)
    assert projected.tolist() == pytest.approx(expected, abs=1e-6)
    assert projected.sum() == pytest.approx(1.0)
    low, high = bounds.for_factors(len(raw))
    assert (projected >= low - 1e-9).all() and (projected <= high + 1e-9).all()


def test_normalize_clips_negatives_and_falls_back_to_equal_weights() -> None:
    assert normalize(np.array([2.0, -1.0, 2.0])).tolist() == [0.5, 0.0, 0.5]
    assert normalize(np.array([0.0, 0.0])).tolist() == [0.5, 0.5]
    assert normalize(np.array([[1.0, 3.0], [0.0, 0.0]])).tolist() == [[0.25, 0.75], [0.5, 0.5]]


def test_defaults_weigh_every_factor_alike() -> None:
    assert default_weights(["price", "quality", "speed", "locality"]) == {
        "price": 0.25, "quality": 0.25, "speed": 0.25, "locality": 0.25,
    }
    assert default_weights([]) == {}


def test_weights_stay_non_negative_when_customers_prefer_a_low_score() -> None:
    # Customers here always take the option with the *lower* price score: the best fit is a
    # negative coefficient, which the bound turns into the smallest allowed weight.
    rng = np.random.default_rng(1)
    choices = []
    for index in range(200):
        price = rng.uniform(size=3)
        quality = rng.uniform(size=3)
        options = [_option(f"{index}-{j}", j + 1, price=float(price[j]),
                           quality=float(quality[j])) for j in range(3)]
        choices.append(ObservedChoice(options, f"{index}-{int(np.argmax(quality - price))}"))
    fit = fit_segments({"balanced": choices}, FitOptions(bounds=WeightBounds(0.05, 0.9)))
    assert fit is not None
    learned = fit.segments["balanced"]
    assert learned.coefficients["price"] == pytest.approx(0.0, abs=1e-6)
    assert learned.weights == pytest.approx({"price": 0.1, "quality": 0.9})
    assert sum(learned.weights.values()) == pytest.approx(1.0)
    assert learned.weights["price"] >= 0.05


def test_a_segment_is_due_after_n_new_choices_or_t_seconds_with_any() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    pending = [
        PendingChoices("acme", "price_sensitive", 50, now - timedelta(seconds=1), now),
        PendingChoices("acme", "balanced", 3, now - timedelta(seconds=10), now - timedelta(
            seconds=301)),
        PendingChoices("acme", "speed_priority", 3, now - timedelta(seconds=10),
                       now - timedelta(seconds=10)),
        PendingChoices("beta", "balanced", 1, now - timedelta(seconds=300), None),
        PendingChoices("beta", "premium_buyer", 1, now - timedelta(seconds=299), None),
        PendingChoices("gamma", "balanced", 0, now - timedelta(days=1), None),
    ]
    assert segments_due(pending, now=now, min_new_choices=50, interval_seconds=300) == {
        "acme": ["balanced", "price_sensitive"],
        "beta": ["balanced"],
    }


def test_a_weights_message_carries_the_version_and_its_uncertainty() -> None:
    fitted_at = datetime(2026, 1, 1, tzinfo=UTC)
    message = weights_message({
        "tenant_id": "acme", "segment": "balanced", "version": 3,
        "weights": {"price": 0.6, "quality": 0.4},
        "intervals": {"price": [0.5, 0.7], "quality": [0.3, 0.5]},
        "confidence": 0.8, "sample_size": 120, "rank_effects": {"1": 0.0, "2": -0.4},
        "fitted_at": fitted_at,
    })
    # Schema version 2: a stored version from before 0017 is a full refit with no promotion.
    assert message == {
        "type": "segment_weights.version", "schema_version": 2, "tenant_id": "acme",
        "kind": "full", "promotion": None,
        "segment": "balanced", "version": 3, "weights": {"price": 0.6, "quality": 0.4},
        "intervals": {"price": [0.5, 0.7], "quality": [0.3, 0.5]}, "confidence": 0.8,
        "sample_size": 120, "rank_effects": {"1": 0.0, "2": -0.4},
        "fitted_at": "2026-01-01T00:00:00+00:00",
    }
