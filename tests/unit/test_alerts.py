"""Alert rules over synthetic windows: firing on a breach that holds, silent on small samples
and on healthy numbers, resolving, and the day/week drop and negative spike rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.query.alerts import (
    AlertConfig,
    ChoiceTotals,
    FeedbackTotals,
    WindowInputs,
    advance,
    observe,
)

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
CONFIG = AlertConfig(
    window=timedelta(hours=1), hold=timedelta(minutes=5), approval_min_rate=0.8,
    approval_min_samples=20, approval_max_drop=0.15, spike_factor=3.0, spike_min_count=10,
    conversion_min_rate=0.6, conversion_min_sessions=20, chosen_rank_max=2.0,
    satisfaction_min=3.5, choice_min_samples=20,
)


def _inputs(
    current: dict[str, FeedbackTotals] | None = None,
    day_earlier: dict[str, FeedbackTotals] | None = None,
    week_earlier: dict[str, FeedbackTotals] | None = None,
    baseline: dict[str, FeedbackTotals] | None = None,
    choices: ChoiceTotals | None = None,
    first_voted: dict[str, datetime] | None = None,
) -> WindowInputs:
    def keyed(values: dict[str, FeedbackTotals] | None) -> dict[tuple[str, str], FeedbackTotals]:
        return {("acme", action): totals for action, totals in (values or {}).items()}

    return WindowInputs(
        keyed(current), keyed(day_earlier), keyed(week_earlier), keyed(baseline),
        {"acme": choices} if choices else {},
        {("acme", action): day for action, day in (first_voted or {}).items()},
    )


def _breaches(inputs: WindowInputs) -> dict[tuple[str, str], tuple[bool, int]]:
    return {(o.rule, o.subject): (o.breached, o.sample) for o in observe(inputs, CONFIG, NOW)}


def test_low_approval_breaches_only_with_enough_votes() -> None:
    low = _breaches(_inputs({"todo": FeedbackTotals(up=10, down=15), "email": FeedbackTotals(up=0, down=2)}))
    assert low[("approval_below", "todo")] == (True, 25)
    assert low[("approval_below", "email")] == (False, 2)  # 0% of two votes never pages
    healthy = _breaches(_inputs({"todo": FeedbackTotals(up=90, down=10)}))
    assert healthy[("approval_below", "todo")] == (False, 100)


def test_drop_against_a_day_and_a_week_earlier() -> None:
    now = {"todo": FeedbackTotals(up=60, down=40)}
    found = _breaches(_inputs(
        now, day_earlier={"todo": FeedbackTotals(up=90, down=10)},
        week_earlier={"todo": FeedbackTotals(up=70, down=30)},
    ))
    assert found[("approval_drop_1d", "todo")] == (True, 100)  # 0.9 -> 0.6
    assert found[("approval_drop_7d", "todo")] == (False, 100)  # 0.7 -> 0.6 is within 0.15
    thin = _breaches(_inputs(now, day_earlier={"todo": FeedbackTotals(up=5, down=0)}))
    assert thin[("approval_drop_1d", "todo")] == (False, 5)  # a day earlier had 5 votes


def test_negative_spike_against_the_day_before() -> None:
    baseline = {"todo": FeedbackTotals(up=480, down=48, negative=48)}  # 2 per hour
    spike = _breaches(_inputs({"todo": FeedbackTotals(up=5, down=12, negative=12)}, baseline=baseline))
    assert spike[("negative_spike", "")] == (True, 12)
    usual = _breaches(_inputs({"todo": FeedbackTotals(up=5, down=5, negative=5)}, baseline=baseline))
    assert usual[("negative_spike", "")] == (False, 5)
    quiet_day = _breaches(_inputs({"todo": FeedbackTotals(down=4, negative=4)}))
    assert quiet_day[("negative_spike", "")] == (False, 4)  # under the minimum count


def test_a_new_action_type_drawing_thumbs_down() -> None:
    votes = {"wizard": FeedbackTotals(up=2, down=12), "todo": FeedbackTotals(up=2, down=12)}
    first_voted = {"wizard": NOW - timedelta(days=2), "todo": NOW - timedelta(days=30)}
    found = _breaches(_inputs(votes, first_voted=first_voted))
    assert found[("new_action_type_negative", "wizard")] == (True, 12)
    assert ("new_action_type_negative", "todo") not in found  # not new
    few = _breaches(_inputs({"wizard": FeedbackTotals(up=0, down=4)}, first_voted=first_voted))
    assert few[("new_action_type_negative", "wizard")] == (False, 4)


def test_recommendation_rules() -> None:
    poor = ChoiceTotals(sessions=40, choices=20, rank_sum=60, rank_count=20,
                        satisfaction_sum=60, satisfaction_count=20)
    found = _breaches(_inputs(choices=poor))
    assert found[("conversion_below", "")] == (True, 40)
    assert found[("chosen_rank_above", "")] == (True, 20)
    assert found[("satisfaction_below", "")] == (True, 20)
    small = ChoiceTotals(sessions=5, choices=0, rank_sum=0, rank_count=0,
                         satisfaction_sum=1, satisfaction_count=1)
    assert not any(breached for breached, _ in _breaches(_inputs(choices=small)).values())


def test_a_breach_goes_pending_then_fires_then_resolves() -> None:
    breach = observe(_inputs({"todo": FeedbackTotals(up=10, down=15)}), CONFIG, NOW)
    states, changes = advance([], breach, now=NOW, hold=CONFIG.hold)
    low = {s.rule: s for s in states}["approval_below"]
    assert (low.state, low.since, low.sample) == ("pending", NOW, 25)
    assert [(c.previous, c.current.state) for c in changes] == [("ok", "pending")]

    later = NOW + timedelta(minutes=2)
    states, changes = advance(states, breach, now=later, hold=CONFIG.hold)
    assert {s.rule: s for s in states}["approval_below"].state == "pending" and changes == []

    fired_at = NOW + timedelta(minutes=5)
    states, changes = advance(states, breach, now=fired_at, hold=CONFIG.hold)
    low = {s.rule: s for s in states}["approval_below"]
    assert (low.state, low.since) == ("firing", fired_at)
    assert [(c.previous, c.current.rule) for c in changes] == [("pending", "approval_below")]

    recovered = observe(_inputs({"todo": FeedbackTotals(up=95, down=5)}), CONFIG, NOW)
    resolved_at = fired_at + timedelta(minutes=1)
    states, changes = advance(states, recovered, now=resolved_at, hold=CONFIG.hold)
    low = {s.rule: s for s in states}["approval_below"]
    assert (low.state, low.since, low.value) == ("ok", resolved_at, 0.95)
    assert [(c.previous, c.current.state) for c in changes] == [("firing", "ok")]


def test_a_firing_alert_whose_data_left_the_window_resolves() -> None:
    breach = observe(_inputs({"todo": FeedbackTotals(up=1, down=30)}), CONFIG, NOW)
    states, _ = advance([], breach, now=NOW, hold=timedelta(0))
    assert {s.rule: s.state for s in states}["approval_below"] == "firing"
    states, changes = advance(states, [], now=NOW + timedelta(hours=2), hold=timedelta(0))
    assert {s.rule: (s.state, s.sample) for s in states}["approval_below"] == ("ok", 0)
    assert {c.current.rule for c in changes} == {"approval_below"}
