"""Query's pure part: statistics over the rows the repository returns."""

from __future__ import annotations

import math
from typing import Any


def wilson_interval(successes: int, total: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval (95% by default) for a binomial proportion.

    With no trials the proportion is unknown, and the interval is all of [0, 1].
    """
    if total <= 0:
        return (0.0, 1.0)
    p = successes / total
    z2 = z * z
    denominator = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denominator
    margin = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denominator
    return (max(0.0, centre - margin), min(1.0, centre + margin))


def approval_rate(up: int, down: int) -> float | None:
    total = up + down
    return up / total if total else None


def approval_counts(up: int, down: int) -> dict[str, Any]:
    """What an approval report shows of a group's thumbs: up, down, their total, the approval
    rate and its Wilson 95% interval (`ci_low`, `ci_high`)."""
    low, high = wilson_interval(up, up + down)
    return {"up": up, "down": down, "total": up + down,
            "approval_rate": approval_rate(up, down), "ci_low": low, "ci_high": high}
