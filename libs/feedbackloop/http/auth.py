"""API-key authentication: the key names the tenant and its scopes; only hashes are stored."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from feedbackloop.http.problems import ProblemException
from feedbackloop.identity import hash_api_key


class Scope(StrEnum):
    INGEST = "ingest"
    FEEDBACK = "feedback"  # browser-safe: feedback events only
    READ = "read"
    ADMIN = "admin"


ALL_SCOPES = tuple(Scope)


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant_id: str
    scopes: frozenset[str]

    def require(self, *any_of: Scope) -> None:
        if not self.scopes.intersection(any_of):
            raise ProblemException(
                403, f"this API key lacks the scope needed here ({' or '.join(any_of)})"
            )


class ApiKeyVerifier:
    """Looks keys up by hash, caching each answer for `cache_seconds` (0 disables the cache:
    a revoked key then fails on its very next request)."""

    def __init__(self, pool: asyncpg.Pool, *, cache_seconds: float) -> None:
        self.pool = pool
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise ProblemException(
                401, "missing API key", headers={"WWW-Authenticate": 'Bearer realm="feedbackloop"'}
            )
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ProblemException(
                401,
                "expected 'Authorization: Bearer <API key>'",
                headers={"WWW-Authenticate": 'Bearer realm="feedbackloop"'},
            )
        principal = await self._lookup(hash_api_key(key.strip()))
        if principal is None:
            raise ProblemException(
                401,
                "unknown or revoked API key",
                headers={"WWW-Authenticate": 'Bearer realm="feedbackloop", error="invalid_token"'},
            )
        return principal

    async def _lookup(self, key_hash: str) -> Principal | None:
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = await find_active_key(self.pool, key_hash=key_hash)
        principal = (
            Principal(str(row["key_id"]), row["tenant_id"], frozenset(row["scopes"]))
            if row is not None
            else None
        )
        if self.cache_seconds > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_hash] = (now + self.cache_seconds, principal)
        return principal


async def find_active_key(pool: asyncpg.Pool, *, key_hash: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT key_id, tenant_id, scopes FROM auth.api_keys "
        "WHERE key_hash = $1 AND revoked_at IS NULL",
        key_hash,
    )
