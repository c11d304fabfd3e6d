"""Reviewer agreement against textbook values: Cohen's kappa and Fleiss' kappa."""

from __future__ import annotations

from collections import Counter

import pytest

from services.query.console.agreement import cohen_kappa, fleiss_kappa, label_agreement


def test_cohen_kappa_of_the_textbook_two_by_two_table() -> None:
    # 50 proposals read by A and B: both yes 20, A yes B no 5, A no B yes 10, both no 15.
    # p_o = 35/50 = 0.7; p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = 0.2 / 0.5 = 0.4.
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_cohen_kappa_of_three_categories() -> None:
    # Agreement on the diagonal 25 + 10 + 5 of 60; marginals A (30, 20, 10), B (35, 15, 10):
    # p_o = 40/60, p_e = (30*35 + 20*15 + 10*10) / 3600 = 1450/3600.
    pairs = (
        [("a", "a")] * 25 + [("a", "b")] * 3 + [("a", "c")] * 2
        + [("b", "a")] * 7 + [("b", "b")] * 10 + [("b", "c")] * 3
        + [("c", "a")] * 3 + [("c", "b")] * 2 + [("c", "c")] * 5
    )
    p_o, p_e = 40 / 60, 1450 / 3600
    assert cohen_kappa(pairs) == pytest.approx((p_o - p_e) / (1 - p_e))


def test_cohen_kappa_edges() -> None:
    assert cohen_kappa([]) is None
    assert cohen_kappa([("x", "x"), ("y", "y")]) == pytest.approx(1.0)
    assert cohen_kappa([("x", "x"), ("x", "x")]) is None  # one category: chance agreement is 1
    assert cohen_kappa([("x", "y"), ("y", "x")]) == pytest.approx(-1.0)


# Fleiss (1971) as in the usual worked example: 10 subjects, 14 raters each, 5 categories;
# P_bar = 0.378, P_e = 0.213, kappa = 0.210.
FLEISS_TABLE = [
    (0, 0, 0, 0, 14), (0, 2, 6, 4, 2), (0, 0, 3, 5, 6), (0, 3, 9, 2, 0), (2, 2, 8, 1, 1),
    (7, 7, 0, 0, 0), (3, 2, 6, 3, 0), (2, 5, 3, 2, 2), (6, 5, 2, 1, 0), (0, 2, 2, 3, 7),
]


def test_fleiss_kappa_of_the_textbook_table() -> None:
    subjects = [{str(j): n for j, n in enumerate(row) if n} for row in FLEISS_TABLE]
    assert fleiss_kappa(subjects) == pytest.approx(0.20993, abs=5e-5)


def test_fleiss_kappa_edges() -> None:
    assert fleiss_kappa([]) is None
    assert fleiss_kappa([{"a": 1}]) is None  # one rating is no agreement to measure
    assert fleiss_kappa([{"a": 3}, {"b": 3}]) == pytest.approx(1.0)
    assert fleiss_kappa([{"a": 3}, {"a": 3}]) is None


def test_label_agreement_picks_cohen_for_two_and_fleiss_for_more() -> None:
    two = {"r1": {"ann": "good", "bo": "good"}, "r2": {"ann": "bad", "bo": "good"},
           "r3": {"ann": "bad", "bo": "bad"}, "r4": {"ann": "good"}}
    result = label_agreement("verdict", two)
    assert result.method == "cohen" and result.items == 3
    assert result.kappa == pytest.approx(cohen_kappa([("good", "good"), ("bad", "good"),
                                                      ("bad", "bad")]))
    assert result.observed == pytest.approx(2 / 3)
    assert result.disagreements == ["r2"]

    three = {"r1": {"a": "x", "b": "x", "c": "x"}, "r2": {"a": "x", "b": "y", "c": "y"},
             "r3": {"a": "y", "b": "y"}, "r4": {"c": "x"}}
    result = label_agreement("verdict", three)
    assert result.method == "fleiss" and result.items == 3
    assert result.kappa == pytest.approx(fleiss_kappa([Counter(by.values()) for rid, by
                                                       in three.items() if rid != "r4"]))
    assert result.disagreements == ["r2"]
    # Pairs of answers that agree: r1 3 of 3, r2 1 of 3, r3 1 of 1.
    assert result.observed == pytest.approx(5 / 7)


def test_label_agreement_without_overlap() -> None:
    result = label_agreement("verdict", {"r1": {"a": "x"}, "r2": {"b": "y"}})
    assert result.items == 0 and result.kappa is None and result.disagreements == []
