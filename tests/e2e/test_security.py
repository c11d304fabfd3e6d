"""Security at the HTTP edge, on ingest and query as real processes: revocation that takes effect
at once despite a key cache, rate limits per key, CORS for browser-safe feedback keys, and the
refusal to start in production with placeholder secrets."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from feedbackloop.http.key_changes import LISTENER_APPLICATION_NAME
from services.cli.admin import create_key, revoke_key
from tests.e2e.conftest import service_env
from tests.infra import ServiceProcesses, create_database, create_topics, eventually, unique_prefix

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "https://shop.example.com"
RATE_PER_SECOND = 2
BURST = 4
# Long enough that any revocation seen within a test can only have come from the notification.
CACHE_SECONDS = 120


@dataclass
class Edge:
    services: ServiceProcesses
    database_url: str

    async def key(self, scopes: list[str], tenant: str = "sec") -> tuple[str, str]:
        return await create_key(self.database_url, tenant_id=tenant, name="sec", scopes=scopes)

    def client(self, service: str, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.services.url(service), headers=headers, timeout=30)


@pytest.fixture(scope="module")
def edge(
    postgres_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edge]:
    """Only ingest and query: what this module tests happens before any consumer."""
    prefix = unique_prefix()
    database_url = asyncio.run(create_database(postgres_url))
    asyncio.run(create_topics(kafka_bootstrap, prefix))
    env = service_env(kafka_bootstrap, database_url, prefix) | {
        "FEEDBACKLOOP_API_KEY_CACHE_SECONDS": str(CACHE_SECONDS),
        "FEEDBACKLOOP_RATE_LIMIT_REQUESTS_PER_SECOND": str(RATE_PER_SECOND),
        "FEEDBACKLOOP_RATE_LIMIT_BURST": str(BURST),
        "FEEDBACKLOOP_CORS_ALLOWED_ORIGINS": orjson.dumps([ORIGIN]).decode(),
    }
    services = ServiceProcesses(env, tmp_path_factory.mktemp("security"))
    try:
        services.start(("ingest", "query"))
        asyncio.run(_wait_for_listeners(database_url, count=2))
        yield Edge(services, database_url)
    finally:
        services.stop()


async def _listeners(database_url: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetch(
            "SELECT pid, backend_start FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            LISTENER_APPLICATION_NAME,
        )
    finally:
        await connection.close()


async def _wait_for_listeners(database_url: str, *, count: int, after: float = 0.0) -> None:
    async def connected() -> bool:
        rows = await _listeners(database_url)
        return sum(row["backend_start"].timestamp() > after for row in rows) >= count

    await eventually(connected, timeout=30)


def _feedback() -> dict[str, object]:
    return {"response_id": f"r-{uuid.uuid4().hex[:8]}", "thumb": "up", "user_id": "u1"}


async def _answers(edge: Edge, key: str) -> tuple[int, int]:
    """(ingest, query) statuses of one request each with `key`."""
    async with edge.client("ingest", key) as ingest, edge.client("query", key) as query:
        sent = await ingest.post("/v1/feedback", json=_feedback())
        read = await query.get("/v1/analytics/approval")
    return sent.status_code, read.status_code


# --- revocation -----------------------------------------------------------------------------


async def test_a_revoked_key_fails_on_its_very_next_request_despite_the_cache(edge: Edge) -> None:
    for _ in range(3):  # three keys: a lucky race would not pass three times
        key_id, key = await edge.key(["ingest", "read"])
        assert await _answers(edge, key) == (202, 200)  # now cached in both processes
        assert await revoke_key(edge.database_url, key_id)
        assert await _answers(edge, key) == (401, 401)


async def test_the_cache_is_really_on_so_only_the_notification_revokes(edge: Edge) -> None:
    """Control: a revocation Postgres does not announce (triggers off for this session) is not
    seen within the TTL. Without this, the test above would pass with no cache at all."""
    key_id, key = await edge.key(["ingest", "read"])
    assert await _answers(edge, key) == (202, 200)
    connection = await asyncpg.connect(edge.database_url)
    try:
        await connection.execute("SET session_replication_role = replica")
        await connection.execute(
            "UPDATE auth.api_keys SET revoked_at = now() WHERE key_id = $1::uuid", key_id
        )
    finally:
        await connection.close()
    assert await _answers(edge, key) == (202, 200)
    # An unknown key is not cached as valid: a brand-new key's first request is checked.
    _, fresh = await edge.key(["read"])
    async with edge.client("query", fresh) as query:
        assert (await query.get("/v1/analytics/approval")).status_code == 200


async def test_after_the_listener_connection_drops_it_reconnects_and_revocation_is_immediate(
    edge: Edge,
) -> None:
    key_id, key = await edge.key(["ingest", "read"])
    assert await _answers(edge, key) == (202, 200)
    killed_at = time.time()
    connection = await asyncpg.connect(edge.database_url)
    try:
        terminated = await connection.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            LISTENER_APPLICATION_NAME,
        )
    finally:
        await connection.close()
    assert terminated == 2
    await _wait_for_listeners(edge.database_url, count=2, after=killed_at)
    assert await revoke_key(edge.database_url, key_id)
    assert await _answers(edge, key) == (401, 401)


async def test_query_runs_the_listener_and_the_alert_evaluation_as_jobs_it_reports(
    edge: Edge,
) -> None:
    """Query's background work is jobs: each is a check in /readyz and has the job metrics,
    and the listener's job is healthy again once its connection is back."""
    async with edge.client("query") as query:
        async def jobs_healthy() -> dict[str, bool] | None:
            jobs: dict[str, bool] = (await query.get("/readyz")).json()["jobs"]
            wanted = ("job:api-key-changes", "job:alert-evaluation", "job:alert-relay")
            return jobs if all(jobs.get(name) for name in wanted) else None

        assert set(await eventually(jobs_healthy, timeout=30)) == {
            "job:api-key-changes", "job:alert-evaluation", "job:alert-relay",
            "job:alert-changes-retention", "job:experiment-gauges"}
        killed_at = time.time()
        connection = await asyncpg.connect(edge.database_url)
        try:
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                LISTENER_APPLICATION_NAME,
            )
        finally:
            await connection.close()
        await _wait_for_listeners(edge.database_url, count=2, after=killed_at)
        await eventually(jobs_healthy, timeout=30)
        metrics = (await query.get("/metrics")).text
    for job in ("api-key-changes", "alert-evaluation"):
        assert f'feedbackloop_job_healthy{{job="{job}"}} 1.0' in metrics
        assert f'feedbackloop_job_runs_total{{job="{job}",outcome="idle"}}' in metrics


