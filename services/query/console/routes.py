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
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from feedbackloop.http.auth import Principal, Scope
from feedbackloop.http.problems import ProblemException
from services.query.console.diff import Run as DiffRun
from services.query.console.diff import side
from services.query.console.sessions import COOKIE, ConsoleSession
from services.query.console.state import ConsoleState, UpstreamProblem

router = APIRouter(prefix="/console", include_in_schema=False)

# The questions a reviewer answers about a response, and their answers.
LABELS: dict[str, tuple[str, ...]] = {
    "verdict": ("acceptable", "wrong", "harmful"),
    "cause": ("misunderstood", "wrong_action", "tone", "missing_information", "other"),
}
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
MAX_FORM_BYTES = 65_536


class SignInRequired(Exception):
    """No valid session: the person is sent to the sign-in page."""


def _console(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


async def _session(request: Request) -> ConsoleSession:
    """The signed-in session, its key checked again (a revoked key ends the session)."""
    console = _console(request)
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


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    console = _console(request)
    page = console.templates.get_template(template).render(
        path=request.url.path, labels=LABELS, **context
    )
    return HTMLResponse(page, status_code=status)


def _page(request: Request, session: ConsoleSession, template: str, **context: Any) -> HTMLResponse:
    return _render(request, template, session=session,
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


async def _form(request: Request) -> dict[str, str]:
    _same_origin(request)
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ProblemException(413, "the form is too large")
    fields = parse_qs(body.decode("utf-8", errors="strict"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


async def _action_form(request: Request) -> tuple[ConsoleSession, dict[str, str]]:
    session = await _session(request)
    form = await _form(request)
    if not session.csrf_matches(form.get("csrf_token")):
        raise ProblemException(403, "the form is stale or forged (CSRF token mismatch); reload")
    # Ingest accepts reviews and corrections from `review` keys only: an admin key without that
    # scope sees no actions rather than buttons ingest would refuse.
    if Scope.REVIEW.value not in session.scopes:
        raise ProblemException(403, "this key lacks the review scope needed for actions")
    return session, form


def _back(form: dict[str, str], done: str) -> RedirectResponse:
    """Back to the page the form was on (a console path only), saying what was done."""
    target = form.get("next") or "/console/queue"
    if not target.startswith("/console/") or target.startswith("//") or "\\" in target:
        target = "/console/queue"
    separator = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{separator}{urlencode({'done': done})}", status_code=303)


# --- sign-in -----------------------------------------------------------------------------


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/console/queue", status_code=303)


@router.get("/sign-in")
async def sign_in_page(request: Request) -> HTMLResponse:
    return _render(request, "sign_in.html", session=None, error=None)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await _form(request)
    key = form.get("api_key", "").strip()
    console = _console(request)
    try:
        principal: Principal = await request.app.state.query.verifier.verify(f"Bearer {key}")
        principal.require(Scope.READ, Scope.ADMIN)
    except ProblemException as problem:
        return _render(request, "sign_in.html", status=problem.status, session=None,
                       error=problem.detail)
    session_id = console.sessions.open(ConsoleSession(
        api_key=key, tenant_id=principal.tenant_id, key_id=principal.key_id,
        name=principal.name, scopes=principal.scopes,
    ))
    response = RedirectResponse("/console/queue", status_code=303)
    response.set_cookie(
        COOKIE, session_id, httponly=True, samesite="strict", path="/console",
        secure=_https(request), max_age=None,
    )
    return response


def _https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    console = _console(request)
    session_id = request.cookies.get(COOKIE)
    session = console.sessions.get(session_id)
    form = await _form(request)
    if session is not None and not session.csrf_matches(form.get("csrf_token")):
        raise ProblemException(403, "the form is stale or forged (CSRF token mismatch); reload")
    console.sessions.close(session_id)
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict",
                           secure=_https(request))
    return response


# --- the review queue and its actions ------------------------------------------------------


def _filters(request: Request) -> dict[str, str]:
    names = ("signal", "status", "action_type", "model", "from", "to")
    return {name: request.query_params[name] for name in names
            if request.query_params.get(name)}


@router.get("/queue")
async def queue_page(request: Request) -> HTMLResponse:
    session = await _session(request)
    filters = _filters(request)
    queue = await _console(request).read(session, "/v1/reviews/queue", filters | {"limit": 25})
    for item in queue["items"]:
        runs = [DiffRun(run["op"], run["text"]) for run in item["diff"]]
        item["ai_side"] = side(runs, "before")
        item["agent_side"] = side(runs, "after")
    return _page(request, session, "queue.html", queue=queue, filters=filters,
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
    session, form = await _action_form(request)
    console = _console(request)
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
    return _back(form, "correction")


async def _review(
    request: Request, response_id: str, fields: Callable[[dict[str, str]], dict[str, Any]],
    done: str,
) -> Response:
    """Publish one `review.submitted` through ingest; ingest names the reviewer by the key."""
    session, form = await _action_form(request)
    body = {"event_id": str(uuid.uuid4()), "response_id": response_id} | fields(form)
    await _console(request).publish(session, "/v1/reviews", body)
    return _back(form, done)


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
    session = await _session(request)
    report = await _console(request).read(session, "/v1/reviews/agreement")
    return _page(request, session, "agreement.html", report=report)


# --- the rest of the story ------------------------------------------------------------------


@router.get("/failure-patterns")
async def failure_patterns_page(request: Request) -> HTMLResponse:
    session = await _session(request)
    params = {"action_type": request.query_params.get("action_type"),
              "min_count": request.query_params.get("min_count") or 2}
    report = await _console(request).read(session, "/v1/training/failure-patterns", params)
    return _page(request, session, "failure_patterns.html", report=report, params=params)


@router.get("/users")
async def user_page(request: Request) -> HTMLResponse:
    session = await _session(request)
    user_id = (request.query_params.get("user_id") or "").strip()
    summary, missing = None, False
    if user_id:
        try:
            summary = await _console(request).read(
                session, f"/v1/users/{_path_segment(user_id)}/feedback-summary", {"limit": 100})
        except UpstreamProblem as problem:
            if problem.status != 404:
                raise
            missing = True
    chart = _acceptance_series(summary["history"]) if summary else None
    return _page(request, session, "user.html", user_id=user_id, summary=summary,
                 missing=missing, user_chart=chart)


def _path_segment(text: str) -> str:
    return quote(text, safe="")


def _acceptance_series(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Accepted and rejected signals per day, from the user's history (current ones)."""
    days: dict[str, list[int]] = {}
    for item in history:
        if not item["current"]:
            continue
        day = item["occurred_at"][:10]
        counts = days.setdefault(day, [0, 0])
        if item["verdict"] == "accepted":
            counts[0] += 1
        elif item["verdict"] == "rejected":
            counts[1] += 1
    ordered = sorted(days)
    stamps = [int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) for day in ordered]
    return {"x": stamps, "series": [
        {"label": "accepted", "values": [days[d][0] for d in ordered]},
        {"label": "rejected", "values": [days[d][1] for d in ordered]},
    ]}


@router.get("/analytics")
async def analytics_page(request: Request) -> HTMLResponse:
    session = await _session(request)
    console = _console(request)
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
    return _page(
        request, session, "analytics.html", approval=approval, models=models,
        comparison=comparison, segments=segments, weights=weights,
        thresholds=request.app.state.console_thresholds,
        trend_chart=_trend_chart(trend, threshold), weight_charts=_weight_charts(weights),
    )


def _trend_chart(trend: dict[str, Any], threshold: float) -> dict[str, Any]:
    """One column per bucket with data, plus the range's ends, so the threshold line spans
    the whole range however few buckets have votes."""
    def stamp(text: str) -> int:
        return int(datetime.fromisoformat(text).timestamp())

    buckets = {stamp(p["bucket"]) for series in trend["series"] for p in series["points"]}
    stamps = sorted(buckets | {stamp(trend["start"]), stamp(trend["end"])})
    index = {value: i for i, value in enumerate(stamps)}
    series = []
    for group in trend["series"]:
        values: list[float | None] = [None] * len(stamps)
        for point in group["points"]:
            values[index[stamp(point["bucket"])]] = point["value"]
        series.append({"label": group["group"] or "all", "values": values})
    series.append({"label": f"alert threshold ({threshold:.0%})",
                   "values": [threshold] * len(stamps), "threshold": True})
    return {"x": stamps, "series": series, "y_max": 1}


def _weight_charts(weights: dict[str, Any]) -> list[dict[str, Any]]:
    charts = []
    for segment in weights["segments"]:
        versions = list(reversed(segment["history"]))
        factors = sorted(segment["current"]["weights"])
        series = []
        for factor in factors:
            series.append({"label": factor,
                           "values": [v["weights"].get(factor) for v in versions]})
            series.append({"label": f"{factor} low", "band": True,
                           "values": [(v["intervals"].get(factor) or [None])[0] for v in versions]})
            series.append({"label": f"{factor} high", "band": True,
                           "values": [(v["intervals"].get(factor) or [None, None])[1]
                                      for v in versions]})
        charts.append({"segment": segment["segment"], "x": [v["version"] for v in versions],
                       "series": series, "versions": True})
    return charts


@router.get("/alerts")
async def alerts_page(request: Request) -> HTMLResponse:
    session = await _session(request)
    report = await _console(request).read(session, "/v1/alerts")
    order = {"firing": 0, "pending": 1, "ok": 2}
    alerts = sorted(report["alerts"], key=lambda a: (order[a["state"]], a["rule"], a["subject"]))
    return _page(request, session, "alerts.html", alerts=alerts, rules=report["rules"])


@router.get("/static/{name}")
async def asset(request: Request, name: str) -> Response:
    if name not in ASSETS:
        raise ProblemException(404, "no such console asset")
    path = _console(request).assets / name
    if not path.exists():
        raise ProblemException(404, f"the console is not built: no {path} (run `make console`)")
    media = ASSETS.get(name) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(path.read_bytes(), media_type=media,
                    headers={"Cache-Control": "no-cache"})
