"""Properties of the event contract and the consumers' pure logic, over generated input.

- Round trip: any valid event (every sample, with its envelope and payload values replaced by
  generated ones) encodes and decodes to an equal event, and encoding is stable.
- The ingest fast path: the document ingest publishes for a request decodes to exactly the
  event the models build, for every type, with and without the optional envelope fields.
- Poison containment: for any bytes, any JSON document, and any sample with a field replaced by
  arbitrary JSON or removed, decoding followed by every processor raises nothing but
  `PoisonMessage` (the one exception the pipeline dead-letters; anything else would stop a
  consumer or, worse, be retried forever).
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedbackloop.contract import PoisonMessage, decode_event, encode_event, load_samples
from feedbackloop.contract.requests import build_event, event_document, json_timestamp
from feedbackloop.identity import hash_feedback_key, hash_user_id
from services.ingest.processing import RequestProblem, parse_request
from services.learner.handlers import SPEC as LEARNER
from services.metrics.handlers import SPEC as METRICS
from services.profiles.handlers import SPEC as PROFILES
from services.trainer.handlers import SPEC as TRAINER

SPECS = (PROFILES, LEARNER, TRAINER, METRICS)
SAMPLES = [doc for docs in load_samples().values() for doc in docs]
# What clients send through the request path (a review is built by ingest from the key).
REQUEST_SAMPLES = [doc for doc in SAMPLES if doc["type"] != "review.submitted"]
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis/ in the work tree; failures print their reproduction
    suppress_health_check=[HealthCheck.too_slow],
)

# JSON as orjson writes it: no NaN or infinities, integers within 64 bits.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
moments = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def _process_everywhere(raw: bytes) -> None:
    """What the pipeline does with a message: decode, then each subscribed processor."""
    try:
        event = decode_event(raw)
        for spec in SPECS:
            spec.process(event)
    except PoisonMessage:
        pass


@PROPERTY_SETTINGS
@given(
    sample=st.sampled_from(SAMPLES),
    event_id=st.uuids(),
    occurred_at=moments,
    lateness=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
    tenant=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1,
                   max_size=40).filter(str.strip),
    metadata=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
)
def test_valid_events_round_trip_through_the_codec(
    sample: dict[str, Any],
    event_id: uuid.UUID,
    occurred_at: datetime,
    lateness: timedelta,
    tenant: str,
    metadata: dict[str, Any],
) -> None:
    document = copy.deepcopy(sample) | {
        "event_id": str(event_id),
        "tenant_id": tenant,
        "occurred_at": occurred_at.isoformat(),
        "received_at": (occurred_at + lateness).isoformat(),
        "metadata": metadata,
    }
    try:
        event = decode_event(orjson.dumps(document))
    except PoisonMessage as error:  # the generated values are valid; refusing one is a bug
        pytest.fail(f"a valid event was refused: {error}")
    encoded = encode_event(event)
    again = decode_event(encoded)
    assert again == event
    assert encode_event(again) == encoded
    assert again.event_id == event_id and again.tenant_id == event.tenant_id


@PROPERTY_SETTINGS
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_are_poison_or_nothing(raw: bytes) -> None:
    _process_everywhere(raw)


@PROPERTY_SETTINGS
@given(document=json_values)
def test_arbitrary_json_documents_are_poison_or_nothing(document: Any) -> None:
    _process_everywhere(orjson.dumps(document))


ENVELOPE_LOOKUPS = ("type", "schema_version")


@pytest.mark.parametrize("field", ENVELOPE_LOOKUPS)
@pytest.mark.parametrize("value", [["feedback.submitted"], {"v": 1}])
def test_a_list_or_object_as_type_or_version_is_poison(field: str, value: Any) -> None:
    _process_everywhere(orjson.dumps(SAMPLES[0] | {field: value}))


@st.composite
def damaged_samples(draw: st.DrawFn) -> dict[str, Any]:
    """A sample with one field, of the envelope or of the payload, replaced or removed."""
    document = copy.deepcopy(draw(st.sampled_from(SAMPLES)))
    target = document
    if isinstance(document.get("payload"), dict) and draw(st.booleans()):
        target = document["payload"]
    keys = [*sorted(target), "unexpected"]
    key = draw(st.sampled_from(keys))
    if draw(st.integers(0, 3)) == 0:
        target.pop(key, None)
    else:
        target[key] = draw(json_values)
    return document


@PROPERTY_SETTINGS
@given(document=damaged_samples())
def test_damaged_samples_are_poison_or_processed(document: dict[str, Any]) -> None:
    _process_everywhere(orjson.dumps(document))


@PROPERTY_SETTINGS
@given(
    document=st.sampled_from(SAMPLES),
    version=st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(max_size=5),
)
def test_unknown_schema_versions_are_poison(document: dict[str, Any], version: Any) -> None:
    damaged = document | {"schema_version": version}
    if version == 1:
        return
    with pytest.raises(PoisonMessage):
        decode_event(orjson.dumps(damaged))


def _request_body(document: dict[str, Any]) -> dict[str, Any]:
    """The request a client would POST for a sample event: client envelope fields beside the
    payload's, without what the server adds."""
    client = ("event_id", "occurred_at", "session_id", "experiment", "variant", "metadata")
    return {k: document[k] for k in client if k in document} | document["payload"]


@PROPERTY_SETTINGS
@given(
    sample=st.sampled_from(REQUEST_SAMPLES),
    user=st.none() | st.text(min_size=1, max_size=20),
    keep_id=st.booleans(),
    keep_time=st.booleans(),
    received_at=moments,
    metadata=st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=4),
)
def test_ingest_fast_path_publishes_the_event_build_event_gives(
    sample: dict[str, Any],
    user: str | None,
    keep_id: bool,
    keep_time: bool,
    received_at: datetime,
    metadata: dict[str, Any] | None,
) -> None:
    """`event_document` (what ingest publishes) decodes to the same event, with the same
    subject, as the model-built `build_event`; both refuse what the other refuses."""
    body = _request_body(sample)
    if not keep_id:
        body.pop("event_id", None)
    if not keep_time:
        body.pop("occurred_at", None)
    if metadata is not None:
        body["metadata"] = metadata
    if user is not None:
        body["user_id"] = user
    try:
        request = parse_request(sample["type"], body)
    except RequestProblem:
        # A retraction sample without its user id names nobody: refused at the edge.
        assert sample["type"] == "feedback.retracted" and user is None
        return
    user_hash = hash_user_id(b"k" * 32, "acme", user) if user is not None else None
    raw_key = body.get("feedback_key")
    key_hash = hash_feedback_key(b"k" * 32, "acme", raw_key) if raw_key is not None else None
    try:
        expected = build_event(sample["type"], request, tenant_id="acme", user_hash=user_hash,
                               received_at=received_at, feedback_key_hash=key_hash)
    except ValueError:
        with pytest.raises(ValueError):
            event_document(sample["type"], request, tenant_id="acme", user_hash=user_hash,
                           received_at=json_timestamp(received_at), feedback_key_hash=key_hash)
        return
    document, subject = event_document(
        sample["type"], request, tenant_id="acme", user_hash=user_hash,
        received_at=json_timestamp(received_at), feedback_key_hash=key_hash,
    )
    published = decode_event(orjson.dumps(document))
    if not keep_id:  # generated on each side
        assert published.event_id != expected.event_id
        published = published.model_copy(update={"event_id": expected.event_id})
    assert published == expected
    assert orjson.loads(encode_event(published)) == orjson.loads(encode_event(expected))
    assert subject == expected.subject
