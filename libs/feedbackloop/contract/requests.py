"""What clients POST: the flat request bodies of the ingest API, and how they become events.

A request is the envelope fields a client may set plus the type's payload fields, side by side.
The tenant, `received_at` and the user id's HMAC are added by the server: `event_document`
builds the published JSON (ingest's path), `build_event` the same event as a model.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from pydantic import BaseModel, Field, StringConstraints, TypeAdapter, model_validator

from feedbackloop.contract.codec import Event
from feedbackloop.contract.envelope import (
    SCHEMA_VERSION,
    ContractModel,
    Identifier,
    JsonObject,
    Label,
    UtcDatetime,
)
from feedbackloop.contract.experiments import ExperimentExposure, ExposurePayload
from feedbackloop.contract.feedback import (
    FeedbackPayload,
    FeedbackRetracted,
    FeedbackSubmitted,
    RetractionPayload,
)
from feedbackloop.contract.recommendations import (
    Choice,
    ChoicePayload,
    Interaction,
    InteractionPayload,
    SessionStarted,
    SessionStartedPayload,
)
from feedbackloop.contract.responses import ResponseLogged, ResponsePayload
from feedbackloop.contract.reviews import ReviewFields, ReviewPayload, ReviewSubmitted
from feedbackloop.contract.users import (
    ConsentChanged,
    ConsentPayload,
    ErasurePayload,
    ErasureRequested,
)

RawUserId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class RequestEnvelope(ContractModel):
    event_id: UUID | None = Field(
        default=None,
        description="Idempotency key. Send one and reuse it on retries; generated when absent.",
    )
    occurred_at: UtcDatetime | None = Field(
        default=None, description="When it happened on the client; defaults to receipt time."
    )
    user_id: RawUserId | None = Field(
        default=None, description="Your user id. Stored only as a tenant-keyed HMAC."
    )
    session_id: Identifier | None = None
    experiment: Label | None = None
    variant: Label | None = None
    metadata: JsonObject = Field(default_factory=dict)


class _NeedsSession(RequestEnvelope):
    @model_validator(mode="after")
    def _session_required(self) -> _NeedsSession:
        if self.session_id is None:
            raise ValueError("session_id is required on recommendation events")
        return self


class ResponseRequest(RequestEnvelope, ResponsePayload):
    pass


class FeedbackRequest(RequestEnvelope, FeedbackPayload):
    pass


class RetractionRequest(RequestEnvelope, RetractionPayload):
    """Take back the caller's signal of one kind on a response: it names the person by
    `user_id` or, for anonymous feedback, the `feedback_key` the signal was sent with."""

    @model_validator(mode="after")
    def _names_a_person(self) -> RetractionRequest:
        if self.user_id is None and self.feedback_key is None:
            raise ValueError("a retraction needs user_id or feedback_key: it names a person")
        return self


class SessionStartedRequest(_NeedsSession, SessionStartedPayload):
    pass


class InteractionRequest(_NeedsSession, InteractionPayload):
    pass


class ChoiceRequest(_NeedsSession, ChoicePayload):
    pass


class ConsentRequest(RequestEnvelope, ConsentPayload):
    pass


class ErasureRequest(RequestEnvelope, ErasurePayload):
    pass


class ExposureRequest(RequestEnvelope, ExposurePayload):
    """A unit saw a variant: `experiment` and `variant` are required, and the unit's id
    (`user_id` or `session_id`, as `unit` says)."""

    @model_validator(mode="after")
    def _names_what(self) -> ExposureRequest:
        if self.experiment is None or self.variant is None:
            raise ValueError("an exposure needs `experiment` and `variant`")
        return self


class RequestKind(BaseModel):
    """How one event type is requested and built."""

    request: type[RequestEnvelope]
    payload: type[ContractModel]
    event: type[Any]


REQUEST_KINDS: dict[str, RequestKind] = {
    "response.logged": RequestKind(
        request=ResponseRequest, payload=ResponsePayload, event=ResponseLogged
    ),
    "feedback.submitted": RequestKind(
        request=FeedbackRequest, payload=FeedbackPayload, event=FeedbackSubmitted
    ),
    "feedback.retracted": RequestKind(
        request=RetractionRequest, payload=RetractionPayload, event=FeedbackRetracted
    ),
    "recommendation.session_started": RequestKind(
        request=SessionStartedRequest, payload=SessionStartedPayload, event=SessionStarted
    ),
    "recommendation.interaction": RequestKind(
        request=InteractionRequest, payload=InteractionPayload, event=Interaction
    ),
    "recommendation.choice": RequestKind(
        request=ChoiceRequest, payload=ChoicePayload, event=Choice
    ),
    "user.consent_changed": RequestKind(
        request=ConsentRequest, payload=ConsentPayload, event=ConsentChanged
    ),
    "user.erasure_requested": RequestKind(
        request=ErasureRequest, payload=ErasurePayload, event=ErasureRequested
    ),
    "experiment.exposure": RequestKind(
        request=ExposureRequest, payload=ExposurePayload, event=ExperimentExposure
    ),
}


def build_event(
    event_type: str,
    request: RequestEnvelope,
    *,
    tenant_id: str,
    user_hash: str | None,
    received_at: datetime,
    feedback_key_hash: str | None = None,
) -> Event:
    """The event published for a validated request. Raises `ValueError` if it is inconsistent
    (including a `feedback_key` without its `feedback_key_hash`: the raw key is never
    published)."""
    kind = REQUEST_KINDS[event_type]
    fields = {name: getattr(request, name) for name in kind.payload.model_fields}
    if fields.get("feedback_key") is not None:
        fields["feedback_key"] = _hashed_key(feedback_key_hash)
    payload = kind.payload.model_construct(
        _fields_set=request.model_fields_set & set(kind.payload.model_fields), **fields
    )
    event: Event = kind.event(
        event_id=request.event_id or uuid4(),
        tenant_id=tenant_id,
        occurred_at=request.occurred_at or received_at,
        received_at=received_at,
        user_id=user_hash,
        session_id=request.session_id,
        experiment=request.experiment,
        variant=request.variant,
        metadata=request.metadata,
        payload=payload,
    )
    return event


def _hashed_key(feedback_key_hash: str | None) -> str:
    if feedback_key_hash is None:
        raise ValueError("a feedback_key is published only as its HMAC")
    return feedback_key_hash


# --- The ingest fast path -------------------------------------------------------------------
#
# `build_event` constructs and validates the event model, and publishing then dumps it again:
# about 20 µs of Python per event, most of an ingest worker's time on a batch. The request was
# already validated against the type's payload model (the request class derives from it), so the
# event's JSON document can be assembled from one dump of the request instead. The documents are
# tested to decode to exactly the event `build_event` gives, for every type.

_ENVELOPE_FIELDS = frozenset(RequestEnvelope.model_fields)
_USER_EVENTS = frozenset({"user.consent_changed", "user.erasure_requested"})
_SESSION_SUBJECT = frozenset(
    {"recommendation.session_started", "recommendation.interaction", "recommendation.choice"}
)


_PAYLOAD_FIELDS: dict[str, tuple[str, ...]] = {
    name: tuple(kind.payload.model_fields) for name, kind in REQUEST_KINDS.items()
}
if any(_ENVELOPE_FIELDS & set(fields) for fields in _PAYLOAD_FIELDS.values()):
    # A request is the envelope's fields beside the payload's: a name in both is ambiguous.
    raise RuntimeError("a payload field has an envelope field's name")


def json_timestamp(value: datetime) -> str:
    """A timestamp as the event log writes it (pydantic's JSON form, as `encode_event` does)."""
    return _TIMESTAMP.dump_python(value, mode="json")  # type: ignore[no-any-return]


_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


def event_document(
    event_type: str,
    request: RequestEnvelope,
    *,
    tenant_id: str,
    user_hash: str | None,
    received_at: str,
    feedback_key_hash: str | None = None,
) -> tuple[dict[str, Any], str]:
    """The JSON document of the event `build_event` would give, and the event's subject (what
    orders it: its response, session or user). `received_at` is in `json_timestamp` form.
    Raises `ValueError` where `build_event` would find the event inconsistent."""
    if event_type in _USER_EVENTS and user_hash is None:
        raise ValueError("user_id is required on user events")
    document = request.model_dump(mode="json", exclude_none=True, exclude={"user_id"})
    payload = {name: document.pop(name) for name in _PAYLOAD_FIELDS[event_type] if name in document}
    if "feedback_key" in payload:
        payload["feedback_key"] = _hashed_key(feedback_key_hash)
    document["type"] = event_type
    document["schema_version"] = SCHEMA_VERSION
    if "event_id" not in document:
        document["event_id"] = str(uuid4())
    document["tenant_id"] = tenant_id
    document.setdefault("occurred_at", received_at)
    document["received_at"] = received_at
    if user_hash is not None:
        document["user_id"] = user_hash
    document["payload"] = payload
    if event_type == "experiment.exposure":
        subject: str = _exposed_unit(document, payload)
    elif event_type in _USER_EVENTS:
        subject = document["user_id"]
    elif event_type in _SESSION_SUBJECT:
        subject = document["session_id"]
    else:
        subject = payload["response_id"]
    return document, subject


def _exposed_unit(document: dict[str, Any], payload: dict[str, Any]) -> str:
    """The unit an exposure is of (its subject); `ValueError` as the event model raises."""
    field = "user_id" if payload.get("unit") == "user" else "session_id"
    if field not in document:
        raise ValueError(f"an exposure of a {payload.get('unit')} needs {field}")
    unit: str = document[field]
    return unit


# --- Reviews --------------------------------------------------------------------------------
#
# A review is attributed to the API key that sent it: its request has no reviewer, and ingest
# builds the event with the key's id and name. It is not in `REQUEST_KINDS`, so a batch (sent
# with an `ingest` key) cannot carry one.


class ReviewRequest(ReviewFields):
    """What `POST /v1/reviews` takes: one reviewer action on one response."""

    event_id: UUID | None = Field(
        default=None,
        description="Idempotency key. Send one and reuse it on retries; generated when absent.",
    )
    occurred_at: UtcDatetime | None = Field(
        default=None, description="When the reviewer acted; defaults to receipt time."
    )


def build_review(
    request: ReviewRequest,
    *,
    tenant_id: str,
    reviewer: str,
    reviewer_name: str | None,
    received_at: datetime,
) -> ReviewSubmitted:
    """The `review.submitted` event of a validated request, attributed to `reviewer`."""
    fields = {name: getattr(request, name) for name in ReviewFields.model_fields}
    return ReviewSubmitted(
        event_id=request.event_id or uuid4(),
        tenant_id=tenant_id,
        occurred_at=request.occurred_at or received_at,
        received_at=received_at,
        payload=ReviewPayload(**fields, reviewer=reviewer, reviewer_name=reviewer_name),
    )
