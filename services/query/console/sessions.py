"""Console sign-in: server-side sessions named by an opaque cookie. Pure (no I/O).

A person signs in with an API key. The key is kept in this process's memory only, with the
session, because the console acts as that key (it reads the query API and publishes through
ingest with it); the browser holds a random session id in an HttpOnly, SameSite=Strict cookie
(Secure over https), never the key. The store keeps only a SHA-256 of each session id, so a
dump of it names no usable cookie. Sign-out forgets the session; so does `idle_seconds`
without a request. Every session has a CSRF token that each form posts back.

Sessions live in one process: behind several query replicas, route a browser to one replica
(sticky sessions) or sign in again after a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "fbl_console"
MAX_SESSIONS = 10_000


@dataclass
class ConsoleSession:
    api_key: str
    tenant_id: str
    key_id: str
    name: str | None
    scopes: frozenset[str]
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    last_used: float = field(default_factory=time.monotonic)

    def csrf_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf_token)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    def __init__(self, *, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self._sessions: dict[str, ConsoleSession] = {}

    def open(self, session: ConsoleSession) -> str:
        """Store `session`; returns the id for the cookie (never stored itself)."""
        self._expire()
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda d: self._sessions[d].last_used)
            del self._sessions[oldest]
        session_id = secrets.token_urlsafe(32)
        self._sessions[_digest(session_id)] = session
        return session_id

    def get(self, session_id: str | None) -> ConsoleSession | None:
        if not session_id:
            return None
        digest = _digest(session_id)
        session = self._sessions.get(digest)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_used > self.idle_seconds:
            del self._sessions[digest]
            return None
        session.last_used = now
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(_digest(session_id), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        now = time.monotonic()
        for digest in [d for d, s in self._sessions.items()
                       if now - s.last_used > self.idle_seconds]:
            del self._sessions[digest]
