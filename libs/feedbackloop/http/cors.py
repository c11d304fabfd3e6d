"""CORS for the few routes a web page may call with a browser-safe (`feedback`) API key."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BrowserCors:
    """ASGI middleware: CORS (preflight and actual requests) on `paths` only, for `origins`.

    Every other path gets no CORS headers, so a page can never read analytics or send anything
    but feedback. Credentials (cookies) are not allowed: the key travels in `Authorization`.
    Installed outermost, so refusals (401, 413, 422, 429) carry the headers too and the page
    can read why. With no origins it passes everything through untouched.
    """

    def __init__(
        self, app: ASGIApp, *, paths: Iterable[str], origins: Iterable[str], max_age: int
    ) -> None:
        self.app = app
        self.paths = frozenset(paths)
        origins = list(origins)
        self.cors: ASGIApp | None = (
            CORSMiddleware(
                app,
                allow_origins=origins,
                allow_methods=["POST"],
                allow_headers=["Authorization", "Content-Type"],
                expose_headers=["Retry-After"],
                allow_credentials=False,
                max_age=max_age,
            )
            if origins
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.cors is not None and scope["type"] == "http" and scope["path"] in self.paths:
            preflight = scope["method"] == "OPTIONS"
            await self.cors(scope, receive, _problem_refusals(send) if preflight else send)
        else:
            await self.app(scope, receive, send)


def _problem_refusals(send: Send) -> Send:
    """A refused preflight (Starlette answers 400 in plain text) as a problem document, like
    every other 4xx of the API."""
    refused: list[bytes] = []

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 400:
            refused.append(b"")
            return
        if refused and message["type"] == "http.response.body":
            reason = message.get("body", b"").decode(errors="replace")
            body = orjson.dumps({"type": "about:blank", "title": "Bad request", "status": 400,
                                 "detail": f"CORS preflight refused: {reason}"})
            await send({"type": "http.response.start", "status": 400, "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"vary", b"Origin"),
            ]})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return wrapped
