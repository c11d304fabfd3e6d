"""A Python client for backends that send events to feedbackloop's ingest API.

Events are buffered and sent in batches (`POST /v1/events`). Every event gets its `event_id`
when it is queued, so a retried batch carries the same ids and is counted once downstream.
Retries: connection errors, 5xx (503 included) and 429 are retried with exponential backoff
(honouring `Retry-After`) up to `max_retries`; other 4xx answers are the caller's error and
raise `FeedbackError` at once. Invalid events inside an accepted batch are reported to
`on_invalid` (by default, logged) and never retried.

Use `AsyncFeedbackClient` in asyncio code (`async with`, or `await close()`), and
`FeedbackClient` elsewhere (flushes on `close()`, on `with` exit, and at interpreter exit).

`assign(experiment, user_id=... | session_id=...)` asks for a unit's variant
(`POST /v1/experiments/{name}/assign`) at once, not batched, retried like a batch; it returns
the answer (`variant`, `in_experiment`, `exposure_event_id`).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import httpx
import orjson

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class FeedbackError(Exception):
    """The API refused a batch for a reason retrying cannot fix (401, 403, 413, 422...)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"feedbackloop answered {status}: {body}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 8
    base_seconds: float = 0.2
    max_seconds: float = 10.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(float(retry_after), self.max_seconds)
            except ValueError:
                pass
        backoff = min(self.base_seconds * 2**attempt, self.max_seconds)
        return float(backoff * (0.5 + random.random() / 2))  # jitter: clients do not retry in step


def _log_invalid(results: list[dict[str, Any]]) -> None:
    for item in results:
        logger.warning("feedbackloop rejected event %s: %s", item.get("index"), item.get("errors"))


def _event(event_type: str, fields: dict[str, Any]) -> dict[str, Any]:
    event = {"type": event_type, **fields}
    event.setdefault("event_id", str(uuid4()))
    return event


def _outcome(response: httpx.Response) -> list[dict[str, Any]] | None:
    """Invalid items of an accepted batch; None when the batch must be retried."""
    if response.status_code == 202:
        results = response.json()["results"]
        return [item for item in results if item["status"] != "accepted"]
    if response.status_code in RETRYABLE_STATUS:
        return None
    body = _error_body(response)
    if response.status_code == 422 and isinstance(body, dict) and "errors" in body:
        return [{"index": e.get("index"), "status": "invalid", "errors": [e]}
                for e in body["errors"]]
    raise FeedbackError(response.status_code, body)


def _assignment(response: httpx.Response) -> dict[str, Any] | None:
    """The answer of an assignment; None when it must be retried; `FeedbackError` otherwise."""
    if response.status_code == 200:
        answer: dict[str, Any] = response.json()
        return answer
    if response.status_code in RETRYABLE_STATUS:
        return None
    body = _error_body(response)
    raise FeedbackError(response.status_code, body)


def _error_body(response: httpx.Response) -> Any:
    """A refusal's body, for `FeedbackError`: the problem document, or the text."""
    if response.headers.get("content-type", "").endswith("json"):
        return response.json()
    return response.text


def _assign_path(experiment: str) -> str:
    return f"/v1/experiments/{quote(experiment, safe='')}/assign"


def _assign_body(user_id: str | None, session_id: str | None, log_exposure: bool) -> bytes:
    body: dict[str, Any] = {"log_exposure": log_exposure}
    if user_id is not None:
        body["user_id"] = user_id
    if session_id is not None:
        body["session_id"] = session_id
    return orjson.dumps(body)


class _Attempts:
    """What to do after each attempt at one batch, shared by both clients: `after()` returns
    None when the batch is done (invalid items reported), or the seconds to wait before the
    next attempt; it raises `FeedbackError` when retrying cannot help or attempts run out."""

    def __init__(self, retry: RetryPolicy, on_invalid: Callable[[list[dict[str, Any]]], None]):
        self.retry = retry
        self.on_invalid = on_invalid
        self.attempt = 0

    def after(self, response: httpx.Response | None, error: Exception | None) -> float | None:
        retry_after = None
        if response is not None:
            invalid = _outcome(response)
            if invalid is not None:
                if invalid:
                    self.on_invalid(invalid)
                return None
            retry_after = response.headers.get("Retry-After")
            reason = f"status {response.status_code}"
        else:
            reason = f"{type(error).__name__}: {error}"
        if self.attempt >= self.retry.max_retries:
            raise FeedbackError(0, f"gave up after {self.attempt + 1} attempts ({reason})")
        delay = self.retry.delay(self.attempt, retry_after)
        self.attempt += 1
        return delay


class AsyncFeedbackClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        on_invalid: Callable[[list[dict[str, Any]]], None] = _log_invalid,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            timeout=timeout,
            transport=transport,
        )
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry = retry or RetryPolicy()
        self.on_invalid = on_invalid
        self._buffer: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncFeedbackClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, event_type: str, **fields: Any) -> str:
        """Queue one event; returns its event_id. Sends when the batch is full."""
        event = _event(event_type, fields)
        self._buffer.append(event)
        if self._ticker is None and self.flush_interval > 0:
            self._ticker = asyncio.create_task(self._tick())
        if len(self._buffer) >= self.batch_size:
            await self.flush()
        return str(event["event_id"])

    async def log_response(self, **fields: Any) -> str:
        return await self.send("response.logged", **fields)

    async def submit_feedback(self, **fields: Any) -> str:
        return await self.send("feedback.submitted", **fields)

    async def retract_feedback(self, **fields: Any) -> str:
        """Take back a person's signal: `response_id`, `kind`, and `user_id` or `feedback_key`."""
        return await self.send("feedback.retracted", **fields)

    async def assign(self, experiment: str, *, user_id: str | None = None,
                     session_id: str | None = None, log_exposure: bool = True) -> dict[str, Any]:
        """The unit's variant in `experiment` (see the module docstring)."""
        body = _assign_body(user_id, session_id, log_exposure)
        attempt = 0
        while True:
            retry_after = None
            try:
                response = await self._http.post(_assign_path(experiment),
                                                 content=body)
                answer = _assignment(response)
                if answer is not None:
                    return answer
                retry_after = response.headers.get("Retry-After")
            except httpx.TransportError:
                pass
            if attempt >= self.retry.max_retries:
                raise FeedbackError(0, f"gave up assigning after {attempt + 1} attempts")
            await asyncio.sleep(self.retry.delay(attempt, retry_after))
            attempt += 1

    async def flush(self) -> None:
        """Send everything queued; returns once the broker acknowledged it (or raises)."""
        async with self._lock:
            while self._buffer:
                batch = self._buffer[: self.batch_size]
                await self._send_batch(batch)
                del self._buffer[: len(batch)]

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        try:
            await self.flush()
        finally:
            await self._http.aclose()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:
                logger.exception("feedbackloop: background flush failed; events stay queued")

    async def _send_batch(self, batch: list[dict[str, Any]]) -> None:
        body = orjson.dumps({"events": batch})
        attempts = _Attempts(self.retry, self.on_invalid)
        while True:
            try:
                delay = attempts.after(await self._http.post("/v1/events", content=body), None)
            except httpx.TransportError as error:
                delay = attempts.after(None, error)
            if delay is None:
                return
            await asyncio.sleep(delay)


class FeedbackClient:
    """The blocking client: one batch at a time, flushed when full, on `flush()`/`close()`,
    and at interpreter exit."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        batch_size: int = 500,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        on_invalid: Callable[[list[dict[str, Any]]], None] = _log_invalid,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            timeout=timeout,
            transport=transport,
        )
        self.batch_size = batch_size
        self.retry = retry or RetryPolicy()
        self.on_invalid = on_invalid
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    def __enter__(self) -> FeedbackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, event_type: str, **fields: Any) -> str:
        event = _event(event_type, fields)
        with self._lock:
            self._buffer.append(event)
            full = len(self._buffer) >= self.batch_size
        if full:
            self.flush()
        return str(event["event_id"])

    def log_response(self, **fields: Any) -> str:
        return self.send("response.logged", **fields)

    def submit_feedback(self, **fields: Any) -> str:
        return self.send("feedback.submitted", **fields)

    def retract_feedback(self, **fields: Any) -> str:
        """Take back a person's signal: `response_id`, `kind`, and `user_id` or `feedback_key`."""
        return self.send("feedback.retracted", **fields)

    def assign(self, experiment: str, *, user_id: str | None = None,
               session_id: str | None = None, log_exposure: bool = True) -> dict[str, Any]:
        """The unit's variant in `experiment` (see the module docstring)."""
        body = _assign_body(user_id, session_id, log_exposure)
        attempt = 0
        while True:
            retry_after = None
            try:
                response = self._http.post(_assign_path(experiment), content=body)
                answer = _assignment(response)
                if answer is not None:
                    return answer
                retry_after = response.headers.get("Retry-After")
            except httpx.TransportError:
                pass
            if attempt >= self.retry.max_retries:
                raise FeedbackError(0, f"gave up assigning after {attempt + 1} attempts")
            time.sleep(self.retry.delay(attempt, retry_after))
            attempt += 1

    def flush(self) -> None:
        with self._lock:
            while self._buffer:
                batch = self._buffer[: self.batch_size]
                self._send_batch(batch)
                del self._buffer[: len(batch)]

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._http.close()
            atexit.unregister(self.close)

    def _send_batch(self, batch: list[dict[str, Any]]) -> None:
        body = orjson.dumps({"events": batch})
        attempts = _Attempts(self.retry, self.on_invalid)
        while True:
            try:
                delay = attempts.after(self._http.post("/v1/events", content=body), None)
            except httpx.TransportError as error:
                delay = attempts.after(None, error)
            if delay is None:
                return
            time.sleep(delay)
