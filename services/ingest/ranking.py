"""`POST /v1/recommendations/rank`: rank candidates with the customer's segment weights, and
log what was shown as `recommendation.session_started`, so the choice that follows teaches the
learner and the next ranking uses what it learned.

The ranking maths is `services.learner.ranking` (pure); the segment rules are
`services.profiles.segments`; the weights are the customer's own (`learner.customer_weights`,
shrunk toward the segment) when the learner fitted them with at least
`FEEDBACKLOOP_LEARNER_CUSTOMER_MIN_CONFIDENCE`, else the learner's newest promoted version
for the segment (`learner.weights_versions`), or equal weights while the segment has none (a
version exists only once the segment reached the learner's minimum number of choices).

A ranker experiment (`"experiment": name`, an experiment of `kind: ranker` randomized by
session) assigns the session a variant, ranks with that variant's weights (learned, the
defaults, or a candidate version) and tags the logged session with the experiment and
variant, its exposure published with it; see `services.ingest.experiments`.

Exploration is off unless asked for: `{"policy": "shuffle", "rate": r, "top_k": k}` shuffles
the top k with probability r; `{"policy": "thompson"}` orders by one draw from the weights'
posterior. Either way each option's logged propensity is the probability of its placement.
"""

from __future__ import annotations

import random
import uuid
import zlib
from typing import Annotated, Any, Literal

