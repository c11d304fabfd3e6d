"""The learning-confidence rule: a segment whose newest weights stay uncertain for a day fires;
a small fit or a confident one never does; a day is its own hold, not the other rules'. And the
per-segment gauge that Prometheus alerts on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from services.query.alerts import (
    AlertConfig,
    FeedbackTotals,
    SegmentConfidence,
    WindowInputs,
    advance,
    observe,
)
from services.query.gauges import AnalyticsGauges, least_confident

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
RULE = "learning_confidence_below"
CONFIG = AlertConfig(
    window=timedelta(hours=1), hold=timedelta(minutes=5), approval_min_rate=0.8,
    approval_min_samples=20, approval_max_drop=0.15, spike_factor=3.0, spike_min_count=10,
    conversion_min_rate=0.6, conversion_min_sessions=20, chosen_rank_max=2.0,
    satisfaction_min=3.5, choice_min_samples=20,
    confidence_min=0.5, confidence_min_samples=30, confidence_hold=timedelta(hours=24),
)


def _inputs(
    confidence: dict[str, SegmentConfidence],
    current: dict[str, FeedbackTotals] | None = None,
) -> WindowInputs:
    return WindowInputs(
        current={("acme", action): totals for action, totals in (current or {}).items()},
        day_earlier={}, week_earlier={}, baseline={}, choices={},
        confidence={("acme", segment): newest for segment, newest in confidence.items()},
    )


def _confidence_observations(inputs: WindowInputs) -> dict[str, tuple[bool, float | None, int]]:
    return {
        o.subject: (o.breached, o.value, o.sample)
        for o in observe(inputs, CONFIG, NOW)
        if o.rule == RULE
    }


def test_low_confidence_breaches_only_on_a_fit_with_enough_choices() -> None:
    found = _confidence_observations(_inputs({
        "balanced": SegmentConfidence(0.31, 400),
        "premium_buyer": SegmentConfidence(0.05, 12),  # a first, tiny fit: uncertain by nature
        "price_sensitive": SegmentConfidence(0.82, 900),
        "speed_priority": SegmentConfidence(0.5, 100),  # at the threshold is not below it
    }))
    assert found == {
        "balanced": (True, 0.31, 400),
        "premium_buyer": (False, 0.05, 12),
        "price_sensitive": (False, 0.82, 900),
        "speed_priority": (False, 0.5, 100),
    }


def test_states_pending_for_a_day_then_firing_then_resolving() -> None:
    low = _inputs({"balanced": SegmentConfidence(0.3, 400)})
    key = (RULE, "acme", "balanced")

    def step(states, inputs, at):  # type: ignore[no-untyped-def]
        states, changes = advance(
            states, observe(inputs, CONFIG, at), now=at, hold=CONFIG.hold, holds=CONFIG.holds
        )
        by_key = {state.key: state for state in states}
        return states, by_key[key], [c.current.state for c in changes if c.current.key == key]

    states, alert, changed = step([], _inputs({"balanced": SegmentConfidence(0.8, 400)}), NOW)
    assert (alert.state, changed) == ("ok", [])

    started = NOW + timedelta(hours=1)
    states, alert, changed = step(states, low, started)
    assert (alert.state, alert.since, changed) == ("pending", started, ["pending"])

    # Twenty-three hours in, many times the other rules' five-minute hold: still pending.
    states, alert, changed = step(states, low, started + timedelta(hours=23))
    assert (alert.state, alert.since, changed) == ("pending", started, [])

    fired = started + timedelta(hours=24)
    states, alert, changed = step(states, low, fired)
    assert (alert.state, alert.since, alert.value, alert.sample) == ("firing", fired, 0.3, 400)
    assert changed == ["firing"]

    # A refit that learned something resolves it at the first evaluation.
    resolved = fired + timedelta(minutes=1)
    confident = _inputs({"balanced": SegmentConfidence(0.7, 600)})
    states, alert, changed = step(states, confident, resolved)
    assert (alert.state, alert.since, alert.value, changed) == ("ok", resolved, 0.7, ["ok"])


def test_a_dip_shorter_than_a_day_never_fires() -> None:
    states: list = []  # type: ignore[type-arg]
    for hours, confidence in ((0, 0.4), (12, 0.45), (20, 0.6), (30, 0.4), (53, 0.4)):
        at = NOW + timedelta(hours=hours)
        inputs = _inputs({"balanced": SegmentConfidence(confidence, 400)})
        states, changes = advance(
            states, observe(inputs, CONFIG, at), now=at, hold=CONFIG.hold, holds=CONFIG.holds
        )
        assert all(change.current.state != "firing" for change in changes), hours
    # The second low stretch started at 30 h; 23 hours later it is still pending.
    assert [(s.rule, s.state) for s in states] == [(RULE, "pending")]


def test_the_other_rules_keep_their_own_hold() -> None:
    inputs = _inputs(
        {"balanced": SegmentConfidence(0.2, 400)},
        current={"todo": FeedbackTotals(up=10, down=15)},
    )
    states, _ = advance([], observe(inputs, CONFIG, NOW), now=NOW, hold=CONFIG.hold, holds=CONFIG.holds)
    later = NOW + timedelta(minutes=10)
    states, _ = advance(
        states, observe(inputs, CONFIG, later), now=later, hold=CONFIG.hold, holds=CONFIG.holds
    )
    by_rule = {state.rule: state.state for state in states}
    assert by_rule["approval_below"] == "firing"
    assert by_rule[RULE] == "pending"


def test_gauge_reports_the_least_confident_well_sampled_tenant_per_segment() -> None:
    newest = {
        ("acme", "balanced"): SegmentConfidence(0.05, 8),  # tiny: must not hide globex
        ("globex", "balanced"): SegmentConfidence(0.35, 500),
        ("initech", "balanced"): SegmentConfidence(0.6, 900),
        ("acme", "premium_buyer"): SegmentConfidence(0.2, 10),
        ("globex", "premium_buyer"): SegmentConfidence(0.1, 4),
        ("acme", "global"): SegmentConfidence(0.1, 1000),  # the pooled fit is no segment
    }
    assert least_confident(newest, 30) == {
        "balanced": SegmentConfidence(0.35, 500),
        "premium_buyer": SegmentConfidence(0.1, 4),  # none has enough: the least confident
    }

    registry = CollectorRegistry()
    gauges = AnalyticsGauges(registry, action_types=[], models=[])
    gauges.update(
        feedback=[], recommendations=[], alerts=[], window_seconds=3600, evaluated_at=NOW,
        confidence=newest, confidence_min_samples=30,
    )
    assert registry.get_sample_value(
        "feedbackloop_learning_confidence", {"segment": "balanced"}
    ) == 0.35
    assert registry.get_sample_value("feedbackloop_learning_choices", {"segment": "balanced"}) == 500
    assert registry.get_sample_value(
        "feedbackloop_learning_confidence", {"segment": "other"}
    ) is None
    assert registry.get_sample_value(
        "feedbackloop_alerts", {"rule": RULE, "state": "ok"}
    ) == 0
