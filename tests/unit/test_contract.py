"""The event contract: samples, the codec's typed failures, and strictness at the edge."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from feedbackloop.contract import (
    CONSUMED_TOPICS,
    EVENT_TYPES,
    INPUT_TOPICS,
    TOPIC_OF_TYPE,
    FeedbackSubmitted,
    InvalidEvent,
    Topic,
    TopicNames,
    UndecodableMessage,
    UnknownEventType,
    UnsupportedSchemaVersion,
    decode_event,
    encode_event,
    load_samples,
)
from feedbackloop.contract.requests import REQUEST_KINDS, FeedbackRequest, build_event
from feedbackloop.contract.strict import unknown_fields

SAMPLES = [(kind, doc) for kind, docs in load_samples().items() for doc in docs]


def test_every_event_type_has_samples() -> None:
    assert set(load_samples()) == set(EVENT_TYPES)
    # A review is attributed to the key that sent it: built by ingest, not from a request body.
    assert set(REQUEST_KINDS) | {"review.submitted"} == set(EVENT_TYPES)


@pytest.mark.parametrize(("kind", "document"), SAMPLES, ids=[d["event_id"][-4:] for _, d in SAMPLES])
def test_sample_round_trips(kind: str, document: dict) -> None:
    event = decode_event(orjson.dumps(document))
    assert event.type == kind
    again = decode_event(encode_event(event))
    assert again == event
    assert again.schema_version == 1


def test_consumers_ignore_unknown_fields() -> None:
    document = load_samples()["feedback.submitted"][0] | {"added_in_v1_1": True}
    document["payload"] = document["payload"] | {"new_field": 1}
    event = decode_event(orjson.dumps(document))
    assert isinstance(event, FeedbackSubmitted)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"\xff\xfe not json", UndecodableMessage),
        (b"[1, 2]", UndecodableMessage),
        (None, UndecodableMessage),
        (b'{"type": "feedback.deleted"}', UnknownEventType),
        (orjson.dumps(load_samples()["feedback.submitted"][0] | {"schema_version": 7}),
         UnsupportedSchemaVersion),
        (orjson.dumps(load_samples()["feedback.submitted"][0] | {"payload": {"response_id": "r"}}),
         InvalidEvent),
    ],
)
def test_poison_messages_raise_one_typed_error(raw: bytes | None, error: type) -> None:
    with pytest.raises(error):
        decode_event(raw)


def test_feedback_needs_exactly_one_signal() -> None:
    FeedbackRequest.model_validate({"response_id": "r", "thumb": "up"})
    with pytest.raises(ValueError, match="exactly one"):
        FeedbackRequest.model_validate({"response_id": "r"})
    with pytest.raises(ValueError, match="thumb, rating"):
        FeedbackRequest.model_validate({"response_id": "r", "thumb": "up", "rating": 5})


@pytest.mark.parametrize(
    ("fields", "verdict"),
    [
        ({"thumb": "up"}, "accepted"),
        ({"thumb": "down"}, "rejected"),
        ({"rating": 5}, "accepted"),
        ({"rating": 4}, "accepted"),
        ({"rating": 3}, "neutral"),
        ({"rating": 1}, "rejected"),
        ({"correction": {"text": "better"}}, "rejected"),
        ({"replay": {"ai_reply": "a", "useful": True}}, "accepted"),
        ({"replay": {"ai_reply": "a", "useful": False}}, "rejected"),
        ({"comment": {"text": "hm"}}, "neutral"),
    ],
)
def test_verdict_rules(fields: dict, verdict: str) -> None:
    assert FeedbackRequest.model_validate({"response_id": "r", **fields}).verdict == verdict


def test_unknown_fields_are_found_at_every_depth() -> None:
    body = {
        "response_id": "r",
        "comment": {"text": "x", "reasons": [], "reson": 1},
        "prompt": [{"role": "user", "content": "hi", "name": "bob"}],
        "thumbs": "up",
    }
    found = unknown_fields(FeedbackRequest, body)
    assert sorted(found, key=str) == sorted(
        [("comment", "reson"), ("prompt", 0, "name"), ("thumbs",)], key=str
    )
    assert unknown_fields(FeedbackRequest, {"response_id": "r", "thumb": "up"}) == []


def test_recommendation_requests_need_a_session() -> None:
    kind = REQUEST_KINDS["recommendation.choice"]
    with pytest.raises(ValueError, match="session_id"):
        kind.request.model_validate({"chosen_item_id": "a", "chosen_rank": 1})
    with pytest.raises(ValueError, match="together"):
        kind.request.model_validate({"session_id": "s", "chosen_item_id": "a"})


def test_session_options_need_distinct_ranks() -> None:
    kind = REQUEST_KINDS["recommendation.session_started"]
    option = {"item_id": "a", "rank": 1}
    with pytest.raises(ValueError, match="distinct ranks"):
        kind.request.model_validate(
            {"session_id": "s", "algorithm_version": "v", "options": [option, option | {"item_id": "b"}]}
        )


def test_build_event_adds_server_fields() -> None:
    request = FeedbackRequest.model_validate(
        {"response_id": "r", "thumb": "down", "user_id": "raw", "occurred_at": "2026-01-01T00:00:00"}
    )
    now = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    event = build_event(
        "feedback.submitted", request, tenant_id="acme", user_hash="h", received_at=now
    )
    assert event.tenant_id == "acme"
    assert event.user_id == "h"
    assert event.received_at == now
    assert event.occurred_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert event.payload.thumb == "down"
    assert b"raw" not in encode_event(event)


def test_topic_names() -> None:
    names = TopicNames("fbl")
    assert names.physical(Topic.FEEDBACK) == "fbl.feedback"
    assert names.dead_letter(Topic.FEEDBACK) == "fbl.feedback.dlq"
    assert names.logical("fbl.feedback.dlq") is Topic.FEEDBACK
    assert len(names.all_physical()) == len(Topic) + len(CONSUMED_TOPICS)
    assert set(TOPIC_OF_TYPE.values()) == set(INPUT_TOPICS)
