"""The word diff the review queue shows between the AI's reply and the agent's."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from services.query.console.diff import Run, side, tokens, word_diff


def test_words_changed_are_marked_and_the_rest_kept() -> None:
    runs = word_diff("I added milk to your todo list.", "I added oat milk to your shopping list.")
    assert runs == [
        Run("same", "I added "), Run("ins", "oat "), Run("same", "milk to your "),
        Run("del", "todo "), Run("ins", "shopping "), Run("same", "list."),
    ]
    assert "".join(r.text for r in side(runs, "before")) == "I added milk to your todo list."
    assert "".join(r.text for r in side(runs, "after")) == "I added oat milk to your shopping list."


def test_identical_and_empty_texts() -> None:
    assert word_diff("same text", "same text") == [Run("same", "same text")]
    assert word_diff("", "new") == [Run("ins", "new")]
    assert word_diff("old", "") == [Run("del", "old")]


def test_markup_is_only_text_here() -> None:
    runs = word_diff("<b>hi</b>", "<script>alert(1)</script>")
    assert {run.text for run in runs} == {"<b>hi</b>", "<script>alert(1)</script>"}


def test_line_breaks_and_spacing_survive() -> None:
    before, after = "line one\n\nline  two", "line one\nline  three"
    runs = word_diff(before, after)
    assert "".join(r.text for r in side(runs, "before")) == before
    assert "".join(r.text for r in side(runs, "after")) == after


@given(st.text(max_size=200), st.text(max_size=200))
def test_each_side_joins_back_to_its_text(before: str, after: str) -> None:
    assert "".join(tokens(before)) == before
    runs = word_diff(before, after)
    assert "".join(r.text for r in side(runs, "before")) == before
    assert "".join(r.text for r in side(runs, "after")) == after
    assert all(a.op != b.op for a, b in pairwise(runs))
