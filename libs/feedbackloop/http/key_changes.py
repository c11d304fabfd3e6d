"""Listens for API-key changes announced by Postgres and drops the verifier's cached answers.

Migration 0010 makes every insert, update, delete or truncate of `auth.api_keys` send a
notification on `KEY_CHANNEL` carrying the key's hash. One dedicated connection per process
LISTENs; each notification invalidates that key in the `ApiKeyVerifier`'s cache, so a revocation
takes effect on the key's next request in every replica. When the connection drops, the cache TTL
bounds staleness until a new connection is listening; on (re)connecting the whole cache is
dropped, since changes made while nobody listened were never announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from feedbackloop.http.auth import ApiKeyVerifier

KEY_CHANNEL = "feedbackloop_api_keys"
LISTENER_APPLICATION_NAME = "feedbackloop-api-key-listener"

log = logging.getLogger(__name__)


class KeyChangeListener:
    """Keeps one LISTEN connection open for as long as `run()` is awaited (cancel to stop).

    `listening` is True while notifications are being received. Connection failures are never
    raised: the listener retries with backoff up to `retry_max_seconds`, and every
    `health_check_seconds` it checks a quiet connection is still alive (a half-open TCP
    connection would otherwise go unnoticed and leave the cache on its TTL silently).
    """

    def __init__(
        self,
        dsn: str,
        verifier: ApiKeyVerifier,
        *,
        retry_max_seconds: float = 5.0,
        health_check_seconds: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.verifier = verifier
        self.retry_max_seconds = retry_max_seconds
        self.health_check_seconds = health_check_seconds
        self.listening = False

    async def run(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._listen_once()
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any failure: fall back to the TTL and reconnect
                log.warning("API key change listener disconnected (%s); retrying", error)
            self.listening = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_seconds)

    async def _listen_once(self) -> None:
        connection = await asyncpg.connect(
            self.dsn, server_settings={"application_name": LISTENER_APPLICATION_NAME}
        )
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        try:
            await connection.add_listener(KEY_CHANNEL, self._on_notification)
            # Changes made while no listener was connected were announced to nobody.
            self.verifier.invalidate(None)
            self.listening = True
            while not connection.is_closed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), timeout=self.health_check_seconds)
                if lost.is_set():
                    break
                await connection.fetchval("SELECT 1", timeout=self.health_check_seconds)
        finally:
            self.listening = False
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self.verifier.invalidate(payload or None)
