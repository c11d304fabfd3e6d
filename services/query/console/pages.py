"""What every console page does before and after its own work: who is signed in (the key
checked again on every request), the posted form and its checks (same origin, size, CSRF, the
review scope for actions), rendering a template, and the redirect back after an action."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from feedbackloop.http.auth import Scope
from feedbackloop.http.problems import ProblemException
from services.query.console.sessions import COOKIE, ConsoleSession
from services.query.console.state import ConsoleState

# The questions a reviewer answers about a response, and their answers.
LABELS: dict[str, tuple[str, ...]] = {
    "verdict": ("acceptable", "wrong", "harmful"),
    "cause": ("misunderstood", "wrong_action", "tone", "missing_information", "other"),
}
MAX_FORM_BYTES = 65_536


class SignInRequired(Exception):
    """No valid session: the person is sent to the sign-in page."""


def console_of(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


async def signed_in(request: Request) -> ConsoleSession:
    """The signed-in session, its key checked again (a revoked key ends the session)."""
    console = console_of(request)
    session_id = request.cookies.get(COOKIE)
    session = console.sessions.get(session_id)
    if session is None:
        raise SignInRequired()
    try:
        await request.app.state.query.verifier.verify(f"Bearer {session.api_key}")
    except ProblemException as problem:
        if problem.status in (401, 403):
            console.sessions.close(session_id)
            raise SignInRequired() from None
        raise
    return session


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    console = console_of(request)
    html = console.templates.get_template(template).render(
        path=request.url.path, labels=LABELS, **context
    )
    return HTMLResponse(html, status_code=status)


def page(request: Request, session: ConsoleSession, template: str, **context: Any) -> HTMLResponse:
    """A signed-in page: the template with the session, and whether it may show actions."""
    return render(request, template, session=session,
                  can_review=Scope.REVIEW.value in session.scopes,
                  **context)


def _same_origin(request: Request) -> None:
    """Refuse a POST another site made the browser send (SameSite=Strict covers the cookie;
    this covers the sign-in form, which has none yet)."""
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise ProblemException(403, "cross-site form posts are refused")
    origin = request.headers.get("origin")
    if origin and origin != "null" and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise ProblemException(403, "cross-origin form posts are refused")


async def read_form(request: Request) -> dict[str, str]:
    _same_origin(request)
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ProblemException(413, "the form is too large")
    fields = parse_qs(body.decode("utf-8", errors="strict"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


async def action_form(request: Request) -> tuple[ConsoleSession, dict[str, str]]:
    session = await signed_in(request)
    form = await read_form(request)
    if not session.csrf_matches(form.get("csrf_token")):
        raise ProblemException(403, "the form is stale or forged (CSRF token mismatch); reload")
    # Ingest accepts reviews and corrections from `review` keys only: an admin key without that
    # scope sees no actions rather than buttons ingest would refuse.
    if Scope.REVIEW.value not in session.scopes:
        raise ProblemException(403, "this key lacks the review scope needed for actions")
    return session, form


def back_to(form: dict[str, str], done: str) -> RedirectResponse:
    """Back to the page the form was on (a console path only), saying what was done."""
    target = form.get("next") or "/console/queue"
    if not target.startswith("/console/") or target.startswith("//") or "\\" in target:
        target = "/console/queue"
    separator = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{separator}{urlencode({'done': done})}", status_code=303)


def is_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
