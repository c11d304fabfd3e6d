"""The signal identity in the contract: feedback keys published only as HMACs, retractions
that must name a person, and retractions keyed and ordered like the feedback they take back."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import orjson
import pytest

from feedbackloop.contract import (
    FeedbackRetracted,
    FeedbackSubmitted,
    Topic,
    TopicNames,
    decode_event,
    signal_order,
    signal_person,
)
from feedbackloop.identity import hash_feedback_key, hash_user_id
from services.ingest.processing import RequestProblem, Tenancy, parse_request, prepare

SECRET = b"s" * 32
TENANCY = Tenancy("acme", datetime(2026, 11, 20, 10, 0, tzinfo=UTC), SECRET)
TOPICS = TopicNames("fbl")


def _published(event_type: str, body: dict[str, object]) -> tuple[bytes, bytes]:
    prepared = prepare(event_type, parse_request(event_type, body), TENANCY, TOPICS)
    assert prepared.message.topic == TOPICS.physical(Topic.FEEDBACK)
    assert prepared.message.key is not None
    return prepared.message.key, prepared.message.value


def test_a_feedback_key_is_published_only_as_its_tenant_keyed_hmac() -> None:
    raw = "browser-7f3a"
    key, value = _published("feedback.submitted",
                            {"response_id": "r1", "thumb": "up", "feedback_key": raw})
    assert raw.encode() not in value
    event = decode_event(value)
    assert isinstance(event, FeedbackSubmitted)
    assert event.payload.feedback_key == hash_feedback_key(SECRET, "acme", raw)
    assert event.person == f"key:{hash_feedback_key(SECRET, 'acme', raw)}"
    assert key == b"acme:r1"
    # Keyed apart from user ids, and per tenant.
    assert hash_feedback_key(SECRET, "acme", raw) != hash_user_id(SECRET, "acme", raw)
    assert hash_feedback_key(SECRET, "acme", raw) != hash_feedback_key(SECRET, "other", raw)


def test_a_retraction_names_a_person_and_is_keyed_like_the_feedback() -> None:
    with pytest.raises(RequestProblem) as refused:
        parse_request("feedback.retracted", {"response_id": "r1", "kind": "thumb"})
    assert "user_id or feedback_key" in orjson.dumps(refused.value.errors).decode()
    with pytest.raises(RequestProblem):
        parse_request("feedback.retracted", {"response_id": "r1", "kind": "vote", "user_id": "u"})
    key, value = _published("feedback.retracted",
                            {"response_id": "r1", "kind": "rating", "user_id": "u1"})
    event = decode_event(value)
    assert isinstance(event, FeedbackRetracted)
    assert key == b"acme:r1"
    assert (event.kind, event.person) == ("rating", f"user:{hash_user_id(SECRET, 'acme', 'u1')}")
    assert b'"u1"' not in value


def test_the_user_id_names_the_person_when_both_are_sent() -> None:
    assert signal_person("h", "k") == "user:h"
    assert signal_person(None, "k") == "key:k"
    assert signal_person(None, None) is None


def test_later_wins_and_ties_are_broken_by_event_id() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    low, high = UUID(int=1), UUID(int=2)
    assert signal_order(moment, high) > signal_order(moment, low)
    assert signal_order(moment.replace(second=1), low) > signal_order(moment, high)
    # PostgreSQL orders uuid bytewise, which is the order of the canonical text.
    assert str(UUID(int=2**127)) > str(UUID(int=2**126)) and UUID(int=2**127) > UUID(int=2**126)
