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
from dataclasses import dataclass

from feedbackloop.experiments.definition import Experiment

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


class NotStarted(ValueError):
    """A draft experiment assigns nobody: start it first."""


@dataclass(frozen=True)
class Assignment:
    variant: str
    in_experiment: bool
    """True while the experiment runs: the unit's hashed variant, and an exposure to log.
    False once stopped (every unit gets the control) or concluded (the winner, else the
    control): nothing to log, the unit is not part of the analysis any more."""


def assignment_of(experiment: Experiment, unit_id: str) -> Assignment:
    """What `unit_id` is shown now. Raises `NotStarted` for a draft."""
    variants = experiment.spec.variants
    if experiment.status == "draft":
        raise NotStarted(f"experiment {experiment.name!r} has not been started")
    if experiment.status == "running":
        index = assign(experiment.salt, unit_id, [v.weight for v in variants])
        return Assignment(variants[index].name, True)
    if experiment.status == "concluded" and experiment.winner is not None:
        return Assignment(experiment.winner, False)
    return Assignment(variants[0].name, False)
