"""Alert rules over the exact rollups, and the ok -> pending -> firing state machine. Pure.

Every rule has a minimum-sample guard: below it the rule is `ok` (and says how small the sample
was), so one vote out of two never pages. A breach must hold for `hold` (the `for:` of a
Prometheus rule) before it fires; it resolves at the first evaluation that is not a breach.

Rules (subject: an action type, or '' for a rule over the whole tenant):
- approval_below: approval rate of an action type in the window below the minimum.
- approval_drop_1d / approval_drop_7d: the rate dropped by more than `max_drop` against the same
  window a day / a week earlier (both windows need the minimum sample).
- negative_spike: negative signals (thumbs down, corrections, useless replays) in the window
  more than `spike_factor` times the average window of the 24 hours before it.
- new_action_type_negative: an action type first voted on less than `new_action_type_age` ago
  drawing at least `new_action_type_min_down` thumbs down in the window, with approval below the
  minimum (a new feature landing badly, before it has the history a drop rule needs).
- conversion_below, chosen_rank_above, satisfaction_below: over the tenant's recommendations.
- learning_confidence_below (subject: a segment): the confidence of the segment's newest
  learned weights below `confidence_min`, on a fit of at least `confidence_min_samples` choices.
  It holds for `confidence_hold` (a day by default), not `hold`: a segment's first fits are
  uncertain by nature; one that stays uncertain for a day is learning nothing from its choices.
- learning_preference_shift (subject: a segment): the learner detected a shift in the
  segment's preferences (its sequential test of recent choices against the fitted model, see
  services/learner/adaptive.py) less than `shift_window` ago. It fires at once (no hold) and
  resolves `shift_window` after the last detection; the value is the test's statistic, the
  threshold the test's own. The learner has already moved the segment's window and refitted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

State = Literal["ok", "pending", "firing"]
RULES = (
    "approval_below",
    "approval_drop_1d",
    "approval_drop_7d",
    "negative_spike",
    "new_action_type_negative",
    "conversion_below",
    "chosen_rank_above",
    "satisfaction_below",
    "learning_confidence_below",
    "learning_preference_shift",
)
BASELINE_SPAN = timedelta(hours=24)


@dataclass(frozen=True)
class AlertConfig:
    window: timedelta
    hold: timedelta
    approval_min_rate: float
    approval_min_samples: int
    approval_max_drop: float
    spike_factor: float
    spike_min_count: int
    conversion_min_rate: float
    conversion_min_sessions: int
    chosen_rank_max: float
    satisfaction_min: float
    choice_min_samples: int
    new_action_type_age: timedelta = timedelta(days=7)
    new_action_type_min_down: int = 10
    confidence_min: float = 0.5
    confidence_min_samples: int = 30
    confidence_hold: timedelta = timedelta(hours=24)
    shift_window: timedelta = timedelta(hours=6)

    @property
    def holds(self) -> dict[str, timedelta]:
        """Rules whose breach must hold for longer (or shorter) than `hold` before firing."""
        return {"learning_confidence_below": self.confidence_hold,
                "learning_preference_shift": timedelta(0)}


@dataclass(frozen=True)
class FeedbackTotals:
    up: int = 0
    down: int = 0
    negative: int = 0

    def __add__(self, other: FeedbackTotals) -> FeedbackTotals:
        return FeedbackTotals(
            self.up + other.up, self.down + other.down, self.negative + other.negative
        )

    @property
    def votes(self) -> int:
        return self.up + self.down

    @property
    def approval(self) -> float | None:
        return self.up / self.votes if self.votes else None


@dataclass(frozen=True)
class ChoiceTotals:
    sessions: int = 0
    choices: int = 0
    rank_sum: int = 0
    rank_count: int = 0
    satisfaction_sum: int = 0
    satisfaction_count: int = 0


@dataclass(frozen=True)
class SegmentConfidence:
    """A segment's newest learned weights: their confidence (0-1) and the choices behind them."""

    confidence: float
    sample_size: int
    last_shift_at: datetime | None = None  # the newest version whose shift test fired
    shift_statistic: float | None = None
    shift_threshold: float | None = None


@dataclass(frozen=True)
class WindowInputs:
    """Rollup sums the rules need, per (tenant, action type) for feedback and per tenant for
    recommendations: the current window, the same window a day and a week earlier, and the
    24 hours before the current window. `confidence` holds, per (tenant, segment), the
    segment's newest learned weights; it does not depend on the window."""

    current: Mapping[tuple[str, str], FeedbackTotals]
    day_earlier: Mapping[tuple[str, str], FeedbackTotals]
    week_earlier: Mapping[tuple[str, str], FeedbackTotals]
    baseline: Mapping[tuple[str, str], FeedbackTotals]
    choices: Mapping[str, ChoiceTotals]
    first_voted: Mapping[tuple[str, str], datetime] = field(default_factory=dict)
    confidence: Mapping[tuple[str, str], SegmentConfidence] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    rule: str
    tenant_id: str
    subject: str
    value: float | None
    sample: int
    threshold: float
    breached: bool

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule, self.tenant_id, self.subject)


@dataclass(frozen=True)
class AlertState:
    rule: str
    tenant_id: str
    subject: str
    state: State
    since: datetime
    value: float | None
    sample: int
    threshold: float
    evaluated_at: datetime

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule, self.tenant_id, self.subject)


@dataclass(frozen=True)
class Transition:
    previous: State
    current: AlertState


