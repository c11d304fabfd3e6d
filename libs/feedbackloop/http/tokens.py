"""Signed feedback tokens: what a web page holds instead of a key that works on any response.

A product's backend mints a token per AI response it shows (with an `ingest` key); the token
names the tenant, the response, an expiry and, when the backend names one, the user, signed with
HMAC-SHA256 under a server secret. Ingest verifies it without a lookup: a page can send feedback
on that response only, until the expiry, and only as that user when one is bound. Format:
`fbt1.<base64url JSON {"t": tenant, "r": response, "e": unix expiry, "u": user hash}>.<base64url
signature>` ("u" only when bound: the user id's tenant-keyed HMAC, never the id itself); the
signature covers everything before its dot.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

TOKEN_PREFIX = "fbt1."


class InvalidFeedbackToken(Exception):
    """A token that is malformed, not signed with this secret, or expired; `str()` says which."""


@dataclass(frozen=True)
class FeedbackGrant:
    """What a valid token allows: feedback on one response of one tenant, until `expires_at`,
    as the user whose id hashes to `user_hash` when one is bound."""

    tenant_id: str
    response_id: str
    expires_at: int
    user_hash: str | None = None


def derived_token_secret(user_id_hmac_secret: bytes) -> bytes:
    """The token key when none is configured: derived from the user-id HMAC secret under a label
    of its own, so neither key reveals the other and tokens work wherever ingest runs."""
    return hmac.new(user_id_hmac_secret, b"feedbackloop feedback tokens v1", hashlib.sha256).digest()


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FeedbackTokenSigner:
    """Mints and verifies tokens. Pure: the clock is injectable, nothing is stored."""

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("a feedback token secret is required")
        self._secret = secret
        self._clock = clock

    def _signature(self, signed: str) -> str:
        return _encode(hmac.new(self._secret, signed.encode(), hashlib.sha256).digest())

    def mint(
        self, tenant_id: str, response_id: str, ttl_seconds: int, *, user_hash: str | None = None
    ) -> tuple[str, int]:
        """A token for the response (for one user's hash when given), and its expiry (unix
        seconds)."""
        expires_at = int(self._clock()) + ttl_seconds
        document: dict[str, object] = {"t": tenant_id, "r": response_id, "e": expires_at}
        if user_hash is not None:
            document["u"] = user_hash
        claims = orjson.dumps(document)
        signed = TOKEN_PREFIX + _encode(claims)
        return f"{signed}.{self._signature(signed)}", expires_at

    def verify(self, token: str) -> FeedbackGrant:
        """The grant of a valid token. Raises `InvalidFeedbackToken`."""
        signed, dot, signature = token.rpartition(".")
        if not dot or not signed.startswith(TOKEN_PREFIX):
            raise InvalidFeedbackToken("malformed feedback token")
        if not hmac.compare_digest(signature, self._signature(signed)):
            raise InvalidFeedbackToken("feedback token signature does not match")
        try:
            claims = orjson.loads(_decode(signed[len(TOKEN_PREFIX):]))
            user = claims.get("u")
            grant = FeedbackGrant(str(claims["t"]), str(claims["r"]), int(claims["e"]),
                                  None if user is None else str(user))
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidFeedbackToken("malformed feedback token") from error
        if grant.expires_at <= self._clock():
            raise InvalidFeedbackToken(f"feedback token expired at {grant.expires_at} (unix time)")
        return grant
