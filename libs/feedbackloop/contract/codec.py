"""Bytes on a topic <-> contract events, with one typed error per way a message can be bad.

Every error here is deterministic: the same bytes fail the same way on every delivery, so a
consumer dead-letters them instead of retrying.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import orjson
from pydantic import Field, TypeAdapter, ValidationError

from feedbackloop.contract.alerts import AlertStateChanged
from feedbackloop.contract.envelope import SUPPORTED_SCHEMA_VERSIONS
from feedbackloop.contract.experiments import ExperimentExposure
from feedbackloop.contract.feedback import FeedbackRetracted, FeedbackSubmitted
from feedbackloop.contract.recommendations import Choice, Interaction, SessionStarted
from feedbackloop.contract.responses import ResponseLogged
from feedbackloop.contract.reviews import ReviewSubmitted
from feedbackloop.contract.topics import TOPIC_OF_OUTPUT_TYPE, TOPIC_OF_TYPE
from feedbackloop.contract.training_examples import TrainingExample, TrainingExampleRetracted
from feedbackloop.contract.users import ConsentChanged, ErasureRequested

Event = Annotated[
    ResponseLogged
    | FeedbackSubmitted
    | FeedbackRetracted
    | ReviewSubmitted
    | SessionStarted
    | Interaction
    | Choice
    | ConsentChanged
    | ErasureRequested
    | ExperimentExposure,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES: tuple[str, ...] = tuple(TOPIC_OF_TYPE)

OutputMessage = Annotated[
    TrainingExample | TrainingExampleRetracted | AlertStateChanged, Field(discriminator="type")
]
"""A message on an output topic that another consumer reads (training examples, alert changes)."""
OUTPUT_ADAPTER: TypeAdapter[OutputMessage] = TypeAdapter(OutputMessage)
OUTPUT_MESSAGE_TYPES: tuple[str, ...] = tuple(TOPIC_OF_OUTPUT_TYPE)
Message = Event | OutputMessage


class PoisonMessage(Exception):
    """A message that can never be processed. `reason` is a short machine-readable class."""

    reason = "poison"


class UndecodableMessage(PoisonMessage):
    reason = "undecodable"


class UnknownEventType(PoisonMessage):
    reason = "unknown_type"


class UnsupportedSchemaVersion(PoisonMessage):
    reason = "unsupported_schema_version"


class InvalidEvent(PoisonMessage):
    reason = "invalid"


def encode_event(event: Any) -> bytes:
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))


def decode_event(raw: bytes | None) -> Event:
    """Decode one message value. Raises a `PoisonMessage` subclass when it can never decode."""
    validated: Event = _validated(EVENT_ADAPTER, _document(raw, TOPIC_OF_TYPE))
    return validated


def decode_message(raw: bytes | None) -> Message:
    """Decode one message of any topic a consumer reads: an input event, a training example
    (or its retraction) or an alert state change. Raises like `decode_event`."""
    document = _document(raw, {**TOPIC_OF_TYPE, **TOPIC_OF_OUTPUT_TYPE})
    if document["type"] in TOPIC_OF_TYPE:
        event: Event = _validated(EVENT_ADAPTER, document)
        return event
    output: OutputMessage = _validated(OUTPUT_ADAPTER, document)
    return output


def _document(raw: bytes | None, known_types: Mapping[str, object]) -> dict[str, Any]:
    """The JSON object of a message of a known type and schema version."""
    if raw is None:
        raise UndecodableMessage("message has no value")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise UndecodableMessage(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise UndecodableMessage("not a JSON object")
    event_type = document.get("type")
    if not isinstance(event_type, str) or event_type not in known_types:
        raise UnknownEventType(f"unknown event type {str(event_type)[:100]!r}")
    version = document.get("schema_version", 1)
    if type(version) is not int or version not in SUPPORTED_SCHEMA_VERSIONS:
        raise UnsupportedSchemaVersion(f"schema_version {str(version)[:20]!r} is not supported")
    return document


def _validated(adapter: TypeAdapter[Any], document: dict[str, Any]) -> Any:
    try:
        return adapter.validate_python(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}"
            for issue in error.errors()[:5]
        )
        raise InvalidEvent(problems) from None
