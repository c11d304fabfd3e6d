"""The feedback widget, served by ingest: its script-tag and ES-module bundles, and a demo page.

The bundles are versioned by path (`/widget/v1/`), cached for a week (with an ETag for
revalidation), and open to any origin (an ES module loaded from another origin needs CORS).
The demo page is a sample chat for one tenant (`FEEDBACKLOOP_WIDGET_DEMO_TENANT`): rendered like
a product's backend would, with a signed feedback token per response and the responses logged.
"""

from __future__ import annotations

import hashlib
import html
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Request, Response

from feedbackloop.contract.requests import ResponseRequest
from feedbackloop.http.problems import ProblemException
from services.ingest.deps import IngestState, State
from services.ingest.handlers import publish_events
from services.ingest.processing import PreparedEvent, Tenancy, prepare

SOURCE_DIST = Path(__file__).resolve().parents[2] / "libs" / "widget" / "dist"
DEMO_DIR = Path(__file__).resolve().parent / "demo"
BUNDLES = {"feedbackloop.js": "text/javascript; charset=utf-8",
           "feedbackloop.mjs": "text/javascript; charset=utf-8"}
BUNDLE_CACHE = "public, max-age=604800, stale-while-revalidate=86400"
DEMO_ASSETS = {"demo.css": "text/css; charset=utf-8", "demo.js": "text/javascript; charset=utf-8"}
DEMO_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_RESPONSE_IDS = uuid.UUID("3f0e9a51-7c43-4d47-9d5e-6a2b1c0f8e11")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asset:
    body: bytes
    etag: str
    media_type: str


def load_asset(path: Path, media_type: str) -> Asset | None:
    try:
        body = path.read_bytes()
    except OSError:
        return None
    return Asset(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"', media_type)


def widget_router(widget_dir: Path | None, demo_tenant: str | None) -> APIRouter:
    """The widget's bundles from `widget_dir` (the source tree's build by default), and with a
    demo tenant the demo page and its assets."""
    router = APIRouter(tags=["widget"])
    _add_bundle_routes(router, widget_dir or SOURCE_DIST)
    if demo_tenant is not None:
        _add_demo_routes(router, demo_tenant)
    return router


def _add_bundle_routes(router: APIRouter, dist: Path) -> None:
    def bundle(name: str) -> Asset:
        # Read per request while missing, so a build after start is picked up; cached once found.
        asset = bundles.get(name) or load_asset(dist / name, BUNDLES[name])
        if asset is None:
            raise ProblemException(404, f"the widget is not built: no {dist / name} (run `make widget`)")
        bundles[name] = asset
        return asset

    bundles: dict[str, Asset] = {}

    # Static files, not API operations: kept out of the OpenAPI document.
    @router.get("/widget/v1/{name}", include_in_schema=False)
    async def widget_bundle(name: str, request: Request) -> Response:
        """The widget: `feedbackloop.js` for a `<script>` tag, `feedbackloop.mjs` to import."""
        if name not in BUNDLES:
            raise ProblemException(404, f"no widget file {name!r}; try feedbackloop.js or feedbackloop.mjs")
        return _serve(bundle(name), request, BUNDLE_CACHE, {
            "Access-Control-Allow-Origin": "*",
            "Cross-Origin-Resource-Policy": "cross-origin",
        })


def _add_demo_routes(router: APIRouter, demo_tenant: str) -> None:
    @router.get("/widget/demo", include_in_schema=False)
    async def demo_page(state: State) -> Response:
        """A sample chat with the widget on each answer, as a product's page would have it."""
        await _log_demo_responses(state, demo_tenant)
        tokens = {
            reply.response_id: state.tokens.mint(demo_tenant, reply.response_id,
                                                 state.token_ttl_seconds)[0]
            for reply in DEMO_CHAT
        }
        page = render_demo(tokens)
        return Response(page, media_type="text/html; charset=utf-8", headers={
            "Content-Security-Policy": DEMO_CSP, "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
        })

    demo_assets: dict[str, Asset] = {}

    @router.get("/widget/demo/{name}", include_in_schema=False)
    async def demo_asset(name: str, request: Request) -> Response:
        if name not in DEMO_ASSETS:
            raise ProblemException(404, f"no demo file {name!r}")
        asset = demo_assets.get(name) or load_asset(DEMO_DIR / name, DEMO_ASSETS[name])
        if asset is None:
            raise ProblemException(404, f"no demo file {name!r}")
        demo_assets[name] = asset
        return _serve(asset, request, "no-cache", {})


def _serve(asset: Asset, request: Request, cache: str, extra: dict[str, str]) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff", **extra}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@dataclass(frozen=True)
class DemoReply:
    response_id: str
    question: str
    answer: str
    action_type: str


DEMO_CHAT = (
    DemoReply("demo-r1", "How do I reset my password?",
              "Open Settings, choose Security, then Reset password. We email you a link that "
              "works for 30 minutes.", "support_answer"),
    DemoReply("demo-r2", "Can I get a refund for last month?",
              "Refunds are possible within 14 days of a charge. Last month's charge is older, "
              "so I can offer account credit instead.", "billing_answer"),
    DemoReply("demo-r3", "Draft a reply to a customer whose parcel is late.",
              "Hi Sam, I'm sorry your parcel is late. It left our warehouse on Monday and should "
              "reach you by Thursday. I'll keep an eye on it for you.", "drafted_reply"),
    DemoReply("demo-r4", "Suggested answer for ticket #4821 (delivery address change)",
              "You can change the delivery address until the parcel ships. Go to Orders, pick "
              "the order and choose Change address.", "agent_assist"),
)


async def _log_demo_responses(state: IngestState, tenant: str) -> None:
    """Logs the demo's answers once (fixed event ids), as a product's backend logs its own."""
    tenancy = Tenancy(tenant, datetime.now(UTC), state.hmac_secret)
    events: list[PreparedEvent] = []
    for reply in DEMO_CHAT:
        request = ResponseRequest(
            event_id=uuid.uuid5(_RESPONSE_IDS, f"{tenant}:{reply.response_id}"),
            response_id=reply.response_id,
            prompt=[{"role": "user", "content": reply.question}],
            output=reply.answer,
            model="demo-assistant",
            action_type=reply.action_type,
        )
        events.append(prepare("response.logged", request, tenancy, state.topics))
    try:
        await publish_events(state, events)
    except ProblemException as problem:
        logger.warning("demo responses not logged: %s", problem)


def render_demo(tokens: dict[str, str]) -> str:
    """The demo page. Every value is escaped: the page holds text, never markup from data."""
    template = (DEMO_DIR / "index.html").read_text()
    chat = []
    for reply in DEMO_CHAT[:3]:
        chat.append(
            f'<li class="msg user"><p>{html.escape(reply.question)}</p></li>\n'
            f'<li class="msg ai" data-feedbackloop-response-id="{html.escape(reply.response_id)}"'
            f' data-feedbackloop-token="{html.escape(tokens[reply.response_id])}"'
            f' data-feedbackloop-rating="true"><p>{html.escape(reply.answer)}</p></li>'
        )
    assist = DEMO_CHAT[3]
    return (
        template.replace("{{chat}}", "\n".join(chat))
        .replace("{{assist_id}}", html.escape(assist.response_id))
        .replace("{{assist_token}}", html.escape(tokens[assist.response_id]))
        .replace("{{assist_question}}", html.escape(assist.question))
        .replace("{{assist_answer}}", html.escape(assist.answer))
    )
