"""The preference-shift rule: a segment in which the learner detected a shift fires at once,
and resolves `shift_window` after the last detection."""

from __future__ import annotations

from datetime import timedelta

from services.query.alerts import SegmentConfidence, advance, observe
from tests.unit.test_alerts_learning_confidence import CONFIG, NOW, _inputs

RULE = "learning_preference_shift"


def _state(last_shift_ago: timedelta | None, previous: list | None = None):  # type: ignore[no-untyped-def]
    newest = SegmentConfidence(
        0.8, 500, None if last_shift_ago is None else NOW - last_shift_ago,
        41.2 if last_shift_ago is not None else None, 26.4)
    observations = [o for o in observe(_inputs({"price_sensitive": newest}), CONFIG, NOW)
                    if o.rule == RULE]
    return advance(previous or [], observations, now=NOW, hold=CONFIG.hold, holds=CONFIG.holds)


def test_a_detected_shift_fires_at_once_with_the_tests_statistic() -> None:
    states, transitions = _state(timedelta(minutes=2))
    [state] = states
    assert (state.rule, state.subject, state.state) == (RULE, "price_sensitive", "firing")
    assert state.value == 41.2 and state.threshold == 26.4 and state.sample == 500
    assert [(t.previous, t.current.state) for t in transitions] == [("ok", "firing")]


def test_it_resolves_once_the_shift_is_older_than_the_window() -> None:
    firing, _ = _state(timedelta(minutes=2))
    states, transitions = _state(CONFIG.shift_window + timedelta(minutes=1), previous=firing)
    assert [s.state for s in states] == ["ok"]
    assert [(t.previous, t.current.state) for t in transitions] == [("firing", "ok")]


def test_a_segment_that_never_shifted_has_no_observation() -> None:
    states, _ = _state(None)
    assert states == []
