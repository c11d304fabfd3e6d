"""The review console's pages, under /console/ of the query service.

It reads through the query API's own routes (in process, as the signed-in key: it sees what
the API shows that key and nothing else) and acts only by publishing events through ingest
over HTTP, like any client: a correction is a `feedback.submitted`, a label, a mark or an
assignment a `review.submitted`. No page writes a read model.
"""

from __future__ import annotations

import mimetypes
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from feedbackloop.http.auth import Principal, Scope
from feedbackloop.http.problems import ProblemException
from services.query.console.charts import acceptance_series, trend_chart, weight_charts
from services.query.console.diff import Run as DiffRun
from services.query.console.diff import side
from services.query.console.pages import (
    LABELS,
    action_form,
    back_to,
    console_of,
    is_https,
    page,
    read_form,
    render,
    signed_in,
)
from services.query.console.sessions import COOKIE, ConsoleSession
from services.query.console.state import ConsoleState, UpstreamProblem

router = APIRouter(prefix="/console", include_in_schema=False)

ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}


# --- sign-in -----------------------------------------------------------------------------


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/console/queue", status_code=303)


@router.get("/sign-in")
async def sign_in_page(request: Request) -> HTMLResponse:
    return render(request, "sign_in.html", session=None, error=None)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await read_form(request)
    key = form.get("api_key", "").strip()
    console = console_of(request)
    try:
        principal: Principal = await request.app.state.query.verifier.verify(f"Bearer {key}")
        principal.require(Scope.READ, Scope.ADMIN)
    except ProblemException as problem:
        return render(request, "sign_in.html", status=problem.status, session=None,
                      error=problem.detail)
    session_id = console.sessions.open(ConsoleSession(
        api_key=key, tenant_id=principal.tenant_id, key_id=principal.key_id,
        name=principal.name, scopes=principal.scopes,
    ))
    response = RedirectResponse("/console/queue", status_code=303)
    response.set_cookie(
        COOKIE, session_id, httponly=True, samesite="strict", path="/console",
        secure=is_https(request), max_age=None,
    )
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    console = console_of(request)
    session_id = request.cookies.get(COOKIE)
    session = console.sessions.get(session_id)
    form = await read_form(request)
    if session is not None and not session.csrf_matches(form.get("csrf_token")):
        raise ProblemException(403, "the form is stale or forged (CSRF token mismatch); reload")
    console.sessions.close(session_id)
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict",
                           secure=is_https(request))
    return response


# --- the review queue and its actions ------------------------------------------------------


def _filters(request: Request) -> dict[str, str]:
    names = ("signal", "status", "action_type", "model", "from", "to")
    return {name: request.query_params[name] for name in names
            if request.query_params.get(name)}


@router.get("/queue")
async def queue_page(request: Request) -> HTMLResponse:
    session = await signed_in(request)
    filters = _filters(request)
    queue = await console_of(request).read(session, "/v1/reviews/queue", filters | {"limit": 25})
    for item in queue["items"]:
        runs = [DiffRun(run["op"], run["text"]) for run in item["diff"]]
        item["ai_side"] = side(runs, "before")
        item["agent_side"] = side(runs, "after")
    return page(request, session, "queue.html", queue=queue, filters=filters,
                done=request.query_params.get("done"), here=str(request.url.path) + (
                    "?" + urlencode(filters) if filters else ""))


async def _queue_item(console: ConsoleState, session: ConsoleSession, response_id: str) -> Any:
    queue = await console.read(session, "/v1/reviews/queue", {
        "response_id": response_id, "limit": 1,
        "from": (datetime.now(UTC) - timedelta(days=3_650)).isoformat(),
    })
    if not queue["items"]:
        raise ProblemException(404, "this response is not in the review queue")
    return queue["items"][0]


_CORRECTION_NAMESPACE = uuid.UUID("3c1f5a52-8d0e-4b6f-a2a9-6f0d7b8e4c15")


@router.post("/items/{response_id}/correction")
async def use_agent_reply(request: Request, response_id: str) -> Response:
    """The agent's reply becomes the response's correction: a `feedback.submitted` through
    ingest, so its preference pair reaches the training data like any client's."""
    session, form = await action_form(request)
    console = console_of(request)
    item = await _queue_item(console, session, response_id)
    if not item["agent_reply"]:
        raise ProblemException(422, "this response has no agent reply to use")
    # The same reviewer using the same reply on the same response is one event, however often
    # the form is sent (a double click, a re-post): ingest and the consumers apply it once.
    event_id = uuid.uuid5(_CORRECTION_NAMESPACE,
                          f"{session.key_id}\x1f{response_id}\x1f{item['agent_reply']}")
    await console.publish(session, "/v1/feedback", {
        "event_id": str(event_id), "response_id": response_id,
        "correction": {"text": item["agent_reply"]},
        "metadata": {"source": "console", "reviewer": session.key_id},
    })
    return back_to(form, "correction")