# --- rate limits ----------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["ingest", "query"])
async def test_a_key_over_its_rate_gets_429_with_retry_after_and_a_problem(
    edge: Edge, service: str
) -> None:
    _, key = await edge.key(["ingest", "read"])
    _, other = await edge.key(["ingest", "read"])

    async def call(client: httpx.AsyncClient) -> httpx.Response:
        if service == "ingest":
            return await client.post("/v1/feedback", json=_feedback())
        return await client.get("/v1/analytics/approval")

    ok = 202 if service == "ingest" else 200
    async with edge.client(service, key) as client, edge.client(service, other) as neighbour:
        statuses = [(await call(client)).status_code for _ in range(BURST + 3)]
        # The burst passes; within the few milliseconds these take, at most one token refills.
        assert statuses[:BURST] == [ok] * BURST
        assert statuses.count(429) >= 2
        limited = await call(client)
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        problem = limited.json()
        assert problem["status"] == 429 and "rate limit" in problem["detail"]
        retry_after = int(limited.headers["retry-after"])
        assert 1 <= retry_after <= 1 + 1 / RATE_PER_SECOND
        # Another key of the same tenant has its own bucket.
        assert (await call(neighbour)).status_code == ok
        await asyncio.sleep(retry_after)
        assert (await call(client)).status_code == ok


