"""The console's pages with a million feedback events loaded: each answers in well under a
second, timed server-side over HTTP and once in the browser.

What is loaded, and how: the rows that 1,000,000 `feedback.submitted` events (each about its own
logged response, over the 30 days up to now, 100,000 users) leave in the read models the pages
read, bulk-loaded with server-side SQL, NOT through ingest, Kafka and the consumers: the
profiles and metrics rows exactly as `make bench` loads them (`tests.bench.queries`: rollups
under 7 dimensions, profiles' responses and feedback), and from the same generated events the
trainer's `responses` and `feedback` (60% thumbs, 25% ratings, 10% comments, 5% corrections,
every signal current; 400 distinct prompt and reply texts, random hex, so that failures repeat
as failure patterns do), plus 30,000 reviewers' labels. Loaded once for the module (its time is
printed); only the page requests are timed. Only the query service runs (the pages read; no
action is taken here).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser

from feedbackloop.http.auth import ALL_SCOPES
from services.cli.admin import create_key
from tests.bench import queries as bench
from tests.browser.conftest import SCREENSHOTS, TENANT, sign_in
from tests.e2e.conftest import HMAC_SECRET, service_env
from tests.infra import ServiceProcesses, create_database, unique_prefix

pytestmark = pytest.mark.browser

EVENTS = 1_000_000
USERS = 100_000
BUDGET_SECONDS = 1.0  # what "well under a second" must stay below, at its worst of the runs
# The failure-patterns page shows `GET /v1/training/failure-patterns`, which groups the newest
# 5,000 down-votes in memory (near duplicates by MinHash): about a second here whatever the
# history holds, so it is held to a budget of its own and its time printed.
FAILURE_PATTERNS_BUDGET_SECONDS = 3.0
REQUESTS = 7

_TRAINER_CHUNK = (
    """
    INSERT INTO trainer.responses (tenant_id, response_id, event_id, user_id, prompt, output,
        model, action_type, occurred_at)
    SELECT $1::text, response_id, md5('response:' || i)::uuid, user_hash,
           jsonb_build_array(jsonb_build_object('role', 'user',
               'content', md5('prompt:' || i % 400) || ' ' || md5('prompt, again:' || i % 400))),
           md5('reply:' || i % 400) || ' ' || md5('reply, again:' || i % 400),
           model, action_type, occurred_at - interval '90 seconds'
    FROM bench_events
    ORDER BY occurred_at
    """,
    """
    INSERT INTO trainer.feedback (tenant_id, event_id, response_id, user_id, kind, thumb,
        rating, comment, correction, occurred_at, person, current)
    SELECT $1::text, event_id, response_id, user_hash, kind, thumb, rating,
           CASE WHEN comment IS NOT NULL
                THEN jsonb_build_object('text', comment, 'reasons', to_jsonb(reasons)) END,
           CASE WHEN correction IS NOT NULL THEN 'Sorry about ticket ' || i ||
                '. I have refunded the shipping and your order arrives tomorrow.' END,
           occurred_at, 'user:' || user_hash, true
    FROM bench_events
    ORDER BY occurred_at
    """,
)
_LABELS = """
INSERT INTO trainer.review_labels (tenant_id, response_id, reviewer, label, value,
    reviewer_name, occurred_at, event_id)
SELECT $1::text, 'r' || (i / 3 * 97 % $2), 'reviewer-' || (i % 3), 'verdict',
       (ARRAY['acceptable', 'wrong', 'harmful'])[1 + (hashint4(i) & 1023) % 3],
       'reviewer ' || (i % 3), now(), md5('label:' || i)::uuid