import asyncpg
import numpy as np
from fastapi import APIRouter, Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from feedbackloop.contract.envelope import Identifier, Label
from feedbackloop.contract.recommendations import Segment
from feedbackloop.contract.requests import SessionStartedRequest
from feedbackloop.experiments.definition import NAME
from feedbackloop.http.auth import Scope
from feedbackloop.http.problems import ProblemException
from feedbackloop.identity import hash_user_id
from services.ingest.deps import Caller, State, requires, tenancy_of
from services.ingest.experiments import RankerArmChosen, definitions, ranker_arm
from services.ingest.handlers import publish_events
from services.ingest.processing import RequestProblem, prepare
from services.learner import reads as learner
from services.learner.ranking import (
    Candidate,
    RankedCandidate,
    rank_candidates,
    thompson_rank,
    weights_for,
)
from services.profiles import reads as profiles
from services.profiles.segments import (
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
    policy: Literal["shuffle", "thompson"] = Field(
        default="shuffle",
        description="`shuffle`: shuffle the top k with chance `rate`; `thompson`: order by "
        "one draw from the learned weights' posterior (the defaults' order until learned).",
    )
    rate: float = Field(default=0.0, ge=0.0, le=0.5, description="Chance of shuffling the top k.")
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
    experiment: Annotated[str, Field(pattern=NAME)] | None = Field(
        default=None, description="A running ranker experiment: the session is assigned a "
        "variant, ranked with its weights and logged with the experiment and variant.")

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
    source: Literal["learned", "customer", "default"]
    version: int | None
    kind: Literal["full", "incremental"] | None = Field(
        default=None, description="Of a learned version: a full refit or an incremental update "
        "(absent with the defaults).")
    weights: dict[str, float]
    confidence: float | None
    sample_size: int | None

    @model_serializer(mode="wrap")
    def _without_kind_for_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        # The defaults have no version, so no kind: the answer stays as it was for them.
        data = handler(self)
        if isinstance(data, dict) and data.get("kind") is None:
            data.pop("kind", None)
        return data


class RankResponse(BaseModel):
    session_id: str
    event_id: uuid.UUID
    segment: str
    segment_source: Literal["request", "profile", "stated", "default"]
    segment_reasons: list[str]
    weights: WeightsUsed
    algorithm_version: str
    ranked: list[RankedOut]
    experiment: str | None = None
    variant: str | None = None


def _exploration_rng(tenant_id: str, body: RankRequest) -> random.Random:
    """A retry with the same session and event ids shuffles the same way, so the options the
    customer sees are the ones logged even when the first attempt's log did land."""
    if body.session_id and body.event_id:
        return random.Random(f"{tenant_id}:{body.session_id}:{body.event_id}")
    return random.Random()


def _thompson_rng(tenant_id: str, body: RankRequest) -> np.random.Generator:
    """Seeded like `_exploration_rng`, so a retry draws the same order."""
    if body.session_id and body.event_id:
        return np.random.default_rng(
            zlib.crc32(f"{tenant_id}:{body.session_id}:{body.event_id}".encode()))
    return np.random.default_rng()


def _order(body: RankRequest, tenant_id: str, candidates: list[Candidate],
           weights: dict[str, float], stored: Any) -> list[RankedCandidate]:
    exploration = body.exploration
    if (exploration is not None and exploration.policy == "thompson" and stored is not None
            and stored["coefficients"] and stored["covariance"]):
        return thompson_rank(candidates, weights, stored["coefficients"], stored["covariance"],
                             rng=_thompson_rng(tenant_id, body))
    shuffling = exploration is not None and exploration.policy == "shuffle"
    return rank_candidates(
        candidates,
        weights,
        exploration_rate=exploration.rate if exploration and shuffling else 0.0,
        explore_top_k=exploration.top_k if exploration else 3,
        rng=_exploration_rng(tenant_id, body),
    )


@router.post("/recommendations/rank", dependencies=[requires(Scope.INGEST)])
async def rank(body: RankRequest, request: Request, state: State, caller: Caller) -> RankResponse:
    """Rank the candidates for the customer and log the session. The answer comes only after
    the broker acknowledged the session (503 with Retry-After otherwise: retry with the same
    `session_id` and `event_id`)."""
    pool = request.app.state.pool
    session_id = body.session_id or uuid.uuid4().hex
    arm = await ranker_arm(state, caller, definitions(request), body.experiment, session_id)
    segment, source, reasons = await _segment(pool, caller.tenant_id, body.customer, state)
    stored = await learner.current_weights(pool, tenant_id=caller.tenant_id, segment=segment)
    own = await _customer_weights(pool, caller.tenant_id, body.customer, segment, state)
    if arm is not None and arm.policy != "learned":
        own = None
        stored = None if arm.policy == "defaults" else (await learner.weights_version(
            pool, tenant_id=caller.tenant_id, segment=segment, version=arm.weights_version,
        ) or stored)
    candidates = [Candidate(c.item_id, c.scores, c.category) for c in body.candidates]
    chosen_weights = own if own is not None else stored
    weights = weights_for(chosen_weights["weights"] if chosen_weights else None, candidates)
    ranked = _order(body, caller.tenant_id, candidates, weights, chosen_weights)
    if own is not None:
        version = f"customer-weights/{segment}/v{own['segment_version']}"
    else:
        version = f"segment-weights/{segment}/v{stored['version']}" if stored else "defaults"
    event_id = await _log_session(state, caller, body, session_id, segment, version, ranked,
                                  arm)
    return RankResponse(
        session_id=session_id,
        event_id=event_id,
        segment=segment,
        segment_source=source,
        segment_reasons=reasons,
        weights=_weights_used(weights, stored, own),
        algorithm_version=version,
        ranked=[RankedOut(**r.__dict__) for r in ranked],
        experiment=arm.experiment if arm is not None else None,
        variant=arm.variant if arm is not None else None,
    )


def _weights_used(weights: dict[str, float], stored: Any, own: Any) -> WeightsUsed:
    if own is not None:
        return WeightsUsed(source="customer", version=own["segment_version"], kind="full",
                           weights=weights, confidence=own["confidence"],
                           sample_size=own["sample_size"])
    if stored is None:
        return WeightsUsed(source="default", version=None, weights=weights, confidence=None,
                           sample_size=None)
    return WeightsUsed(source="learned", version=stored["version"], kind=stored["kind"],
                       weights=weights, confidence=stored["confidence"],
                       sample_size=stored["sample_size"])


async def _customer_weights(
    pool: asyncpg.Pool, tenant_id: str, customer: Customer, segment: str, state: State
) -> asyncpg.Record | None:
    """The customer's own weights when fitted for this segment with enough confidence."""
    if customer.id is None:
        return None
    user_hash = hash_user_id(state.hmac_secret, tenant_id, customer.id)
    own = await learner.customer_weights(pool, tenant_id=tenant_id, user_id=user_hash)
    if own is None or own["segment"] != segment:
        return None
    return own if own["confidence"] >= state.customer_min_confidence else None


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
        decisions = await profiles.decisions(pool, tenant_id=tenant_id, user_id=user_hash)
        if decisions:
            assignment = assign_segment(decisions)
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
    arm: RankerArmChosen | None = None,
) -> uuid.UUID:
    scores = {candidate.item_id: candidate.scores for candidate in body.candidates}
    tagged = arm is not None and arm.in_experiment
    request = SessionStartedRequest(
        event_id=body.event_id,
        user_id=body.customer.id,
        session_id=session_id,
        experiment=arm.experiment if tagged and arm else None,
        variant=arm.variant if tagged and arm else None,
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
    # The exposure goes with the session, in one acknowledged publish.
    exposure = arm.exposure if arm is not None and arm.exposure is not None else None
    await publish_events(state, [event] if exposure is None else [event, exposure])
    return uuid.UUID(event.event_id)