async def _review(
    request: Request, response_id: str, fields: Callable[[dict[str, str]], dict[str, Any]],
    done: str,
) -> Response:
    """Publish one `review.submitted` through ingest; ingest names the reviewer by the key."""
    session, form = await action_form(request)
    body = {"event_id": str(uuid.uuid4()), "response_id": response_id} | fields(form)
    await console_of(request).publish(session, "/v1/reviews", body)
    return back_to(form, done)


@router.post("/items/{response_id}/reviewed")
async def mark_reviewed(request: Request, response_id: str) -> Response:
    return await _review(request, response_id, lambda form: {"action": "reviewed"}, "reviewed")


@router.post("/items/{response_id}/assign")
async def assign(request: Request, response_id: str) -> Response:
    def fields(form: dict[str, str]) -> dict[str, Any]:
        return {"action": "assigned", "assignee": form.get("assignee", "").strip()}

    return await _review(request, response_id, fields, "assigned")


@router.post("/items/{response_id}/label")
async def label(request: Request, response_id: str) -> Response:
    def fields(form: dict[str, str]) -> dict[str, Any]:
        name, value = form.get("label", ""), form.get("value", "")
        if value not in LABELS.get(name, ()):
            raise ProblemException(422, f"{value!r} is not an answer to {name!r}")
        note = form.get("note", "").strip()
        return {"action": "label", "label": name, "value": value} | ({"note": note} if note else {})

    return await _review(request, response_id, fields, "labelled")


@router.get("/agreement")
async def agreement_page(request: Request) -> HTMLResponse:
    session = await signed_in(request)
    report = await console_of(request).read(session, "/v1/reviews/agreement")
    return page(request, session, "agreement.html", report=report)


# --- the rest of the story ------------------------------------------------------------------


@router.get("/failure-patterns")
async def failure_patterns_page(request: Request) -> HTMLResponse:
    session = await signed_in(request)
    params = {"action_type": request.query_params.get("action_type"),
              "min_count": request.query_params.get("min_count") or 2}
    report = await console_of(request).read(session, "/v1/training/failure-patterns", params)
    return page(request, session, "failure_patterns.html", report=report, params=params)


@router.get("/users")
async def user_page(request: Request) -> HTMLResponse:
    session = await signed_in(request)
    user_id = (request.query_params.get("user_id") or "").strip()
    summary, missing = None, False
    if user_id:
        try:
            summary = await console_of(request).read(
                session, f"/v1/users/{_path_segment(user_id)}/feedback-summary", {"limit": 100})
        except UpstreamProblem as problem:
            if problem.status != 404:
                raise
            missing = True
    chart = acceptance_series(summary["history"]) if summary else None
    return page(request, session, "user.html", user_id=user_id, summary=summary,
                missing=missing, user_chart=chart)


def _path_segment(text: str) -> str:
    return quote(text, safe="")


@router.get("/analytics")
async def analytics_page(request: Request) -> HTMLResponse:
    session = await signed_in(request)
    console = console_of(request)
    week = {"from": (datetime.now(UTC) - timedelta(days=7)).isoformat()}
    approval = await console.read(session, "/v1/analytics/approval", {"group_by": "action_type"})
    models = await console.read(session, "/v1/analytics/approval", {"group_by": "model"})
    trend = await console.read(session, "/v1/analytics/trends", week | {
        "metric": "approval", "interval": "hour", "group_by": "action_type"})
    segments = await console.read(session, "/v1/analytics/recommendations",
                                  {"group_by": "segment"})
    weights = await console.read(session, "/v1/segments/weights", {"history": 10})
    ranked = sorted(models["groups"], key=lambda group: -group["total"])
    comparison = None
    if len(ranked) >= 2:
        comparison = await console.read(session, "/v1/analytics/models/compare",
                                        {"a": ranked[0]["group"], "b": ranked[1]["group"]})
    threshold = request.app.state.console_thresholds["approval"]
    return page(
        request, session, "analytics.html", approval=approval, models=models,
        comparison=comparison, segments=segments, weights=weights,
        thresholds=request.app.state.console_thresholds,
        trend_chart=trend_chart(trend, threshold), weight_charts=weight_charts(weights),
    )


@router.get("/alerts")
async def alerts_page(request: Request) -> HTMLResponse:
    session = await signed_in(request)
    report = await console_of(request).read(session, "/v1/alerts")
    order = {"firing": 0, "pending": 1, "ok": 2}
    alerts = sorted(report["alerts"], key=lambda a: (order[a["state"]], a["rule"], a["subject"]))
    return page(request, session, "alerts.html", alerts=alerts, rules=report["rules"])


@router.get("/static/{name}")
async def asset(request: Request, name: str) -> Response:
    if name not in ASSETS:
        raise ProblemException(404, "no such console asset")
    path = console_of(request).assets / name
    if not path.exists():
        raise ProblemException(404, f"the console is not built: no {path} (run `make console`)")
    media = ASSETS.get(name) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(path.read_bytes(), media_type=media,
                    headers={"Cache-Control": "no-cache"})
