"""Dependencies of the query routes, as `Annotated` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Request

from feedbackloop.http.auth import ApiKeyVerifier, Principal, Scope


@dataclass(frozen=True)
class QueryState:
    pool: asyncpg.Pool
    verifier: ApiKeyVerifier
    hmac_secret: bytes


def _state(request: Request) -> QueryState:
    state: QueryState = request.app.state.query
    return state


async def _reader(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    principal = await _state(request).verifier.verify(authorization)
    principal.require(Scope.READ, Scope.ADMIN)
    return principal


async def _admin(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    principal = await _state(request).verifier.verify(authorization)
    principal.require(Scope.ADMIN)
    return principal


async def _state_dependency(request: Request) -> QueryState:
    # A coroutine: FastAPI runs a plain function dependency in its thread pool, a thread hop
    # per request that cost more CPU than the rest of a small request's dependencies.
    return _state(request)


State = Annotated[QueryState, Depends(_state_dependency)]
Reader = Annotated[Principal, Depends(_reader)]
Admin = Annotated[Principal, Depends(_admin)]
