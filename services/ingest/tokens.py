"""`POST /v1/feedback/tokens`: a product's backend mints a token a page may send feedback with,
on one response, for a while (see `feedbackloop.http.tokens`)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from feedbackloop.contract.envelope import Identifier
from feedbackloop.contract.requests import RawUserId
from feedbackloop.http.auth import Scope
from feedbackloop.http.problems import ProblemException
from feedbackloop.identity import hash_user_id
from services.ingest.deps import Caller, State, requires

router = APIRouter(prefix="/v1", tags=["ingest"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response_id: Identifier
    user_id: RawUserId | None = Field(
        default=None,
        description="The user the page speaks for: feedback sent with the token is that user's "
        "(a body's other user_id is refused). Without it, the token's feedback names any user.",
    )
    ttl_seconds: int | None = Field(
        default=None,
        ge=10,
        description="Lifetime in seconds; the server's default when absent, at most its maximum.",
    )


class FeedbackToken(BaseModel):
    token: str
    response_id: str
    expires_at: datetime


@router.post("/feedback/tokens", status_code=201, dependencies=[requires(Scope.INGEST)])
async def mint_feedback_token(body: TokenRequest, state: State, caller: Caller) -> FeedbackToken:
    """A signed token for feedback on `response_id` only, until it expires, and as `user_id`
    only when one is given. Put it in the page (e.g. `data-feedbackloop-token`) instead of a key
    that works on any response and any user."""
    ttl = body.ttl_seconds or state.token_ttl_seconds
    if ttl > state.token_max_ttl_seconds:
        raise ProblemException(
            422,
            "The token request is invalid.",
            errors=[{"loc": ["ttl_seconds"], "type": "less_than_equal",
                     "msg": f"at most {state.token_max_ttl_seconds} seconds"}],
        )
    user_hash = (
        hash_user_id(state.hmac_secret, caller.tenant_id, body.user_id)
        if body.user_id is not None
        else None
    )
    token, expires_at = state.tokens.mint(caller.tenant_id, body.response_id, ttl, user_hash=user_hash)
    return FeedbackToken(
        token=token, response_id=body.response_id, expires_at=datetime.fromtimestamp(expires_at, UTC)
    )
