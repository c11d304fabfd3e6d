"""The metrics consumer's pure part: dimensions, counts, the lateness window, coarsening."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.metrics import processing as metrics
from services.metrics.handlers import SPEC, build_spec
from services.metrics.repository import coarsen
from tests.ops.events import choice, feedback, response, session

T = datetime(2026, 3, 10, 14, 37, 25, tzinfo=UTC)


def test_response_dimensions_come_from_payload_and_envelope() -> None:
    effect = metrics.process_message(
        response("r1", T, action_type="todo", model="m", prompt_version="v7", language="de",
                 feature="lists", experiment="tone", variant="b")
    )
    assert isinstance(effect, metrics.ResponseDims)
    assert effect.dims == ("todo", "m", "v7", "tone", "b", "de", "lists")
    bare = metrics.process_message(response("r2", T))
    assert isinstance(bare, metrics.ResponseDims)
    assert bare.dims == ("todo", "model-a", "unknown", "unknown", "unknown", "unknown", "unknown")


def test_feedback_provisional_dimensions_use_what_it_carries() -> None:
    effect = metrics.process_message(
        feedback("r1", T, thumb="down", action_type="email", experiment="tone", variant="a")
    )
    assert isinstance(effect, metrics.FeedbackCounts)
    assert effect.provisional_dims == (
        "email", "unknown", "unknown", "tone", "a", "unknown", "unknown"
    )
    assert dict(zip(metrics.COUNTERS, effect.counts, strict=True))["thumbs_down"] == 1
    assert effect.bucket == datetime(2026, 3, 10, 14, 37, tzinfo=UTC)


def test_session_counts_one_session_under_its_dimensions() -> None:
    effect = metrics.process_message(session("s1", T, segment=None, variant="b"))
    assert isinstance(effect, metrics.SessionOpened)
    assert effect.dims == ("match-1", "unknown", "unknown", "b")
    counts = dict(zip(metrics.RECOMMENDATION_COUNTERS, effect.counts, strict=True))
    assert counts["sessions"] == 1 and sum(effect.counts) == 1


def test_choice_counts_rank_satisfaction_and_decision_time_exactly() -> None:
    chosen = metrics.process_message(choice("s1", T, rank=3, satisfaction=4, decision_seconds=12.3456))
    assert isinstance(chosen, metrics.ChoiceCounts)
    assert dict(zip(metrics.RECOMMENDATION_COUNTERS, chosen.counts, strict=True)) == {
        "sessions": 0, "choices": 1, "none_chosen": 0, "chosen_rank_sum": 3,
        "chosen_rank_count": 1, "satisfaction_sum": 4, "satisfaction_count": 1,
        "decision_ms_sum": 12_346, "decision_count": 1,
    }
    none = metrics.process_message(choice("s2", T, rank=None))
    assert isinstance(none, metrics.ChoiceCounts)
    counts = dict(zip(metrics.RECOMMENDATION_COUNTERS, none.counts, strict=True))
    assert (counts["choices"], counts["none_chosen"], counts["chosen_rank_count"]) == (0, 1, 0)
    assert none.provisional_dims == ("unknown", "unknown", "unknown", "unknown")


def test_late_events_land_in_their_minute_within_the_window() -> None:
    window = timedelta(hours=2)
    late = feedback("r1", T, received_at=T + timedelta(minutes=119))
    assert metrics.event_bucket(late, window) == datetime(2026, 3, 10, 14, 37, tzinfo=UTC)


def test_events_older_than_the_window_count_in_its_oldest_minute() -> None:
    window = timedelta(hours=2)
    received = T + timedelta(days=3)
    very_late = feedback("r1", T, received_at=received)
    effect = metrics.process_message(very_late, lateness=window)
    assert isinstance(effect, metrics.FeedbackCounts)
    assert effect.bucket == metrics.minute_bucket(received - window)
    assert sum(effect.counts) == 1  # counted, never dropped


def test_a_client_clock_ahead_cannot_count_into_the_future() -> None:
    ahead = feedback("r1", T + timedelta(hours=5), received_at=T)
    assert metrics.event_bucket(ahead) == datetime(2026, 3, 10, 14, 37, tzinfo=UTC)


def test_spec_reads_recommendations_and_carries_its_window() -> None:
    # Consent only for erasures: the experiment units are the one place metrics keeps a (digested) user.
    assert {topic.value for topic in SPEC.topics} == {"responses", "feedback", "recommendations",
                                                      "consent"}
    event = feedback("r1", T, received_at=T + timedelta(hours=3))
    short = build_spec(timedelta(hours=1)).process(event)
    assert isinstance(short, metrics.FeedbackCounts)
    assert short.bucket == datetime(2026, 3, 10, 16, 37, tzinfo=UTC)
    assert SPEC.process(event).bucket == datetime(2026, 3, 10, 14, 37, tzinfo=UTC)  # type: ignore[union-attr]


def test_coarsen_sums_minutes_into_one_hour_row() -> None:
    minute = {
        ("acme", datetime(2026, 3, 10, 14, 1, tzinfo=UTC), "todo"): [1, 0],
        ("acme", datetime(2026, 3, 10, 14, 59, tzinfo=UTC), "todo"): [2, -1],
        ("acme", datetime(2026, 3, 10, 15, 0, tzinfo=UTC), "todo"): [0, 5],
    }
    assert coarsen(minute, metrics.hour_bucket) == {
        ("acme", datetime(2026, 3, 10, 14, tzinfo=UTC), "todo"): [3, -1],
        ("acme", datetime(2026, 3, 10, 15, tzinfo=UTC), "todo"): [0, 5],
    }
    assert list(coarsen(minute, metrics.day_bucket).values()) == [[3, 4]]
