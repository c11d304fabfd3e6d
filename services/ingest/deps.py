"""Dependencies of the ingest routes, as `Annotated` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import orjson
from fastapi import Depends, Header, Request, params

from feedbackloop.contract import TopicNames
from feedbackloop.contract.requests import RequestEnvelope
from feedbackloop.http.auth import ApiKeyVerifier, Principal, Scope
from feedbackloop.http.problems import ProblemException
from feedbackloop.http.tokens import FeedbackTokenSigner
from feedbackloop.kafka import EventPublisher
from feedbackloop.observability import IngestMetrics
from services.ingest.processing import Tenancy, strict_errors
from services.ingest.refusals import mark_counted


@dataclass(frozen=True)
class IngestState:
    """Resources built in the lifespan and shared by every request."""

    verifier: ApiKeyVerifier
    publisher: EventPublisher
    topics: TopicNames
    metrics: IngestMetrics
    hmac_secret: bytes
    retry_after_seconds: int
    max_batch_events: int
    tokens: FeedbackTokenSigner
    max_batch_bytes: int = 1_048_576
    otlp_response_id_attribute: str = ""
    token_default_ttl_seconds: int = 3_600
    token_max_ttl_seconds: int = 86_400
    customer_min_confidence: float = 0.5

    def count(self, event_type: str | None, outcome: str, amount: int = 1) -> None:
        """Count events of a request by outcome; the request is then not counted again."""
        self.metrics.count(event_type, outcome, amount)
        mark_counted()

    @property
    def token_ttl_seconds(self) -> int:
        """The lifetime of a token minted without one asked: the default, within the maximum."""
        return min(self.token_default_ttl_seconds, self.token_max_ttl_seconds)


def _state(request: Request) -> IngestState:
    state: IngestState = request.app.state.ingest
    return state


async def _principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    return await _state(request).verifier.verify(authorization)


async def _state_dependency(request: Request) -> IngestState:
    # A coroutine: FastAPI runs a plain function dependency in its thread pool, a thread hop
    # per request that cost more CPU than the rest of a small request's dependencies.
    return _state(request)


State = Annotated[IngestState, Depends(_state_dependency)]
Caller = Annotated[Principal, Depends(_principal)]


def tenancy_of(state: IngestState, principal: Principal) -> Tenancy:
    return Tenancy(principal.tenant_id, datetime.now(UTC), state.hmac_secret)


def requires(*scopes: Scope) -> params.Depends:
    async def check(principal: Caller) -> None:
        principal.require(*scopes)

    return Depends(check)


def strict(model: type[RequestEnvelope]) -> params.Depends:
    """Reject fields the contract does not define, with their locations (422)."""

    async def check(request: Request) -> None:
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return  # the body validation reports malformed JSON
        errors = strict_errors(model, data)
        if errors:
            raise ProblemException(422, "The event has fields the contract does not define.",
                                   errors=errors)

    return Depends(check)
