"""`POST /v1/recommendations/rank`: rank candidates with the customer's segment weights, and
log what was shown as `recommendation.session_started`, so the choice that follows teaches the
learner and the next ranking uses what it learned.

The ranking maths is `services.learner.ranking` (pure); the segment rules are
`services.profiles.segments`; the weights are the learner's newest version for the segment
(`learner.weights_versions`), or equal weights while the segment has none (a version exists
only once the segment reached the learner's minimum number of choices).
"""

from __future__ import annotations

import random
import uuid
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from feedbackloop.contract.envelope import Identifier, Label
from feedbackloop.contract.recommendations import Segment
from feedbackloop.contract.requests import SessionStartedRequest
from feedbackloop.http.auth import Scope
from feedbackloop.http.problems import ProblemException
from feedbackloop.identity import hash_user_id
from services.ingest.deps import Caller, State, requires, tenancy_of
from services.ingest.handlers import publish_events
from services.ingest.processing import RequestProblem, prepare
from services.learner import repository as learner
from services.learner.ranking import Candidate, RankedCandidate, rank_candidates, weights_for
from services.profiles import repository as profiles
from services.profiles.segments import (
    Decision,
    SegmentAssignment,
    assign_segment,
    segment_from_stated,
)

router = APIRouter(prefix="/v1", tags=["recommendations"])
SESSION_EVENT = "recommendation.session_started"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RankCandidateIn(_Strict):
    item_id: Identifier
    scores: dict[Label, float] = Field(min_length=1, max_length=50)
    category: Label | None = None


class Customer(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None, description="Your user id (hashed like every user id)."
    )
    segment: Segment | None = Field(
        default=None, description="Use this segment; otherwise it is assigned."
    )
    stated_preferences: list[Label] = Field(default_factory=list, max_length=50)


class Exploration(_Strict):
    rate: float = Field(ge=0.0, le=0.5, description="Chance of shuffling the top k.")
    top_k: int = Field(default=3, ge=2, le=10)


class RankRequest(_Strict):
    session_id: Identifier | None = Field(default=None, description="Generated when absent.")
    event_id: uuid.UUID | None = Field(default=None, description="Idempotency key of the log.")
    customer: Customer = Field(default_factory=Customer)
    candidates: list[RankCandidateIn] = Field(min_length=1, max_length=200)
    complexity: Label | None = None
    exploration: Exploration | None = Field(
        default=None, description="Off unless given: randomise the top k with this rate."
    )

    @model_validator(mode="after")
    def _distinct_candidates(self) -> RankRequest:
        # The logged session needs one option per item (the contract refuses duplicates), and
        # a choice could not say which of two equal item ids was meant.
        item_ids = [candidate.item_id for candidate in self.candidates]
        if len(set(item_ids)) != len(item_ids):
            raise ValueError("candidates must have distinct item_id values")
        return self


class RankedOut(BaseModel):
    item_id: str
    rank: int
    total: float
    contributions: dict[str, float]
    propensity: float
    category: str | None


class WeightsUsed(BaseModel):
    source: Literal["learned", "default"]
    version: int | None
    weights: dict[str, float]
    confidence: float | None
    sample_size: int | None


class RankResponse(BaseModel):
    session_id: str
    event_id: uuid.UUID
    segment: str
    segment_source: Literal["request", "profile", "stated", "default"]
    segment_reasons: list[str]
    weights: WeightsUsed
    algorithm_version: str
    ranked: list[RankedOut]


def _exploration_rng(tenant_id: str, body: RankRequest) -> random.Random:
    """A retry with the same session and event ids shuffles the same way, so the options the
    customer sees are the ones logged even when the first attempt's log did land."""
    if body.session_id and body.event_id:
        return random.Random(f"{tenant_id}:{body.session_id}:{body.event_id}")
    return random.Random()


