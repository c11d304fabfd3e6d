"""Every refusal of an event route counted by outcome, once, wherever it was decided.

A handler counts what it decides itself (an invalid item of a batch, a broker that did not
acknowledge). A request refused before its handler ran (a missing or under-scoped key, a body
over the limit, fields the contract does not define, a body that fails validation, a rate limit)
never reached that code; this middleware counts it from the response status instead. A request
whose handler counted anything is not counted again.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from feedbackloop.observability import IngestMetrics

_OUTCOME_OF_STATUS = {
    401: "unauthorized",
    403: "unauthorized",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}

# A box per request: a handler marks it when it counts. Mutated in place, so a mark made in a
# copied context (a dependency run in the thread pool) is seen here too.
_counted: ContextVar[list[bool] | None] = ContextVar("feedbackloop_ingest_counted", default=None)


def mark_counted() -> None:
    """The current request's outcome has been counted by its handler."""
    box = _counted.get()
    if box is not None:
        box[0] = True


def outcome_of_status(status: int) -> str:
    if status < 400:
        return "accepted"
    return _OUTCOME_OF_STATUS.get(status, "error" if status >= 500 else "invalid")


class RefusalCounter:
    """ASGI middleware around the ingest app. `event_type_of(path)` names the event type an
    event route takes (None for the mixed batch route); other paths pass through uncounted."""

    def __init__(
        self,
        app: Any,
        *,
        metrics: IngestMetrics,
        event_route: Callable[[str], bool],
        event_type_of: Callable[[str], str | None],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.event_route = event_route
        self.event_type_of = event_type_of

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not self.event_route(
            scope["path"]
        ):
            await self.app(scope, receive, send)
            return
        box = [False]
        token = _counted.set(box)
        status = 500

        async def watching(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watching)
        finally:
            _counted.reset(token)
            if status >= 400 and not box[0]:
                self.metrics.count(self.event_type_of(scope["path"]), outcome_of_status(status))