def observe(inputs: WindowInputs, config: AlertConfig, now: datetime) -> list[Observation]:
    """Every rule's observation for every tenant and subject that has data at `now`."""
    found: list[Observation] = []
    for (tenant, action), totals in inputs.current.items():
        rate = totals.approval
        found.append(Observation(
            "approval_below", tenant, action, rate, totals.votes, config.approval_min_rate,
            totals.votes >= config.approval_min_samples and rate is not None
            and rate < config.approval_min_rate,
        ))
        for rule, earlier in (
            ("approval_drop_1d", inputs.day_earlier), ("approval_drop_7d", inputs.week_earlier)
        ):
            then = earlier.get((tenant, action), FeedbackTotals())
            drop = then.approval - rate if then.approval is not None and rate is not None else None
            sample = min(totals.votes, then.votes)
            found.append(Observation(
                rule, tenant, action, drop, sample, config.approval_max_drop,
                sample >= config.approval_min_samples and drop is not None
                and drop > config.approval_max_drop,
            ))
        first = inputs.first_voted.get((tenant, action))
        if first is not None and now - first < config.new_action_type_age:
            found.append(Observation(
                "new_action_type_negative", tenant, action, rate, totals.down,
                config.approval_min_rate,
                totals.down >= config.new_action_type_min_down and rate is not None
                and rate < config.approval_min_rate,
            ))
    found += _negative_spikes(inputs, config)
    for tenant, choice_totals in inputs.choices.items():
        found += _choice_observations(tenant, choice_totals, config)
    for (tenant, segment), newest in sorted(inputs.confidence.items()):
        found.append(Observation(
            "learning_confidence_below", tenant, segment, newest.confidence,
            newest.sample_size, config.confidence_min,
            newest.sample_size >= config.confidence_min_samples
            and newest.confidence < config.confidence_min,
        ))
        if newest.last_shift_at is not None:
            found.append(Observation(
                "learning_preference_shift", tenant, segment, newest.shift_statistic,
                newest.sample_size, newest.shift_threshold or 0.0,
                now - newest.last_shift_at < config.shift_window,
            ))
    return found


def _negative_spikes(inputs: WindowInputs, config: AlertConfig) -> list[Observation]:
    current: dict[str, int] = defaultdict(int)
    baseline: dict[str, int] = defaultdict(int)
    for (tenant, _), totals in inputs.current.items():
        current[tenant] += totals.negative
    for (tenant, _), totals in inputs.baseline.items():
        baseline[tenant] += totals.negative
    windows_in_baseline = BASELINE_SPAN / config.window
    found = []
    for tenant, negatives in current.items():
        # At least one negative per window is expected, so a quiet baseline is not divided by 0.
        expected = max(baseline[tenant] / windows_in_baseline, 1.0)
        ratio = negatives / expected
        found.append(Observation(
            "negative_spike", tenant, "", ratio, negatives, config.spike_factor,
            negatives >= config.spike_min_count and ratio > config.spike_factor,
        ))
    return found


def _choice_observations(
    tenant: str, totals: ChoiceTotals, config: AlertConfig
) -> list[Observation]:
    conversion = min(totals.choices / totals.sessions, 1.0) if totals.sessions else None
    rank = totals.rank_sum / totals.rank_count if totals.rank_count else None
    satisfaction = (
        totals.satisfaction_sum / totals.satisfaction_count if totals.satisfaction_count else None
    )
    return [
        Observation(
            "conversion_below", tenant, "", conversion, totals.sessions,
            config.conversion_min_rate,
            totals.sessions >= config.conversion_min_sessions and conversion is not None
            and conversion < config.conversion_min_rate,
        ),
        Observation(
            "chosen_rank_above", tenant, "", rank, totals.rank_count, config.chosen_rank_max,
            totals.rank_count >= config.choice_min_samples and rank is not None
            and rank > config.chosen_rank_max,
        ),
        Observation(
            "satisfaction_below", tenant, "", satisfaction, totals.satisfaction_count,
            config.satisfaction_min,
            totals.satisfaction_count >= config.choice_min_samples and satisfaction is not None
            and satisfaction < config.satisfaction_min,
        ),
    ]


def advance(
    previous: Iterable[AlertState],
    observations: Iterable[Observation],
    *,
    now: datetime,
    hold: timedelta,
    holds: Mapping[str, timedelta] | None = None,
) -> tuple[list[AlertState], list[Transition]]:
    """The new state of every alert, and the ones whose state changed.

    A breach fires once it has held for `holds[rule]`, or `hold` for a rule not in `holds`.
    A stored alert with no observation now (its data left the window) is observed as not
    breached with a sample of 0, so it resolves instead of firing forever."""
    before = {state.key: state for state in previous}
    seen = {observation.key: observation for observation in observations}
    for key, state in before.items():
        if key not in seen:
            seen[key] = Observation(*key, None, 0, state.threshold, False)
    states, transitions = [], []
    for key, observation in sorted(seen.items()):
        old = before.get(key)
        state = _next_state(old, observation, now, (holds or {}).get(key[0], hold))
        states.append(state)
        old_state: State = old.state if old else "ok"
        if state.state != old_state:
            transitions.append(Transition(old_state, state))
    return states, transitions


def _next_state(
    old: AlertState | None, observation: Observation, now: datetime, hold: timedelta
) -> AlertState:
    current: State = old.state if old else "ok"
    since = old.since if old else now
    if not observation.breached:
        target: State = "ok"
    elif current == "ok":
        target = "firing" if hold <= timedelta(0) else "pending"
    elif current == "pending" and now - since >= hold:
        target = "firing"
    else:
        target = current
    return AlertState(
        observation.rule, observation.tenant_id, observation.subject, target,
        since if target == current else now, observation.value, observation.sample,
        observation.threshold, now,
    )