# --- CORS -----------------------------------------------------------------------------------


async def test_preflight_from_an_allowed_origin_permits_feedback_with_a_bearer_key(
    edge: Edge,
) -> None:
    async with edge.client("ingest") as ingest:
        preflight = await ingest.options(
            "/v1/feedback",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed_headers = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "access-control-allow-credentials" not in preflight.headers


async def test_feedback_from_an_allowed_origin_is_readable_by_the_page_even_when_refused(
    edge: Edge,
) -> None:
    _, browser_key = await edge.key(["feedback"])
    async with edge.client("ingest", browser_key) as ingest:
        sent = await ingest.post("/v1/feedback", json=_feedback(), headers={"Origin": ORIGIN})
        assert sent.status_code == 202, sent.text
        assert sent.headers["access-control-allow-origin"] == ORIGIN
        # A feedback key cannot log responses, and that route offers no CORS at all.
        other = await ingest.post(
            "/v1/responses",
            json={"response_id": "r", "prompt": [{"role": "user", "content": "x"}],
                  "output": "y", "action_type": "todo"},
            headers={"Origin": ORIGIN},
        )
        assert other.status_code == 403
        assert "access-control-allow-origin" not in other.headers
        # Refusals on the feedback route carry the header, so the page can read the reason.
        invalid = await ingest.post(
            "/v1/feedback", json={"thumb": "sideways"}, headers={"Origin": ORIGIN}
        )
        assert invalid.status_code == 422
        assert invalid.headers["access-control-allow-origin"] == ORIGIN


async def test_a_browser_key_retracts_anonymous_feedback_from_an_allowed_origin(
    edge: Edge,
) -> None:
    _, browser_key = await edge.key(["feedback"])
    person = {"response_id": f"r-{uuid.uuid4().hex[:8]}", "feedback_key": str(uuid.uuid4())}
    async with edge.client("ingest", browser_key) as ingest:
        preflight = await ingest.options(
            "/v1/feedback/retractions",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization, content-type"},
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        vote = await ingest.post("/v1/feedback", json=person | {"thumb": "down"},
                                 headers={"Origin": ORIGIN})
        assert vote.status_code == 202, vote.text
        retraction = await ingest.post("/v1/feedback/retractions", json=person | {"kind": "thumb"},
                                       headers={"Origin": ORIGIN})
        assert retraction.status_code == 202, retraction.text
        assert retraction.json()["status"] == "accepted"
        assert retraction.headers["access-control-allow-origin"] == ORIGIN
        # A retraction must name a person; the refusal is readable by the page.
        nobody = await ingest.post("/v1/feedback/retractions",
                                   json={"response_id": "r", "kind": "thumb"},
                                   headers={"Origin": ORIGIN})
        assert nobody.status_code == 422, nobody.text
        assert nobody.headers["access-control-allow-origin"] == ORIGIN
        unknown_kind = await ingest.post("/v1/feedback/retractions",
                                         json=person | {"kind": "vote"})
        assert unknown_kind.status_code == 422


async def test_other_origins_and_other_routes_get_no_cors(edge: Edge) -> None:
    async with edge.client("ingest") as ingest, edge.client("query") as query:
        foreign = await ingest.options(
            "/v1/feedback",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert foreign.status_code == 400
        assert "access-control-allow-origin" not in foreign.headers
        assert foreign.headers["content-type"] == "application/problem+json"
        assert foreign.json()["status"] == 400
        for client, path in ((ingest, "/v1/responses"), (ingest, "/v1/events"),
                             (query, "/v1/analytics/approval")):
            preflight = await client.options(
                path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
            )
            assert "access-control-allow-origin" not in preflight.headers, path
            assert preflight.status_code == 405, path


# --- production secrets ---------------------------------------------------------------------


ALL_SERVICES = ("ingest", "query", "profiles", "learner", "trainer", "metrics")


@pytest.mark.parametrize(
    ("secret", "names"),
    # Every service with a placeholder; the length rule is the same code, one service suffices.
    [("changeme", ALL_SERVICES), ("short-but-not-a-placeholder", ("ingest",))],
)
def test_every_service_refuses_to_start_in_production_with_a_placeholder_secret(
    secret: str, names: tuple[str, ...]
) -> None:
    env = dict(os.environ) | {
        "FEEDBACKLOOP_ENVIRONMENT": "production",
        "FEEDBACKLOOP_USER_ID_HMAC_SECRET": secret,
        "FEEDBACKLOOP_DATABASE_URL": "postgresql://feedbackloop@127.0.0.1:1/feedbackloop",
        "FEEDBACKLOOP_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    }
    env.pop("FEEDBACKLOOP_DEV_API_KEY", None)
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"services.{name}.main"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        for name in names
    }
    for name, process in processes.items():
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail(f"{name} started in production with the secret {secret!r}")
        text = output.decode(errors="replace")
        assert process.returncode != 0, f"{name}: {text[-2000:]}"
        assert "FEEDBACKLOOP_USER_ID_HMAC_SECRET" in text, f"{name}: {text[-2000:]}"
        assert "production settings are incomplete" in text, f"{name}: {text[-2000:]}"


# --- refusals counted -----------------------------------------------------------------------

def _ingest_counts(text: str) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("feedbackloop_ingest_events_total{"):
            labels, value = line.removeprefix("feedbackloop_ingest_events_total").rsplit(" ", 1)
            pairs = dict(part.split("=", 1) for part in labels.strip("{}").split(","))
            counts[(pairs["event_type"].strip('"'), pairs["outcome"].strip('"'))] = float(value)
    return counts


async def test_every_refusal_of_an_event_is_counted_by_its_outcome(edge: Edge) -> None:
    _, ingest_key = await edge.key(["ingest"])
    _, read_key = await edge.key(["read"])
    async with edge.client("ingest") as anonymous:
        before = _ingest_counts((await anonymous.get("/metrics")).text)
        assert (await anonymous.post("/v1/feedback", json=_feedback())).status_code == 401
    async with edge.client("ingest", read_key) as reader:
        assert (await reader.post("/v1/feedback", json=_feedback())).status_code == 403
    async with edge.client("ingest", ingest_key) as client:
        invalid = _feedback() | {"thumb": "sideways"}
        assert (await client.post("/v1/feedback", json=invalid)).status_code == 422
        unknown = _feedback() | {"thumbs": "up"}
        assert (await client.post("/v1/feedback", json=unknown)).status_code == 422
        huge = _feedback() | {"metadata": {"blob": "x" * 1_100_000}}
        assert (await client.post("/v1/feedback", json=huge)).status_code == 413
        assert (await client.post("/v1/feedback", json=_feedback())).status_code == 202
    async with edge.client("ingest") as anonymous:
        after = _ingest_counts((await anonymous.get("/metrics")).text)
    grown = {key: after[key] - before.get(key, 0.0) for key in after
             if after[key] != before.get(key, 0.0)}
    assert grown == {
        ("feedback.submitted", "unauthorized"): 2,
        ("feedback.submitted", "invalid"): 2,
        ("feedback.submitted", "too_large"): 1,
        ("feedback.submitted", "accepted"): 1,
    }


# --- JSON is UTF-8 --------------------------------------------------------------------------

_SNEAKY = {"response_id": "r-enc", "thumb": "up", "user_id": "u1", "not_in_the_contract": 1}
_ENCODINGS = {
    "utf-16-le": lambda text: text.encode("utf-16-le"),
    "utf-16-be": lambda text: text.encode("utf-16-be"),
    "utf-16 with BOM": lambda text: text.encode("utf-16"),
    "utf-32-le": lambda text: text.encode("utf-32-le"),
    "utf-32-be": lambda text: text.encode("utf-32-be"),
    "utf-32 with BOM": lambda text: text.encode("utf-32"),
    "utf-8 with BOM": lambda text: text.encode("utf-8-sig"),
}


@pytest.mark.parametrize("encoding", sorted(_ENCODINGS))
@pytest.mark.parametrize("path", ["/v1/feedback", "/v1/events"])
async def test_a_body_in_another_encoding_is_refused_before_parsing(
    edge: Edge, encoding: str, path: str
) -> None:
    _, key = await edge.key(["ingest"])
    document = _SNEAKY if path == "/v1/feedback" else {
        "events": [_SNEAKY | {"type": "feedback.submitted"}]}
    body = _ENCODINGS[encoding](orjson.dumps(document).decode())
    async with edge.client("ingest", key) as client:
        before = _ingest_counts((await client.get("/metrics")).text)
        refused = await client.post(path, content=body,
                                    headers={"Content-Type": "application/json"})
        after = _ingest_counts((await client.get("/metrics")).text)
    assert refused.status_code == 415, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "UTF-8" in refused.json()["detail"]
    accepted = [k for k in after if k[1] == "accepted" and after[k] != before.get(k, 0.0)]
    assert accepted == [], "nothing of a refused body may be published"


async def test_a_charset_other_than_utf8_and_invalid_utf8_bytes_are_refused(edge: Edge) -> None:
    _, key = await edge.key(["ingest"])
    plain = orjson.dumps(_feedback())
    async with edge.client("ingest", key) as ingest, edge.client("query", key) as query:
        latin = await ingest.post("/v1/feedback", content=plain,
                                  headers={"Content-Type": "application/json; charset=latin-1"})
        assert latin.status_code == 415 and "charset=latin-1" in latin.json()["detail"]
        broken = b'{"response_id": "r\xff", "thumb": "up"}'
        invalid = await ingest.post("/v1/feedback", content=broken,
                                    headers={"Content-Type": "application/json"})
        assert invalid.status_code == 400 and "not valid UTF-8" in invalid.json()["detail"]
        # A Content-Encoding does not carry a body past the check: only the OTLP route
        # decompresses, and elsewhere the header itself is refused.
        for encoding in ("x-anything", "gzip"):
            labelled = await ingest.post(
                "/v1/feedback", content=orjson.dumps(_SNEAKY).decode().encode("utf-16"),
                headers={"Content-Type": "application/json", "Content-Encoding": encoding})
            assert labelled.status_code == 415, labelled.text
        # Every service refuses such a body, whatever the route.
        on_query = await query.post("/v1/analytics/approval", content="{}".encode("utf-16"),
                                    headers={"Content-Type": "application/json"})
        assert on_query.status_code == 415
        # The same sneaky document in UTF-8 meets the contract's own answer, and a clean one
        # is accepted with an explicit UTF-8 charset.
        strict = await ingest.post("/v1/feedback", content=orjson.dumps(_SNEAKY),
                                   headers={"Content-Type": "application/json"})
        assert strict.status_code == 422
        fine = await ingest.post("/v1/feedback", content=plain,
                                 headers={"Content-Type": "application/json; charset=UTF-8"})
        assert fine.status_code == 202, fine.text


async def test_metadata_nested_too_deep_says_what_the_limit_is(edge: Edge) -> None:
    _, key = await edge.key(["ingest"])
    nested: dict[str, object] = {}
    inner = nested
    for _ in range(300):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    async with edge.client("ingest", key) as client:
        refused = await client.post("/v1/feedback", json=_feedback() | {"metadata": nested})
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["errors"]
        assert error["loc"] == ["metadata"] and "at most 64" in error["msg"], error
        ok = nested
        for _ in range(300 - 63):
            ok = ok["a"]  # type: ignore[assignment]
        accepted = await client.post("/v1/feedback", json=_feedback() | {"metadata": ok})
        assert accepted.status_code == 202, accepted.text