FROM generate_series(0, 29999) AS i
ON CONFLICT DO NOTHING
"""


async def _load(database_url: str) -> dict[str, float]:
    started = time.perf_counter()
    connection = await asyncpg.connect(database_url)
    try:
        await bench._prepare(connection, tenant_id=TENANT, hmac_secret=HMAC_SECRET, users=USERS)
        window_start = datetime.now(UTC) - bench.SPAN
        for low in range(0, EVENTS, bench.CHUNK_EVENTS):
            high = min(EVENTS, low + bench.CHUNK_EVENTS)
            async with connection.transaction():
                await connection.execute(bench._EVENTS, low, high, TENANT, window_start,
                                         bench.SPAN, 0, EVENTS)
                await connection.execute("ANALYZE bench_events")
                for statement in bench._LOAD_CHUNK + _TRAINER_CHUNK:
                    await connection.execute(statement, TENANT)
        await connection.execute(_LABELS, TENANT, EVENTS)
        loaded = time.perf_counter() - started
        for table in (*bench.READ_TABLES, "trainer.feedback", "trainer.responses",
                      "trainer.review_labels"):
            await connection.execute(f"VACUUM ANALYZE {table}")
        count = await connection.fetchval("SELECT count(*) FROM trainer.feedback")
        assert count == EVENTS
    finally:
        await connection.close()
    return {"load_seconds": loaded, "with_vacuum_seconds": time.perf_counter() - started}


@dataclass
class LoadedConsole:
    services: ServiceProcesses
    key: str
    load: dict[str, float]

    @property
    def console_url(self) -> str:
        return self.services.url("query") + "/console"


@pytest.fixture(scope="module")
def loaded_console(
    postgres_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
    console_dist: Path,
) -> Iterator[LoadedConsole]:
    database_url = asyncio.run(create_database(postgres_url))
    _, key = asyncio.run(
        create_key(database_url, tenant_id=TENANT, name="scale", scopes=list(ALL_SCOPES))
    )
    load = asyncio.run(_load(database_url))
    print(f"\nloaded {EVENTS:,} events in {load['load_seconds']:.1f} s "
          f"({load['with_vacuum_seconds']:.1f} s with VACUUM ANALYZE)")
    services = ServiceProcesses(
        service_env(kafka_bootstrap, database_url, unique_prefix())
        | {"FEEDBACKLOOP_CONSOLE_DIR": str(console_dist)},
        tmp_path_factory.mktemp("console-scale"),
    )
    try:
        services.start(("query",))
        yield LoadedConsole(services, key, load)
    finally:
        services.stop()


PAGES = [
    "/queue",
    "/queue?signal=corrected&action_type=suggest_macro",
    "/queue?signal=low&model=llama-3-70b&status=open",
    "/agreement",
    "/users?user_id=user-0",
    "/analytics",
    "/alerts",
    "/failure-patterns",
]


async def test_every_page_answers_well_under_a_second_at_a_million_events(
    loaded_console: LoadedConsole, browser: Browser,
) -> None:
    console = loaded_console
    async with httpx.AsyncClient(base_url=console.services.url("query"), timeout=30) as client:
        signed = await client.post("/console/sign-in", data={"api_key": console.key},
                                   headers={"Origin": console.services.url("query")})
        assert signed.status_code == 303, signed.text
        timings: dict[str, list[float]] = {}
        for path in PAGES:
            seconds = []
            for _ in range(REQUESTS + 1):  # the first warms the caches and is not counted
                started = time.perf_counter()
                answer = await client.get("/console" + path)
                seconds.append(time.perf_counter() - started)
                assert answer.status_code == 200, (path, answer.text[:500])
            timings[path] = seconds[1:]
    print(f"\n{'page':<55} median    max  (ms, {REQUESTS} requests, {EVENTS:,} events)")
    for path, seconds in timings.items():
        print(f"{path:<55} {statistics.median(seconds) * 1000:6.0f} {max(seconds) * 1000:6.0f}")
    def budget(path: str) -> float:
        return FAILURE_PATTERNS_BUDGET_SECONDS if "failure" in path else BUDGET_SECONDS

    slow = {path: max(s) for path, s in timings.items() if max(s) >= budget(path)}
    assert not slow, slow

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    try:
        await sign_in(page, console.console_url, console.key)
        started = time.perf_counter()
        await page.goto(console.console_url + "/queue")
        loaded = time.perf_counter() - started
        print(f"browser: /console/queue loaded in {loaded * 1000:.0f} ms")
        assert await page.locator("article.item").count() == 25
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "console-queue-1m.png"))
        await page.goto(console.console_url + "/analytics")
        await page.screenshot(path=str(SCREENSHOTS / "console-analytics-1m.png"), full_page=True)
        assert loaded < BUDGET_SECONDS
    finally:
        await context.close()
