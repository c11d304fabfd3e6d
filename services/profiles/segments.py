"""A user's segment and what to avoid or prefer for them, from their decisions. Pure.

Segment rules (evaluated on the user's recent decisions, so the segment changes as evidence
accumulates):

1. Factor names are grouped: price (`price`, `cost`, `cheap`, `value`), quality (`quality`,
   `rating`, `reviews`), speed (`speed`, `availability`, `delivery_time`, `eta`, `fast`),
   locality (`locality`, `distance`, `local`, `location`, `proximity`). Others are ignored.
2. Stated evidence for a group: the share of decisions in which the user named it among their
   important factors (a session's stated preferences count as naming it too).
3. Behavioural evidence, once the user chose an option in at least `MIN_BEHAVIOUR_CHOICES` (5)
   sessions that showed two or more options: the share of those choices in which the chosen
   option had the best score of the options shown on that factor ("won on it"), scaled so that
   winning half the time or less counts 0 and always winning counts 1: `max(0, 2*share - 1)`.
4. Evidence = stated + behavioural (0 to 2). The group with the most evidence decides when its
   evidence is at least `MIN_EVIDENCE` (0.5) and leads the runner-up by `MIN_LEAD` (0.1):
   price -> price_sensitive, quality -> quality_focused, speed -> speed_priority,
   locality -> local_preference. Otherwise: balanced.
5. premium_buyer is quality_focused without price sensitivity: quality decides, the user never
   named price, and with behavioural evidence their chosen option won on price in at most
   `MAX_PREMIUM_PRICE_WINS` (20%) of choices (they pay for quality).

Suppression: a kind of suggestion (an AI action type from feedback verdicts, or a
recommendation category) is "avoid" when the user rejected it at least `min_rejections` times
at a rejection rate of at least `AVOID_RATE` (80%) of their accepted plus rejected verdicts;
"prefer" when accepted at least `min_rejections` times at an acceptance rate of at least 80%.
For action types a rejection is explicit feedback (`min_rejections` = 3). For categories it is
implicit (a category shown in a session and not chosen; one count per session), so more are
needed (`min_rejections` = 5); the chosen option's category is an acceptance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FACTOR_GROUPS: dict[str, tuple[str, ...]] = {
    "price": ("price", "cost", "cheap", "value"),
    "quality": ("quality", "rating", "reviews"),
    "speed": ("speed", "availability", "delivery_time", "eta", "fast"),
    "locality": ("locality", "distance", "local", "location", "proximity"),
}
SEGMENT_OF_GROUP = {
    "price": "price_sensitive",
    "quality": "quality_focused",
    "speed": "speed_priority",
    "locality": "local_preference",
}
MIN_BEHAVIOUR_CHOICES = 5
MIN_EVIDENCE = 0.5
MIN_LEAD = 0.1
MAX_PREMIUM_PRICE_WINS = 0.2
AVOID_RATE = 0.8
MIN_ACTION_TYPE_VERDICTS = 3
MIN_CATEGORY_VERDICTS = 5


def factor_group(name: str) -> str | None:
    key = name.strip().lower()
    for group, names in FACTOR_GROUPS.items():
        if key in names:
            return group
    return None


@dataclass(frozen=True)
class Decision:
    """One recommendation decision: what was shown (logged options) and what was chosen."""

    options: Sequence[Mapping[str, Any]]
    chosen_item_id: str | None
    important_factors: Sequence[str] = ()
    stated_preferences: Sequence[str] = ()


@dataclass(frozen=True)
class SegmentAssignment:
    segment: str
    reasons: list[str]
    evidence: dict[str, float] = field(default_factory=dict)


def _won_on(decision: Decision) -> set[str]:
    """The factor groups on which the chosen option scored best (ties count) of those shown."""
    chosen = next(
        (o for o in decision.options if o.get("item_id") == decision.chosen_item_id), None
    )
    if chosen is None or len(decision.options) < 2:
        return set()
    won = set()
    for name, value in (chosen.get("scores") or {}).items():
        group = factor_group(name)
        best = max(float((o.get("scores") or {}).get(name, float("-inf")))
                   for o in decision.options)
        if group is not None and float(value) >= best:
            won.add(group)
    return won


def assign_segment(decisions: Sequence[Decision]) -> SegmentAssignment:
    """The user's segment and the evidence for it (rules in the module docstring)."""
    if not decisions:
        return SegmentAssignment("balanced", ["no recommendation decisions yet"])
    named = {group: 0 for group in FACTOR_GROUPS}
    for decision in decisions:
        groups = {factor_group(f) for f in [*decision.important_factors,
                                            *decision.stated_preferences]}
        for group in groups - {None}:
            named[str(group)] += 1
    behaviour = [_won_on(d) for d in decisions if d.chosen_item_id and len(d.options) >= 2]
    wins = {group: sum(group in won for won in behaviour) for group in FACTOR_GROUPS}
    enough = len(behaviour) >= MIN_BEHAVIOUR_CHOICES
    evidence = {}
    for group in FACTOR_GROUPS:
        stated = named[group] / len(decisions)
        shown = max(0.0, 2 * wins[group] / len(behaviour) - 1) if enough else 0.0
        evidence[group] = round(stated + shown, 4)
    ranked = sorted(evidence.items(), key=lambda item: -item[1])
    (top, top_evidence), (_, runner_up) = ranked[0], ranked[1]
    reasons = [f"named {g} in {named[g]} of {len(decisions)} decisions"
               for g in FACTOR_GROUPS if named[g]]
    if enough:
        reasons += [f"the chosen option was best on {g} in {wins[g]} of {len(behaviour)} choices"
                    for g in FACTOR_GROUPS if wins[g]]
    else:
        reasons.append(f"{len(behaviour)} choices so far; behaviour counts from "
                       f"{MIN_BEHAVIOUR_CHOICES}")
    if top_evidence < MIN_EVIDENCE or top_evidence - runner_up < MIN_LEAD:
        return SegmentAssignment("balanced", ["no factor clearly leads", *reasons], evidence)
    if (
        top == "quality"
        and named["price"] == 0
        and enough
        and wins["price"] / len(behaviour) <= MAX_PREMIUM_PRICE_WINS
    ):
        return SegmentAssignment(
            "premium_buyer", ["quality leads and price does not matter to them", *reasons],
            evidence,
        )
    return SegmentAssignment(SEGMENT_OF_GROUP[top], [f"{top} leads", *reasons], evidence)


