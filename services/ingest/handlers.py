"""Ingest routes: validate, build events, publish, and answer only after the broker acked."""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Body, Path, Response
from pydantic import BaseModel, Field

from feedbackloop.contract.requests import (
    REQUEST_KINDS,
    ChoiceRequest,
    ConsentRequest,
    ErasureRequest,
    FeedbackRequest,
    InteractionRequest,
    RequestEnvelope,
    ResponseRequest,
    RetractionRequest,
    SessionStartedRequest,
)
from feedbackloop.http.auth import Principal, Scope
from feedbackloop.http.problems import ProblemException
from feedbackloop.identity import hash_user_id
from feedbackloop.kafka import PublishRejected, PublishUnavailable
from services.ingest.deps import Caller, IngestState, State, requires, strict, tenancy_of
from services.ingest.processing import PreparedEvent, RequestProblem, parse_request, prepare

router = APIRouter(prefix="/v1", tags=["ingest"])

_EVENT_TYPE_OF_PATH = {
    "/v1/responses": "response.logged",
    "/v1/feedback": "feedback.submitted",
    "/v1/feedback/retractions": "feedback.retracted",
    "/v1/reviews": "review.submitted",
    "/v1/recommendations/sessions": "recommendation.session_started",
    "/v1/recommendations/rank": "recommendation.session_started",
    "/v1/recommendations/interactions": "recommendation.interaction",
    "/v1/recommendations/choices": "recommendation.choice",
    "/v1/traces": "response.logged",
}


def event_type_of_path(path: str) -> str | None:
    """The event type a route takes, for counting its refusals (None: mixed or unknown)."""
    if path.startswith("/v1/users/"):
        if path.endswith("/consent"):
            return "user.consent_changed"
        if path.endswith("/erasure"):
            return "user.erasure_requested"
    return _EVENT_TYPE_OF_PATH.get(path)


def is_event_route(path: str) -> bool:
    """Routes that take events (a token is minted, not an event)."""
    return path.startswith("/v1/") and path != "/v1/feedback/tokens"
UserIdPath = Annotated[str, Path(min_length=1, max_length=256)]


class Accepted(BaseModel):
    event_id: UUID
    status: Literal["accepted"] = "accepted"


class BatchItemResult(BaseModel):
    index: int
    status: Literal["accepted", "invalid"]
    event_id: UUID | None = None
    errors: list[dict[str, Any]] | None = None


class BatchResult(BaseModel):
    accepted: int
    invalid: int
    results: list[BatchItemResult]


class EventBatch(BaseModel):
    events: list[dict[str, Any]] = Field(
        min_length=1,
        description="Up to 1,000 events (1 MiB in all), each an object with a `type` "
        "(for example `feedback.submitted`) and that type's fields.",
    )


async def publish_events(state: IngestState, events: list[PreparedEvent]) -> None:
    """Publish and wait for the broker's acknowledgement; 503 with Retry-After otherwise."""
    started = time.perf_counter()
    try:
        await state.publisher.publish([event.message for event in events])
    except PublishRejected as error:
        _count(state, events, "too_large")
        raise ProblemException(413, str(error)) from None
    except PublishUnavailable as error:
        _count(state, events, "unavailable")
        raise ProblemException(
            503,
            f"the event log did not acknowledge the events; retry with the same event ids"
            f" ({error})",
            headers={"Retry-After": str(state.retry_after_seconds)},
            errors=[{"event_id": event.event_id} for event in events],
        ) from None
    state.metrics.publish_seconds.observe(time.perf_counter() - started)
    _count(state, events, "accepted")


def _count(state: IngestState, events: list[PreparedEvent], outcome: str) -> None:
    for event_type, count in Counter(event.event_type for event in events).items():
        state.count(event_type, outcome, count)


