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
    """Keeps one LISTEN connection open, one health check at a time (`run_once`), or for as
    long as `run()` is awaited (cancel to stop); `close()` drops the connection.

    `listening` is True while notifications are being received. `run_once` connects when not
    listening, then waits up to `health_check_seconds` for the connection to drop and checks a
    quiet connection is still alive (a half-open TCP connection would otherwise go unnoticed and
    leave the cache on its TTL silently). It raises when connecting or the check fails, and
    returns when the check passed or the connection was lost (`listening` False: the next run
    reconnects): as a `Job` (interval 0.2 s, `retry_max_seconds`) its health is the listener's.
    `run()` repeats it and never raises: it retries with backoff up to `retry_max_seconds`.
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
        self._connection: asyncpg.Connection | None = None
        self._lost = asyncio.Event()

    async def run(self) -> None:
        delay = 0.2
        try:
            while True:
                try:
                    await self.run_once()
                    delay = 0.2
                    if self.listening:
                        continue
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # any failure: fall back to the TTL and reconnect
                    log.warning("API key change listener disconnected (%s); retrying", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
        finally:
            await self.close()

    async def run_once(self) -> int:
        """One health check of the listening connection (connecting first when there is none);
        0 always: what it does is keep the cache honest, not a count of work."""
        if self._connection is None:
            await self._connect()
        connection = self._connection
        assert connection is not None
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=self.health_check_seconds)
            if not self._lost.is_set() and not connection.is_closed():
                await connection.fetchval("SELECT 1", timeout=self.health_check_seconds)
                return 0
        except BaseException:
            await self.close()
            raise
        await self.close()
        return 0

    async def close(self) -> None:
        self.listening = False
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    async def _connect(self) -> None:
        connection = await asyncpg.connect(
            self.dsn, server_settings={"application_name": LISTENER_APPLICATION_NAME}
        )
        lost = self._lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        self._connection = connection
        try:
            await connection.add_listener(KEY_CHANNEL, self._on_notification)
        except BaseException:
            await self.close()
            raise
        # Changes made while no listener was connected were announced to nobody.
        self.verifier.invalidate(None)
        self.listening = True

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self.verifier.invalidate(payload or None)