@dataclass(frozen=True)
class SuggestionVerdict:
    kind: Literal["action_type", "category"]
    name: str
    accepted: int
    rejected: int
    status: Literal["avoid", "prefer", "neutral"]

    @property
    def rejection_rate(self) -> float | None:
        decided = self.accepted + self.rejected
        return self.rejected / decided if decided else None


def classify(
    kind: Literal["action_type", "category"], name: str, accepted: int, rejected: int,
    *, min_count: int,
) -> SuggestionVerdict:
    decided = accepted + rejected
    status: Literal["avoid", "prefer", "neutral"] = "neutral"
    if rejected >= min_count and rejected / decided >= AVOID_RATE:
        status = "avoid"
    elif accepted >= min_count and accepted / decided >= AVOID_RATE:
        status = "prefer"
    return SuggestionVerdict(kind, name, accepted, rejected, status)


def action_type_verdicts(rows: Iterable[Mapping[str, Any]]) -> list[SuggestionVerdict]:
    """From per-action-type counts (`action_type`, `accepted`, `rejected`)."""
    return [
        classify("action_type", row["action_type"], int(row["accepted"]), int(row["rejected"]),
                 min_count=MIN_ACTION_TYPE_VERDICTS)
        for row in rows
    ]


def category_verdicts(decisions: Sequence[Decision]) -> list[SuggestionVerdict]:
    """Accepted: the chosen option's category; rejected: each other category shown in the
    session (once per session). Sessions whose options carry no category add nothing."""
    accepted: dict[str, int] = {}
    rejected: dict[str, int] = {}
    for decision in decisions:
        shown = {o.get("category") for o in decision.options} - {None}
        chosen = next((o.get("category") for o in decision.options
                       if o.get("item_id") == decision.chosen_item_id), None)
        if chosen is not None:
            accepted[chosen] = accepted.get(chosen, 0) + 1
        for category in shown - {chosen}:
            rejected[str(category)] = rejected.get(str(category), 0) + 1
    return [
        classify("category", name, accepted.get(name, 0), rejected.get(name, 0),
                 min_count=MIN_CATEGORY_VERDICTS)
        for name in sorted(set(accepted) | set(rejected))
    ]


def segment_from_stated(preferences: Sequence[str]) -> SegmentAssignment:
    """For a customer with no history: their stated preferences alone, as one decision."""
    if not preferences:
        return SegmentAssignment("balanced", ["no stated preferences"])
    return assign_segment([Decision(options=(), chosen_item_id=None,
                                    stated_preferences=preferences)])
