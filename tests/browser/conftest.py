"""The widget in a real browser: Debian's Chromium driven by Playwright, against ingest, metrics
and query as real processes on the session's broker and PostgreSQL.

Pages come from two origins, like in production: ingest serves the widget and its demo page;
`HostPages` is a product's site on another origin (its own CSP, its own scripts) whose backend
mints signed feedback tokens. One browser for the whole session, a fresh context per test.
Screenshots land in tests/browser/screenshots/ (git-ignored), their paths printed.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from feedbackloop.embedded import free_port
from feedbackloop.http.auth import ALL_SCOPES
from services.cli.admin import create_key
from tests.e2e.conftest import service_env
from tests.infra import ROOT, ServiceProcesses, create_database, create_topics, eventually, unique_prefix

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = ROOT / "tests" / "browser" / "screenshots"
WIDGET_DIST = ROOT / "libs" / "widget" / "dist"
AXE = ROOT / "libs" / "widget" / "node_modules" / "axe-core" / "axe.min.js"
TOKEN_SECRET = "browser-token-secret-0123456789abcdef0123456789"
TENANT = "acme"
TAKEN: list[Path] = []  # every screenshot of the session, listed in the terminal summary
# Assertions wait up to 10 s: two cores shared with the rest of the suite can be slow.
expect.set_options(timeout=10_000)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TAKEN:
        terminalreporter.write_sep("-", f"browser screenshots in {SCREENSHOTS}")
        for path in TAKEN:
            terminalreporter.write_line(str(path))


class HostPages:
    """A product's web server on its own origin: each page's HTML and headers, set by a test."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, dict[str, str]]] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = pages.get(self.path.split("?")[0])
                if found is None:
                    self.send_error(404)
                    return
                body, headers = found
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def put(self, path: str, body: str, headers: dict[str, str] | None = None) -> str:
        self.pages[path] = (body, headers or {})
        return self.origin + path

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class BrowserStack:
    services: ServiceProcesses
    api_key: str
    host: HostPages
    screenshots: list[Path] = field(default_factory=list)

    @property
    def ingest_url(self) -> str:
        return self.services.url("ingest")

    def ingest(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.ingest_url, timeout=30,
                                 headers={"Authorization": f"Bearer {self.api_key}"})

    def query(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.services.url("query"), timeout=30,
                                 headers={"Authorization": f"Bearer {self.api_key}"})

    async def token(self, response_id: str, ttl_seconds: int | None = None) -> str:
        """What a product's backend does per response it shows: mint a feedback token."""
        body: dict[str, Any] = {"response_id": response_id}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        async with self.ingest() as ingest:
            answer = await ingest.post("/v1/feedback/tokens", json=body)
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["token"]
        return token

    async def log_response(self, response_id: str, action_type: str, output: str = "An answer.") -> None:
        async with self.ingest() as ingest:
            answer = await ingest.post("/v1/responses", json={
                "response_id": response_id, "prompt": [{"role": "user", "content": "A question"}],
                "output": output, "model": "browser-model", "action_type": action_type,
            })
        assert answer.status_code == 202, answer.text

    async def approval(self, action_type: str) -> tuple[int, int]:
        """(thumbs up, thumbs down) the query API reports for an action type."""
        async with self.query() as query:
            answer = await query.get("/v1/analytics/approval", params={"group_by": "action_type"})
        assert answer.status_code == 200, answer.text
        for group in answer.json()["groups"]:
            if group["group"] == action_type:
                return group["up"], group["down"]
        return 0, 0

    async def approval_becomes(self, action_type: str, expected: tuple[int, int]) -> None:
        async def check() -> bool:
            return await self.approval(action_type) == expected

        try:
            await eventually(check, timeout=30)
        except AssertionError:
            raise AssertionError(
                f"approval of {action_type}: {await self.approval(action_type)}, expected {expected}"
            ) from None

    async def screenshot(self, page: Page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        self.screenshots.append(path)
        TAKEN.append(path)
        print(f"screenshot: {path}")
        return path


@pytest.fixture(scope="session")
def widget_dist() -> Path:
    """The bundles, built by the Makefile's rule (npm ci from the lock, then the build)."""
    subprocess.run(["make", "--no-print-directory", "-s", "widget"], cwd=ROOT, check=True)
    assert (WIDGET_DIST / "feedbackloop.js").exists()
    return WIDGET_DIST


@pytest.fixture(scope="module")
def browser_stack(
    postgres_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
    widget_dist: Path,
) -> Iterator[BrowserStack]:
    prefix = unique_prefix()
    database_url = asyncio.run(create_database(postgres_url))
    asyncio.run(create_topics(kafka_bootstrap, prefix))
    _, api_key = asyncio.run(
        create_key(database_url, tenant_id=TENANT, name="browser", scopes=list(ALL_SCOPES))
    )
    host = HostPages()
    env = service_env(kafka_bootstrap, database_url, prefix) | {
        "FEEDBACKLOOP_FEEDBACK_TOKEN_SECRET": TOKEN_SECRET,
        "FEEDBACKLOOP_WIDGET_DEMO_TENANT": TENANT,
        "FEEDBACKLOOP_CORS_ALLOWED_ORIGINS": orjson.dumps([host.origin]).decode(),
        "FEEDBACKLOOP_WIDGET_DIR": str(widget_dist),
    }
    services = ServiceProcesses(env, tmp_path_factory.mktemp("browser-services"))
    try:
        services.start(("ingest", "metrics", "query"))
        yield BrowserStack(services, api_key, host)
    finally:
        services.stop()
        host.stop()


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    created = await browser.new_context(viewport={"width": 900, "height": 900})
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    opened = await context.new_page()
    opened.set_default_timeout(10_000)
    yield opened


# --- the review console ------------------------------------------------------------------

CONSOLE_DIST = ROOT / "libs" / "console" / "dist"


@dataclass
class ConsoleStack:
    """Ingest, the consumers the console reads through (trainer, profiles, metrics) and query,
    with the console's keys: `api_key` sends the product's events (all scopes); reviewers
    sign in with keys of their own."""

    services: ServiceProcesses
    api_key: str
    database_url: str
    screenshots: list[Path] = field(default_factory=list)

    @property
    def console_url(self) -> str:
        return self.services.url("query") + "/console"

    def ingest(self, key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.services.url("ingest"), timeout=30,
                                 headers={"Authorization": f"Bearer {key or self.api_key}"})

    def query(self, key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.services.url("query"), timeout=30,
                                 headers={"Authorization": f"Bearer {key or self.api_key}"})

    async def key(self, name: str, scopes: list[str], tenant: str = TENANT) -> str:
        _, key = await create_key(self.database_url, tenant_id=tenant, name=name, scopes=scopes)
        return key

    async def send(self, path: str, body: dict[str, Any], key: str | None = None) -> str:
        async with self.ingest(key) as ingest:
            answer = await ingest.post(path, json=body)
        assert answer.status_code == 202, answer.text
        event_id: str = answer.json()["event_id"]
        return event_id

    async def screenshot(self, page: Page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        self.screenshots.append(path)
        print(f"screenshot: {path}")
        return path


@pytest.fixture(scope="session")
def console_dist() -> Path:
    """The console's assets, built by the Makefile's rule (npm ci from the lock, then esbuild)."""
    subprocess.run(["make", "--no-print-directory", "-s", "console"], cwd=ROOT, check=True)
    assert (CONSOLE_DIST / "console.js").exists()
    return CONSOLE_DIST


@pytest.fixture(scope="module")
def console_stack(
    postgres_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
    console_dist: Path,
) -> Iterator[ConsoleStack]:
    """The trainer explains down-votes with a model: an OpenAI-compatible server on localhost
    (the integration suite's), so the queue shows failure explanations."""
    from tests.integration.test_trainer_openai import OpenAICompatibleServer

    prefix = unique_prefix()
    database_url = asyncio.run(create_database(postgres_url))
    asyncio.run(create_topics(kafka_bootstrap, prefix))
    _, api_key = asyncio.run(
        create_key(database_url, tenant_id=TENANT, name="product", scopes=list(ALL_SCOPES))
    )
    services = ServiceProcesses(
        service_env(kafka_bootstrap, database_url, prefix),
        tmp_path_factory.mktemp("console-services"),
    )
    services.ports["ingest"] = free_port()
    with OpenAICompatibleServer() as model:
        services.env |= {
            "FEEDBACKLOOP_CONSOLE_DIR": str(console_dist),
            "FEEDBACKLOOP_CONSOLE_INGEST_URL": services.url("ingest"),
            "FEEDBACKLOOP_FAILURE_EXPLANATIONS_ENABLED": "true",
            "FEEDBACKLOOP_FAILURE_EXPLANATIONS_BASE_URL": model.base_url,
            "FEEDBACKLOOP_FAILURE_EXPLANATIONS_API_KEY": "sk-console-test",
            "FEEDBACKLOOP_FAILURE_EXPLANATIONS_REQUESTS_PER_MINUTE": "600",
        }
        try:
            services.start(("ingest", "trainer", "profiles", "metrics", "query"))
            yield ConsoleStack(services, api_key, database_url)
        finally:
            services.stop()


async def sign_in(page: Page, console_url: str, key: str) -> None:
    """What a reviewer does: open the console, type the key, sign in."""
    await page.goto(console_url + "/")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/console/queue**")

