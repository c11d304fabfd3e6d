"""Segment rules and suppression thresholds (services/profiles/segments.py)."""

from __future__ import annotations

import pytest

from services.profiles.segments import (
    Decision,
    action_type_verdicts,
    assign_segment,
    category_verdicts,
    segment_from_stated,
)


def _shown(**best_on: str) -> list[dict]:
    """Three options; the one named in `best_on[factor]` is the best on that factor, and
    option c is the best on every factor not named."""
    factors = ("price", "quality", "speed", "distance")
    baseline = {"a": 0.3, "b": 0.2, "c": 0.5}
    options = []
    for item in ("a", "b", "c"):
        scores = {f: (0.9 if best_on.get(f) == item else baseline[item]) for f in factors}
        options.append({"item_id": item, "rank": "abc".index(item) + 1, "scores": scores,
                        "category": f"cat-{item}"})
    return options


def test_no_decisions_means_balanced() -> None:
    assert assign_segment([]).segment == "balanced"


def test_stated_factors_alone_decide_when_one_leads() -> None:
    stated = [Decision(_shown(), None, important_factors=["Price"]) for _ in range(3)]
    assignment = assign_segment(stated)
    assert assignment.segment == "price_sensitive"
    assert "named price in 3 of 3 decisions" in assignment.reasons
    assert segment_from_stated(["delivery_time"]).segment == "speed_priority"
    assert segment_from_stated(["distance"]).segment == "local_preference"
    assert segment_from_stated(["price", "quality"]).segment == "balanced"  # a tie
    assert segment_from_stated(["colour"]).segment == "balanced"  # not a known factor


def test_behaviour_counts_from_five_choices() -> None:
    chose_fast = [Decision(_shown(speed="b"), "b") for _ in range(4)]
    assert assign_segment(chose_fast).segment == "balanced"
    assignment = assign_segment([*chose_fast, Decision(_shown(speed="b"), "b")])
    assert assignment.segment == "speed_priority"
    assert assignment.evidence["speed"] == pytest.approx(1.0)
    assert "the chosen option was best on speed in 5 of 5 choices" in assignment.reasons


def test_premium_buyers_choose_quality_and_never_the_cheapest() -> None:
    premium = [Decision(_shown(quality="a", price="b"), "a") for _ in range(6)]
    assert assign_segment(premium).segment == "premium_buyer"
    # The same choices from someone who says price matters: quality-focused, not premium.
    named_price = [Decision(d.options, d.chosen_item_id, ["price"]) for d in premium[:1]]
    assert assign_segment(premium[1:] + named_price).segment == "quality_focused"
    # Choosing options that are best on both quality and price is not premium either.
    both = [Decision(_shown(quality="a", price="a"), "a") for _ in range(6)]
    assert assign_segment(both).segment == "balanced"  # no lead: both win every time


def test_the_segment_changes_as_evidence_accumulates() -> None:
    early = [Decision(_shown(), None, important_factors=["quality"])]
    assert assign_segment(early).segment == "quality_focused"
    later = early + [Decision(_shown(distance="b"), "b", ["distance"]) for _ in range(8)]
    assert assign_segment(later).segment == "local_preference"


def test_an_action_type_is_avoided_after_three_rejections_at_eighty_percent() -> None:
    verdicts = {v.name: v for v in action_type_verdicts([
        {"action_type": "email", "accepted": 0, "rejected": 3},
        {"action_type": "sms", "accepted": 0, "rejected": 2},       # too few
        {"action_type": "call", "accepted": 1, "rejected": 4},      # exactly 80%
        {"action_type": "todo", "accepted": 2, "rejected": 4},      # 67%: not consistent
        {"action_type": "note", "accepted": 5, "rejected": 1},
    ])}
    assert {name: v.status for name, v in verdicts.items()} == {
        "email": "avoid", "sms": "neutral", "call": "avoid", "todo": "neutral",
        "note": "prefer",
    }
    assert verdicts["call"].rejection_rate == pytest.approx(0.8)


def test_a_category_passed_over_five_times_is_avoided() -> None:
    decisions = [Decision(_shown(), "a") for _ in range(5)]
    verdicts = {v.name: v for v in category_verdicts(decisions)}
    assert (verdicts["cat-a"].status, verdicts["cat-a"].accepted) == ("prefer", 5)
    assert (verdicts["cat-b"].status, verdicts["cat-b"].rejected) == ("avoid", 5)
    assert {v.name: v.status for v in category_verdicts(decisions[:4])}["cat-b"] == "neutral"
    # Choosing nothing rejects every category shown.
    nothing = category_verdicts([Decision(_shown(), None)])
    assert all(v.rejected == 1 and v.accepted == 0 for v in nothing)
