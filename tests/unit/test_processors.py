"""Every consumer's pure logic over every sample event, and the rules each one applies."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from feedbackloop.contract import TOPIC_OF_OUTPUT_TYPE, decode_event, load_output_samples, load_samples
from feedbackloop.pipeline.consumer import consecutive_runs, grouped_runs
from services.learner.handlers import SPEC as LEARNER
from services.metrics import processing as metrics
from services.metrics.handlers import SPEC as METRICS
from services.profiles import processing as profiles
from services.profiles.handlers import SPEC as PROFILES
from services.trainer import processing as trainer
from services.trainer.handlers import SPEC as TRAINER
from services.webhooks.handlers import SPEC as WEBHOOKS

SPECS = [PROFILES, LEARNER, TRAINER, METRICS, WEBHOOKS]
EVENTS = [decode_event(orjson.dumps(doc)) for docs in load_samples().values() for doc in docs]
# Output-topic messages, for the consumers that read those topics.
OUTPUTS = [(kind, doc) for kind, docs in load_output_samples().items() for doc in docs]


def _sample(kind: str, index: int = 0):  # type: ignore[no-untyped-def]
    return decode_event(orjson.dumps(load_samples()[kind][index]))


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_every_processor_handles_every_sample(spec) -> None:  # type: ignore[no-untyped-def]
    topics = {topic.value for topic in spec.topics}
    handled = 0
    for event in EVENTS:
        effect = spec.process(event)
        if effect is not None:
            handled += 1
    for kind, doc in OUTPUTS:
        if TOPIC_OF_OUTPUT_TYPE[kind] in spec.topics:
            assert spec.process(spec.decode(orjson.dumps(doc))) is not None, (spec.name, kind)
            handled += 1
    assert handled > 0, f"{spec.name} ignores every sample on {topics}"


def test_every_output_sample_is_read_by_a_consumer() -> None:
    read = {topic for spec in SPECS for topic in spec.topics}
    assert {TOPIC_OF_OUTPUT_TYPE[kind] for kind, _ in OUTPUTS} <= read


def test_profiles_records_verdicts_and_skips_anonymous_feedback() -> None:
    effect = profiles.process_message(_sample("feedback.submitted", 1))  # rating 2
    assert isinstance(effect, profiles.FeedbackGiven)
    assert (effect.kind, effect.verdict, effect.rating) == ("rating", "rejected", 2)
    anonymous = _sample("feedback.submitted", 0).model_copy(update={"user_id": None})
    assert profiles.process_message(anonymous) is None


def test_metrics_counts_one_signal_in_its_minute() -> None:
    event = _sample("feedback.submitted", 1)
    effect = metrics.process_message(event)
    assert isinstance(effect, metrics.FeedbackCounts)
    counts = dict(zip(metrics.COUNTERS, effect.counts, strict=True))
    assert counts == {
        "thumbs_up": 0, "thumbs_down": 0, "rating_sum": 2, "rating_count": 1,
        "comments": 0, "corrections": 0, "replays_useful": 0, "replays_not_useful": 0,
    }
    assert effect.bucket == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert metrics.minute_bucket(datetime(2026, 1, 1, 3, 4, 59, 999, tzinfo=UTC)) == datetime(
        2026, 1, 1, 3, 4, tzinfo=UTC
    )


def test_metrics_uses_inline_dimensions_of_unlogged_responses() -> None:
    effect = metrics.process_message(_sample("feedback.submitted", 5))
    assert isinstance(effect, metrics.FeedbackCounts)
    assert (effect.action_type, effect.model) == ("appointment", "gpt-4o-mini")


def test_trainer_keeps_prompt_and_replay() -> None:
    response = trainer.process_message(_sample("response.logged", 0))
    assert isinstance(response, trainer.ResponseStored)
    assert response.prompt[1] == {"role": "user", "content": "Add milk to my list"}
    replay = trainer.process_message(_sample("feedback.submitted", 4))
    assert isinstance(replay, trainer.FeedbackStored)
    assert replay.replay is not None and replay.replay["useful"] is False


def test_consecutive_runs_keep_order() -> None:
    runs = consecutive_runs([1, 2, "a", 3, "b", "c"])
    assert runs == [(int, [1, 2]), (str, ["a"]), (int, [3]), (str, ["b", "c"])]


def test_grouped_runs_gather_commuting_types_between_barriers() -> None:
    # int and str commute; float is a barrier: nothing moves across it.
    effects = [1, "a", 2, "b", 0.5, 0.25, 3, "c", 4, 0.75, "d"]
    assert grouped_runs(effects, barriers=(float,)) == [
        (int, [1, 2]), (str, ["a", "b"]), (float, [0.5, 0.25]), (int, [3, 4]), (str, ["c"]),
        (float, [0.75]), (str, ["d"]),
    ]
    assert grouped_runs([1, "a", 2]) == [(int, [1, 2]), (str, ["a"])]
    assert grouped_runs([]) == []


def test_a_retraction_is_an_event_of_its_signal_in_every_processor() -> None:
    vote, retraction = _sample("feedback.submitted", 0), _sample("feedback.retracted", 0)
    assert vote.person == retraction.person == f"user:{vote.user_id}"
    counted = metrics.process_message(vote)
    taken_back = metrics.process_message(retraction)
    assert isinstance(counted, metrics.FeedbackCounts)
    assert isinstance(taken_back, metrics.FeedbackCounts)
    assert taken_back.retracted and not any(taken_back.counts)
    assert counted.signal is not None and taken_back.signal is not None
    assert counted.signal != taken_back.signal  # another response
    moved = vote.model_copy(update={"payload": vote.payload.model_copy(
        update={"response_id": retraction.payload.response_id})})
    assert metrics.process_message(moved).signal == taken_back.signal  # type: ignore[union-attr]
    assert vote.user_id is not None and vote.user_id not in taken_back.signal
    profile = profiles.process_message(retraction)
    assert isinstance(profile, profiles.FeedbackGiven)
    assert (profile.retraction, profile.kind, profile.verdict) == (True, "thumb", "neutral")
    stored = trainer.process_message(retraction)
    assert isinstance(stored, trainer.FeedbackStored)
    assert (stored.retraction, stored.person) == (True, retraction.person)
    anonymous = _sample("feedback.retracted", 1)
    assert profiles.process_message(anonymous) is None  # profiles are of users
    assert metrics.process_message(anonymous).signal is not None  # type: ignore[union-attr]
    unnamed = _sample("feedback.submitted", 2).model_copy(update={"user_id": None})
    assert metrics.process_message(unnamed).signal is None  # type: ignore[union-attr]
