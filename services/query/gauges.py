"""The query service's analytics gauges: values of the exact rollups over the alert window,
so Prometheus and Grafana see numbers that never double count when a consumer restarts.

Names and labels are declared here, once. Label values come from bounded sets: action types and
models listed in the settings (`FEEDBACKLOOP_ANALYTICS_LABEL_ACTION_TYPES`, `_MODELS`), the
segments of the contract; anything else is summed under `other`. Tenants are summed: a tenant id
is never a label. Learning confidence cannot be summed: per segment, it is the tenant whose
newest weights are least confident among those fitted on enough choices to alert on (or, when
none is, the least confident of all), with that fit's sample size beside it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from feedbackloop.contract import SEGMENTS
from feedbackloop.observability import bounded
from services.query.alerts import RULES, AlertState, SegmentConfidence

VOTES = "feedbackloop_analytics_votes"
NEGATIVE = "feedbackloop_analytics_negative_signals"
APPROVAL = "feedbackloop_analytics_approval_ratio"
SESSIONS = "feedbackloop_analytics_sessions"
CHOICES = "feedbackloop_analytics_choices"
CONVERSION = "feedbackloop_analytics_conversion_ratio"
RANK_MEAN = "feedbackloop_analytics_chosen_rank_mean"
RANK_SAMPLES = "feedbackloop_analytics_chosen_rank_samples"
SATISFACTION_MEAN = "feedbackloop_analytics_satisfaction_mean"
SATISFACTION_SAMPLES = "feedbackloop_analytics_satisfaction_samples"
ALERTS = "feedbackloop_alerts"
WINDOW = "feedbackloop_analytics_window_seconds"
EVALUATED = "feedbackloop_analytics_evaluated_timestamp_seconds"
CONFIDENCE = "feedbackloop_learning_confidence"
CONFIDENCE_SAMPLES = "feedbackloop_learning_choices"
SHIFT = "feedbackloop_learning_shift_timestamp_seconds"
STATES = ("ok", "pending", "firing")
BOUNDED_SEGMENTS = frozenset(SEGMENTS)


@dataclass
class _Snapshot:
    votes: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # up, down, negative
    segments: dict[str, list[int]] = field(default_factory=dict)
    alerts: dict[tuple[str, str], int] = field(default_factory=dict)
    confidence: dict[str, SegmentConfidence] = field(default_factory=dict)
    window_seconds: float = 0.0
    evaluated_at: float | None = None
    shifts: dict[str, float] = field(default_factory=dict)  # segment -> newest shift, any tenant


class AnalyticsGauges(Collector):
    """Registered on the service's registry; `update` replaces what the next scrape reports."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        action_types: Iterable[str],
        models: Iterable[str],
    ) -> None:
        self.action_types = frozenset(action_types)
        self.models = frozenset(models)
        self._snapshot = _Snapshot()
        registry.register(self)

    def update(
        self,
        *,
        feedback: Iterable[Mapping[str, Any]],
        recommendations: Iterable[Mapping[str, Any]],
        alerts: Iterable[AlertState],
        window_seconds: float,
        evaluated_at: datetime,
        confidence: Mapping[tuple[str, str], SegmentConfidence] | None = None,
        confidence_min_samples: int = 1,
    ) -> None:
        """Take rows of `feedback_window_totals` and `recommendation_window_totals`, and the
        newest learned weights per (tenant, segment)."""
        votes: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for row in feedback:
            key = (bounded(row["action_type"], self.action_types), bounded(row["model"], self.models))
            negative = row["thumbs_down"] + row["corrections"] + row["replays_not_useful"]
            for index, value in enumerate((row["thumbs_up"], row["thumbs_down"], negative)):
                votes[key][index] += int(value)
        segments: dict[str, list[int]] = defaultdict(lambda: [0] * 6)
        for row in recommendations:
            sums = segments[bounded(row["segment"], BOUNDED_SEGMENTS)]
            for index, name in enumerate((
                "sessions", "choices", "chosen_rank_sum", "chosen_rank_count",
                "satisfaction_sum", "satisfaction_count",
            )):
                sums[index] += int(row[name])
        counted: dict[tuple[str, str], int] = defaultdict(int)
        for alert in alerts:
            counted[(alert.rule, alert.state)] += 1
        self._snapshot = _Snapshot(
            dict(votes), dict(segments), dict(counted),
            least_confident(confidence or {}, confidence_min_samples),
            window_seconds, evaluated_at.timestamp(), newest_shifts(confidence or {}),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._snapshot
        votes = GaugeMetricFamily(
            VOTES, "Thumbs in the alert window.", labels=["action_type", "model", "vote"]
        )
        approval = GaugeMetricFamily(
            APPROVAL, "Thumbs up / thumbs in the alert window.", labels=["action_type", "model"]
        )
        negative: dict[str, int] = defaultdict(int)
        for (action_type, model), (up, down, bad) in sorted(snap.votes.items()):
            votes.add_metric([action_type, model, "up"], up)
            votes.add_metric([action_type, model, "down"], down)
            if up + down:
                approval.add_metric([action_type, model], up / (up + down))
            negative[action_type] += bad
        negatives = GaugeMetricFamily(
            NEGATIVE, "Thumbs down, corrections and useless replays in the alert window.",
            labels=["action_type"],
        )
        for action_type, count in sorted(negative.items()):
            negatives.add_metric([action_type], count)
        yield from (votes, approval, negatives)
        yield from self._recommendation_families(snap)
        yield from self._confidence_families(snap)
        alerts = GaugeMetricFamily(
            ALERTS, "Alerts of each rule in each state.", labels=["rule", "state"]
        )
        for rule in RULES:
            for state in STATES:
                alerts.add_metric([rule, state], snap.alerts.get((rule, state), 0))
        yield alerts
        yield GaugeMetricFamily(WINDOW, "The window these gauges cover.", value=snap.window_seconds)
        evaluated = GaugeMetricFamily(EVALUATED, "Unix time of the last evaluation.")
        if snap.evaluated_at is not None:
            evaluated.add_metric([], snap.evaluated_at)
        yield evaluated

    @staticmethod
    def _confidence_families(snap: _Snapshot) -> Iterator[GaugeMetricFamily]:
        confidence = GaugeMetricFamily(
            CONFIDENCE, "Confidence (0-1) of a segment's newest learned weights.",
            labels=["segment"],
        )
        choices = GaugeMetricFamily(
            CONFIDENCE_SAMPLES, "Choices behind the weights whose confidence is reported.",
            labels=["segment"],
        )
        for segment, newest in sorted(snap.confidence.items()):
            confidence.add_metric([segment], newest.confidence)
            choices.add_metric([segment], newest.sample_size)
        shifts = GaugeMetricFamily(
            SHIFT, "Unix time of the newest preference shift the learner detected in a "
            "segment (any tenant).", labels=["segment"],
        )
        for segment, at in sorted(snap.shifts.items()):
            shifts.add_metric([segment], at)
        yield from (confidence, choices, shifts)

    @staticmethod
    def _recommendation_families(snap: _Snapshot) -> Iterator[GaugeMetricFamily]:
        families = {
            name: GaugeMetricFamily(name, help_text, labels=["segment"])
            for name, help_text in (
                (SESSIONS, "Recommendation sessions started in the alert window."),
                (CHOICES, "Sessions ending in a choice, in the alert window."),
                (CONVERSION, "Choices / sessions in the alert window."),
                (RANK_MEAN, "Mean rank of the chosen option in the alert window."),
                (RANK_SAMPLES, "Choices with a rank in the alert window."),
                (SATISFACTION_MEAN, "Mean satisfaction (1-5) in the alert window."),
                (SATISFACTION_SAMPLES, "Choices with a satisfaction in the alert window."),
            )
        }
        for segment, (sessions, choices, rank_sum, rank_n, sat_sum, sat_n) in sorted(
            snap.segments.items()
        ):
            families[SESSIONS].add_metric([segment], sessions)
            families[CHOICES].add_metric([segment], choices)
            families[RANK_SAMPLES].add_metric([segment], rank_n)
            families[SATISFACTION_SAMPLES].add_metric([segment], sat_n)
            if sessions:
                families[CONVERSION].add_metric([segment], min(choices / sessions, 1.0))
            if rank_n:
                families[RANK_MEAN].add_metric([segment], rank_sum / rank_n)
            if sat_n:
                families[SATISFACTION_MEAN].add_metric([segment], sat_sum / sat_n)
        yield from families.values()


def least_confident(
    confidence: Mapping[tuple[str, str], SegmentConfidence], min_samples: int
) -> dict[str, SegmentConfidence]:
    """Per segment of the contract, the tenant's weights that most deserve an alert: the least
    confident of those fitted on at least `min_samples` choices, else the least confident.
    Preferring the guarded ones keeps a tenant with a tiny, naturally uncertain fit from hiding
    another tenant's well-sampled low confidence. Segments outside the contract are left out:
    a confidence cannot be summed under `other`."""
    chosen: dict[str, SegmentConfidence] = {}
    for (_, segment), newest in confidence.items():
        if segment not in BOUNDED_SEGMENTS:
            continue
        held = chosen.get(segment)
        if held is None or _alert_order(newest, min_samples) < _alert_order(held, min_samples):
            chosen[segment] = newest
    return chosen


def newest_shifts(confidence: Mapping[tuple[str, str], SegmentConfidence]) -> dict[str, float]:
    """Per segment of the contract, the newest detected preference shift of any tenant."""
    newest: dict[str, float] = {}
    for (_, segment), weights in confidence.items():
        if segment in BOUNDED_SEGMENTS and weights.last_shift_at is not None:
            newest[segment] = max(newest.get(segment, 0.0), weights.last_shift_at.timestamp())
    return newest


def _alert_order(weights: SegmentConfidence, min_samples: int) -> tuple[bool, float]:
    return (weights.sample_size < min_samples, weights.confidence)