async def _accept_one(
    state: IngestState,
    caller: Any,
    event_type: str,
    request: RequestEnvelope,
    *,
    user_id: str | None = None,
    user_hash: str | None = None,
) -> Accepted:
    try:
        event = prepare(
            event_type, request, tenancy_of(state, caller), state.topics, user_id=user_id,
            user_hash=user_hash,
        )
    except RequestProblem as problem:
        state.count(event_type, "invalid")
        raise ProblemException(422, "The event is invalid.", errors=problem.errors) from None
    await publish_events(state, [event])
    return Accepted(event_id=UUID(event.event_id))


_INGEST = requires(Scope.INGEST)


@router.post("/responses", status_code=202, dependencies=[_INGEST, strict(ResponseRequest)])
async def log_response(body: ResponseRequest, state: State, caller: Caller) -> Accepted:
    """Log an AI output that can receive feedback (`response.logged`)."""
    return await _accept_one(state, caller, "response.logged", body)


@router.post(
    "/feedback",
    status_code=202,
    dependencies=[requires(Scope.INGEST, Scope.FEEDBACK, Scope.REVIEW), strict(FeedbackRequest)],
)
async def submit_feedback(body: FeedbackRequest, state: State, caller: Caller) -> Accepted:
    """Submit one feedback signal on a response (`feedback.submitted`). A signed feedback token
    may be used instead of a key, on its own response only; a `review` key may send one too
    (a reviewer's correction from the console)."""
    caller.require_response(body.response_id)
    return await _accept_one(state, caller, "feedback.submitted", body,
                             user_hash=_speaker(state, caller, body))


@router.post(
    "/feedback/retractions",
    status_code=202,
    dependencies=[requires(Scope.INGEST, Scope.FEEDBACK), strict(RetractionRequest)],
)
async def retract_feedback(body: RetractionRequest, state: State, caller: Caller) -> Accepted:
    """Take back the person's signal of one `kind` on a response (`feedback.retracted`).

    The person is the `user_id` or, for anonymous feedback, the `feedback_key` the signal was
    sent with (one of them is required). The retraction wins over that person's earlier events
    of the kind by `occurred_at` and loses to later ones. A signed feedback token may be used
    instead of a key, on its own response only."""
    caller.require_response(body.response_id)
    return await _accept_one(state, caller, "feedback.retracted", body,
                             user_hash=_speaker(state, caller, body))


def _speaker(state: IngestState, caller: Principal, body: FeedbackRequest | RetractionRequest) -> str | None:
    """Whom feedback may speak for. A token bound to a user sends that user's feedback only:
    the body's `user_id` must be theirs (403 otherwise) and may be left out (the token's user
    is the event's). A `review` key without the `ingest` scope sends the reviewer's own
    corrections: it cannot name a user or a feedback key (403). Returns the user hash to use
    when the body names none."""
    if caller.user_hash is not None:
        if body.user_id is not None and hash_user_id(
            state.hmac_secret, caller.tenant_id, body.user_id
        ) != caller.user_hash:
            raise ProblemException(
                403, "this feedback token is for another user: send no user_id, or that user's"
            )
        return caller.user_hash
    if Scope.REVIEW.value in caller.scopes and not caller.scopes & _SPEAKS_FOR_USERS:
        if body.user_id is not None or body.feedback_key is not None:
            raise ProblemException(
                403,
                "a review key sends a reviewer's corrections: it cannot name a user_id or a "
                "feedback_key (use an ingest key, or a feedback token bound to the user)",
            )
    return None


_SPEAKS_FOR_USERS = frozenset({Scope.INGEST.value, Scope.FEEDBACK.value})


@router.post(
    "/recommendations/sessions",
    status_code=202,
    dependencies=[_INGEST, strict(SessionStartedRequest)],
)
async def start_session(body: SessionStartedRequest, state: State, caller: Caller) -> Accepted:
    """Log the list of options shown to a customer (`recommendation.session_started`)."""
    return await _accept_one(state, caller, "recommendation.session_started", body)


@router.post(
    "/recommendations/interactions",
    status_code=202,
    dependencies=[_INGEST, strict(InteractionRequest)],
)
async def record_interaction(body: InteractionRequest, state: State, caller: Caller) -> Accepted:
    """Log how a customer browsed an option (`recommendation.interaction`)."""
    return await _accept_one(state, caller, "recommendation.interaction", body)


