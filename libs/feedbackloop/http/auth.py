"""API-key authentication: the key names the tenant and its scopes; only hashes are stored."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from feedbackloop.http.problems import ProblemException
from feedbackloop.http.ratelimit import TokenBucketLimiter, retry_after_header
from feedbackloop.http.tokens import TOKEN_PREFIX, FeedbackTokenSigner, InvalidFeedbackToken
from feedbackloop.identity import hash_api_key
from feedbackloop.postgres import is_transient

# How long a client should wait before retrying when keys cannot be checked (PostgreSQL down).
KEY_CHECK_RETRY_AFTER_SECONDS = 2


class Scope(StrEnum):
    INGEST = "ingest"
    FEEDBACK = "feedback"  # browser-safe: feedback events only
    READ = "read"
    REVIEW = "review"  # the review console's actions: labels, reviewed, assigned, corrections
    ADMIN = "admin"


ALL_SCOPES = tuple(Scope)


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key, or a signed feedback token limited to one `response_id`."""

    key_id: str
    tenant_id: str
    scopes: frozenset[str]
    response_id: str | None = None
    name: str | None = None  # the API key's name, for attributing reviews
    user_hash: str | None = None  # a feedback token bound to one user: that user's id HMAC

    def require(self, *any_of: Scope) -> None:
        if not self.scopes.intersection(any_of):
            raise ProblemException(
                403, f"this API key lacks the scope needed here ({' or '.join(any_of)})"
            )

    def require_response(self, response_id: str) -> None:
        """403 when a feedback token for another response is used on `response_id`."""
        if self.response_id is not None and self.response_id != response_id:
            raise ProblemException(
                403,
                f"this feedback token is for response {self.response_id!r}; it cannot send "
                f"feedback on response {response_id!r}",
            )


class ApiKeyVerifier:
    """Looks keys up by hash, caching each answer for `cache_seconds` (0 disables the cache).

    A cached answer is dropped as soon as `invalidate` is called for its key, which the key-change
    listener (`feedbackloop.http.key_changes`) does when Postgres announces a change: a revoked
    key then fails on its very next request whatever the TTL. While no listener is connected the
    TTL is the bound on how long a revoked key keeps working.

    With a `limiter`, each verified request also takes a token of its key's bucket; an empty
    bucket answers 429 with `Retry-After` (limits are per process, see `ratelimit`).

    With `tokens`, a bearer credential starting `fbt1.` is a signed feedback token, verified
    without a lookup: its principal has the `feedback` scope on one response only, and all of a
    tenant's tokens share one rate-limit bucket.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        cache_seconds: float,
        limiter: TokenBucketLimiter | None = None,
        tokens: FeedbackTokenSigner | None = None,
    ) -> None:
        self.pool = pool
        self.cache_seconds = cache_seconds
        self.limiter = limiter
        self.tokens = tokens
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        # Bumped by every invalidation: a lookup that raced one must not cache what it read.
        self._generation = 0

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
        key = key.strip()
        principal = (
            self._token_principal(key)
            if key.startswith(TOKEN_PREFIX)
            else await self._lookup(hash_api_key(key))
        )
        if principal is None:
            raise ProblemException(
                401,
                "unknown or revoked API key",
                headers={"WWW-Authenticate": 'Bearer realm="feedbackloop", error="invalid_token"'},
            )
        if self.limiter is not None:
            wait = self.limiter.acquire(principal.key_id)
            if wait > 0:
                raise ProblemException(
                    429,
                    f"this API key is over its rate limit of {self.limiter.rate_per_second:g} "
                    f"requests per second (burst {self.limiter.burst:g}); retry later",
                    headers={"Retry-After": retry_after_header(wait)},
                )
        return principal

    def _token_principal(self, token: str) -> Principal:
        refused = {"WWW-Authenticate": 'Bearer realm="feedbackloop", error="invalid_token"'}
        if self.tokens is None:
            raise ProblemException(401, "feedback tokens are not accepted here", headers=refused)
        try:
            grant = self.tokens.verify(token)
        except InvalidFeedbackToken as error:
            raise ProblemException(401, str(error), headers=refused) from None
        return Principal(
            f"feedback-token:{grant.tenant_id}",
            grant.tenant_id,
            frozenset({Scope.FEEDBACK.value}),
            response_id=grant.response_id,
            user_hash=grant.user_hash,
        )

    def invalidate(self, key_hash: str | None = None) -> None:
        """Forget the cached answer for `key_hash`, or every cached answer when None."""
        self._generation += 1
        if key_hash is None:
            self._cache.clear()
        else:
            self._cache.pop(key_hash, None)

    async def _lookup(self, key_hash: str) -> Principal | None:
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        generation = self._generation
        try:
            row = await find_active_key(self.pool, key_hash=key_hash)
        except Exception as error:
            if not is_transient(error):
                raise
            # Not the client's fault and not lasting: 503 + Retry-After, like a broker outage.
            raise ProblemException(
                503,
                "API keys cannot be checked right now; retry with the same event ids",
                headers={"Retry-After": str(KEY_CHECK_RETRY_AFTER_SECONDS)},
            ) from None
        principal = (
            Principal(
                str(row["key_id"]), row["tenant_id"], frozenset(row["scopes"]), name=row["name"]
            )
            if row is not None
            else None
        )
        if self.cache_seconds > 0 and generation == self._generation:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_hash] = (now + self.cache_seconds, principal)
        return principal


async def find_active_key(pool: asyncpg.Pool, *, key_hash: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT key_id, tenant_id, scopes, name FROM auth.api_keys "
        "WHERE key_hash = $1 AND revoked_at IS NULL",
        key_hash,
    )
