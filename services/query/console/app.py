"""Puts the console into the query service: its routes, its headers, its error pages, and the
resources its lifespan opens."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feedbackloop.http.problems import ProblemException, problem
from feedbackloop.settings import Settings
from services.query.console.experiments import router as experiments_router
from services.query.console.pages import SignInRequired
from services.query.console.routes import router
from services.query.console.sessions import SessionStore
from services.query.console.state import (
    SOURCE_ASSETS,
    ConsoleState,
    UpstreamProblem,
    template_environment,
)

# No inline script or style, nothing from another origin, no framing, forms post here only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
CONSOLE_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class ConsoleHeaders:
    """Every response under /console/ carries the CSP and its companions; pages are not
    cached (they show a signed-in person's data)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/console"):
            await self.app(scope, receive, send)
            return
        static = str(scope["path"]).startswith("/console/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in {name for name, _ in CONSOLE_HEADERS}]
                headers += CONSOLE_HEADERS
                if not static:
                    headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_console(app: FastAPI, settings: Settings) -> None:
    app.include_router(router)
    app.include_router(experiments_router)
    app.add_middleware(ConsoleHeaders)
    app.state.console_thresholds = {
        "approval": settings.alert_approval_min_rate,
        "conversion": settings.alert_conversion_min_rate,
        "chosen_rank": settings.alert_chosen_rank_max,
        "satisfaction": settings.alert_satisfaction_min,
    }
    api_problem = app.exception_handlers.get(ProblemException)
    api_http = app.exception_handlers.get(StarletteHTTPException)

    def _error_page(request: Request, status: int, detail: str) -> HTMLResponse:
        console: ConsoleState = request.app.state.console
        page = console.templates.get_template("error.html").render(
            path=request.url.path, session=None, status=status, detail=detail)
        return HTMLResponse(page, status_code=status)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, error: SignInRequired) -> Response:
        return RedirectResponse("/console/sign-in", status_code=303)

    @app.exception_handler(UpstreamProblem)
    async def _upstream(request: Request, error: UpstreamProblem) -> Response:
        if error.status == 401:
            return RedirectResponse("/console/sign-in", status_code=303)
        return _error_page(request, error.status, error.detail)

    @app.exception_handler(ProblemException)
    async def _problem(request: Request, error: ProblemException) -> Any:
        if request.url.path.startswith("/console"):
            return _error_page(request, error.status, error.detail)
        if api_problem is not None:
            return await api_problem(request, error)  # type: ignore[misc]
        return problem(error.status, error.detail, errors=error.errors, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Any:
        if request.url.path.startswith("/console"):
            return _error_page(request, error.status_code, str(error.detail))
        if api_http is not None:
            return await api_http(request, error)  # type: ignore[misc]
        return problem(error.status_code, str(error.detail))


def open_console(app: FastAPI, settings: Settings) -> ConsoleState:
    """The console's resources, opened in the query service's lifespan."""
    ingest_url = settings.console_ingest_url or f"http://{settings.host}:{settings.ingest_port}"
    return ConsoleState(
        sessions=SessionStore(idle_seconds=settings.console_session_idle_seconds),
        query=httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://query.console", timeout=30
        ),
        ingest=httpx.AsyncClient(base_url=ingest_url, timeout=15),
        templates=template_environment(),
        assets=settings.console_dir or SOURCE_ASSETS,
    )


async def close_console(console: ConsoleState) -> None:
    await console.query.aclose()
    await console.ingest.aclose()