@router.post(
    "/recommendations/choices", status_code=202, dependencies=[_INGEST, strict(ChoiceRequest)]
)
async def record_choice(body: ChoiceRequest, state: State, caller: Caller) -> Accepted:
    """Log which option the customer chose, or that none was (`recommendation.choice`)."""
    return await _accept_one(state, caller, "recommendation.choice", body)


def _same_user(body: RequestEnvelope, user_id: str) -> None:
    if body.user_id is not None and body.user_id != user_id:
        raise ProblemException(
            422,
            "The event is invalid.",
            errors=[{"loc": ["user_id"], "msg": "differs from the path", "type": "value_error"}],
        )


@router.post(
    "/users/{user_id}/consent",
    status_code=202,
    dependencies=[requires(Scope.INGEST, Scope.ADMIN), strict(ConsentRequest)],
)
async def change_consent(
    user_id: UserIdPath, body: ConsentRequest, state: State, caller: Caller
) -> Accepted:
    """Record whether the user's events may be used for training (`user.consent_changed`)."""
    _same_user(body, user_id)
    return await _accept_one(state, caller, "user.consent_changed", body, user_id=user_id)


@router.post(
    "/users/{user_id}/erasure",
    status_code=202,
    dependencies=[requires(Scope.INGEST, Scope.ADMIN), strict(ErasureRequest)],
)
async def request_erasure(
    user_id: UserIdPath,
    state: State,
    caller: Caller,
    body: Annotated[ErasureRequest | None, Body()] = None,
) -> Accepted:
    """Forget the user everywhere (`user.erasure_requested`)."""
    body = body or ErasureRequest()
    _same_user(body, user_id)
    return await _accept_one(state, caller, "user.erasure_requested", body, user_id=user_id)


@router.post(
    "/events",
    status_code=202,
    dependencies=[_INGEST],
    response_model=BatchResult,
    responses={422: {"description": "No event in the batch is valid"}},
)
async def ingest_batch(batch: EventBatch, state: State, caller: Caller) -> Response:
    """A batch of mixed events with a result per event. Valid events are published even when
    others are invalid; if the broker does not acknowledge, nothing is reported accepted."""
    if len(batch.events) > state.max_batch_events:
        raise ProblemException(
            413, f"a batch holds at most {state.max_batch_events} events, got {len(batch.events)}"
        )
    tenancy = tenancy_of(state, caller)
    # Plain dicts serialized once with orjson: building a model per result and validating the
    # response costs more than the rest of a small event's path.
    results: list[dict[str, Any]] = []
    events: list[PreparedEvent] = []
    invalid: Counter[str | None] = Counter()
    for index, item in enumerate(batch.events):
        event_type = item.get("type") if isinstance(item, dict) else None
        # A JSON list or object as `type` is unhashable: check it is a string first.
        if not isinstance(event_type, str) or event_type not in REQUEST_KINDS:
            results.append(_invalid(index, [{"loc": ["type"], "msg": "unknown event type",
                                             "type": "literal_error"}]))
            invalid[None] += 1
            continue
        fields = {key: value for key, value in item.items() if key != "type"}
        try:
            event = prepare(event_type, parse_request(event_type, fields), tenancy, state.topics)
        except RequestProblem as problem:
            results.append(_invalid(index, problem.errors))
            invalid[event_type] += 1
            continue
        events.append(event)
        results.append({"index": index, "status": "accepted", "event_id": event.event_id,
                        "errors": None})
    for event_type, count in invalid.items():
        state.count(event_type, "invalid", count)
    if not events:
        raise ProblemException(
            422,
            "No event in the batch is valid.",
            errors=[error | {"index": r["index"]} for r in results for error in r["errors"] or []],
        )
    await publish_events(state, events)
    body = {"accepted": len(events), "invalid": len(results) - len(events), "results": results}
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")


def _invalid(index: int, errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"index": index, "status": "invalid", "event_id": None, "errors": errors}
