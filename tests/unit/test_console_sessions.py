"""Console sessions: opaque ids, only their hashes stored, forgotten on sign-out and when idle."""

from __future__ import annotations

import time

from services.query.console.sessions import ConsoleSession, SessionStore


def _session() -> ConsoleSession:
    return ConsoleSession(api_key="secret-key", tenant_id="acme", key_id="k1", name="alice",
                          scopes=frozenset({"read"}))


def test_a_session_is_found_by_its_id_and_the_store_never_holds_the_id() -> None:
    store = SessionStore(idle_seconds=60)
    session_id = store.open(_session())
    assert store.get(session_id) is not None
    assert session_id not in store._sessions  # only a SHA-256 of it
    assert "secret-key" not in session_id
    assert store.get("forged") is None and store.get(None) is None


def test_sign_out_and_idleness_forget_the_session() -> None:
    store = SessionStore(idle_seconds=60)
    session_id = store.open(_session())
    store.close(session_id)
    assert store.get(session_id) is None
    idle = SessionStore(idle_seconds=60)
    other = idle.open(_session())
    next(iter(idle._sessions.values())).last_used = time.monotonic() - 61
    assert idle.get(other) is None and len(idle) == 0


def test_csrf_token_must_match() -> None:
    session = _session()
    assert session.csrf_matches(session.csrf_token)
    assert not session.csrf_matches(None) and not session.csrf_matches("x")
