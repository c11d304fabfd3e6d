"""The users' filter a part of an object export keeps in its manifest: never a false negative
(a part holding an erased user's rows is always read), few false positives, and a filter this
code did not write is taken to hold everyone."""

from __future__ import annotations

import hashlib

from services.trainer.exports.user_filter import may_hold, user_filter


def _digests(label: str, count: int) -> list[str]:
    return [hashlib.sha256(f"{label}{n}".encode()).hexdigest() for n in range(count)]


def test_every_user_in_a_filter_is_found_and_few_others_are() -> None:
    held = _digests("held", 5_000)
    written = user_filter(held)
    assert all(may_hold(written, [digest]) for digest in held)
    others = _digests("other", 20_000)
    false_positives = sum(may_hold(written, [digest]) for digest in others)
    assert false_positives < 0.02 * len(others), false_positives
    assert may_hold(written, [*others[:3], held[7]])


def test_a_small_or_empty_part_still_filters_and_a_foreign_filter_holds_everyone() -> None:
    assert not may_hold(user_filter([]), _digests("x", 1))
    few = _digests("few", 2)
    assert may_hold(user_filter(few), few[1:]) and not may_hold(user_filter(few), ["e" * 64])
    assert may_hold(user_filter(few) | {"hashes": 3}, ["e" * 64])
