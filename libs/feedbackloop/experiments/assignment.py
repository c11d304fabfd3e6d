"""Deterministic assignment: a unit's variant is a salted hash of the unit, the same on every
call and every replica, with no state. Pure.

The hash is SHA-256 of `salt`, a NUL and the unit's id; its first 8 bytes, read as an
unsigned integer over 2^64, are a point in [0, 1) that picks the variant whose slice of the
cumulative weights holds it. A fresh salt per experiment keeps assignments of different
experiments independent of each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_SCALE = float(2**64)


def unit_point(salt: str, unit_id: str) -> float:
    """The unit's point in [0, 1) for this salt."""
    digest = hashlib.sha256(f"{salt}\x00{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign(salt: str, unit_id: str, weights: Sequence[float]) -> int:
    """The index of the variant `unit_id` is in, for variants with these relative weights."""
    if not weights or any(w <= 0 for w in weights):
        raise ValueError("weights must be positive and at least one")
    target = unit_point(salt, unit_id) * sum(weights)
    cumulative = 0.0
    for index, weight in enumerate(weights):
        cumulative += weight
        if target < cumulative:
            return index
    return len(weights) - 1