@router.post("/recommendations/rank", dependencies=[requires(Scope.INGEST)])
async def rank(body: RankRequest, request: Request, state: State, caller: Caller) -> RankResponse:
    """Rank the candidates for the customer and log the session. The answer comes only after
    the broker acknowledged the session (503 with Retry-After otherwise: retry with the same
    `session_id` and `event_id`)."""
    pool = request.app.state.pool
    segment, source, reasons = await _segment(pool, caller.tenant_id, body.customer, state)
    stored = await learner.current_weights(pool, tenant_id=caller.tenant_id, segment=segment)
    candidates = [Candidate(c.item_id, c.scores, c.category) for c in body.candidates]
    weights = weights_for(stored["weights"] if stored else None, candidates)
    ranked = rank_candidates(
        candidates,
        weights,
        exploration_rate=body.exploration.rate if body.exploration else 0.0,
        explore_top_k=body.exploration.top_k if body.exploration else 3,
        rng=_exploration_rng(caller.tenant_id, body),
    )
    version = f"segment-weights/{segment}/v{stored['version']}" if stored else "defaults"
    session_id = body.session_id or uuid.uuid4().hex
    event_id = await _log_session(state, caller, body, session_id, segment, version, ranked)
    return RankResponse(
        session_id=session_id,
        event_id=event_id,
        segment=segment,
        segment_source=source,
        segment_reasons=reasons,
        weights=WeightsUsed(
            source="learned" if stored else "default",
            version=stored["version"] if stored else None,
            weights=weights,
            confidence=stored["confidence"] if stored else None,
            sample_size=stored["sample_size"] if stored else None,
        ),
        algorithm_version=version,
        ranked=[RankedOut(**r.__dict__) for r in ranked],
    )


async def _segment(
    pool: asyncpg.Pool, tenant_id: str, customer: Customer, state: State
) -> tuple[str, Literal["request", "profile", "stated", "default"], list[str]]:
    """The request's segment; else the profile's (when the customer has decisions); else the
    stated preferences'; else balanced."""
    if customer.segment is not None:
        return customer.segment, "request", ["given in the request"]
    assignment: SegmentAssignment | None = None
    if customer.id is not None:
        user_hash = hash_user_id(state.hmac_secret, tenant_id, customer.id)
        rows = await profiles.user_decisions(pool, tenant_id=tenant_id, user_id=user_hash)
        if rows:
            assignment = assign_segment([
                Decision(row["options"], row["chosen_item_id"], row["important_factors"],
                         row["stated_preferences"])
                for row in rows
            ])
            return assignment.segment, "profile", assignment.reasons
    if customer.stated_preferences:
        assignment = segment_from_stated(customer.stated_preferences)
        return assignment.segment, "stated", assignment.reasons
    return "balanced", "default", ["no segment, history or stated preferences"]


async def _log_session(
    state: State,
    caller: Caller,
    body: RankRequest,
    session_id: str,
    segment: str,
    version: str,
    ranked: list[RankedCandidate],
) -> uuid.UUID:
    scores = {candidate.item_id: candidate.scores for candidate in body.candidates}
    request = SessionStartedRequest(
        event_id=body.event_id,
        user_id=body.customer.id,
        session_id=session_id,
        algorithm_version=version,
        segment=segment,
        complexity=body.complexity,
        stated_preferences=body.customer.stated_preferences,
        options=[
            {
                "item_id": r.item_id,
                "rank": r.rank,
                "scores": scores[r.item_id],
                "total": r.total,
                "explanation": " + ".join(f"{k} {v:.3f}" for k, v in r.contributions.items()),
                "category": r.category,
                "propensity": r.propensity,
            }
            for r in ranked
        ],
    )
    try:
        event = prepare(SESSION_EVENT, request, tenancy_of(state, caller), state.topics)
    except RequestProblem as problem:
        raise ProblemException(422, "The session is invalid.", errors=problem.errors) from None
    await publish_events(state, [event])
    return uuid.UUID(event.event_id)
