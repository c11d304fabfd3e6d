"""Signed feedback tokens over HTTP: a product's backend mints one per response with an `ingest`
key; the token sends feedback and retractions on that response only, until it expires; it is
refused everywhere else, on ingest and on query."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from feedbackloop.contract import Topic, TopicNames
from feedbackloop.http.tokens import FeedbackTokenSigner
from feedbackloop.identity import hash_user_id
from services.cli.admin import create_key
from tests.e2e.conftest import HMAC_SECRET, service_env
from tests.infra import ServiceProcesses, create_database, create_topics, unique_prefix

pytestmark = pytest.mark.e2e

SECRET = "tokens-e2e-secret-0123456789abcdef0123456789"
ORIGIN = "https://chat.example.com"
MAX_TTL = 600


@dataclass
class Edge:
    services: ServiceProcesses
    ingest_key: str
    feedback_key: str
    review_key: str
    bootstrap: str
    names: TopicNames

    def client(self, service: str, credential: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        return httpx.AsyncClient(base_url=self.services.url(service), headers=headers, timeout=30)

    async def mint(self, response_id: str, **extra: object) -> httpx.Response:
        async with self.client("ingest", self.ingest_key) as ingest:
            return await ingest.post("/v1/feedback/tokens", json={"response_id": response_id, **extra})

    async def token(self, response_id: str) -> str:
        answer = await self.mint(response_id)
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["token"]
        return token


@pytest.fixture(scope="module")
def edge(
    postgres_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edge]:
    prefix = unique_prefix()
    database_url = asyncio.run(create_database(postgres_url))
    names = asyncio.run(create_topics(kafka_bootstrap, prefix))
    _, ingest_key = asyncio.run(create_key(database_url, tenant_id="shop", name="backend",
                                           scopes=["ingest"]))
    _, feedback_key = asyncio.run(create_key(database_url, tenant_id="shop", name="page",
                                             scopes=["feedback"]))
    _, review_key = asyncio.run(create_key(database_url, tenant_id="shop", name="reviewer",
                                           scopes=["review"]))
    env = service_env(kafka_bootstrap, database_url, prefix) | {
        "FEEDBACKLOOP_FEEDBACK_TOKEN_SECRET": SECRET,
        "FEEDBACKLOOP_FEEDBACK_TOKEN_MAX_TTL_SECONDS": str(MAX_TTL),
        "FEEDBACKLOOP_CORS_ALLOWED_ORIGINS": orjson.dumps([ORIGIN]).decode(),
    }
    services = ServiceProcesses(env, tmp_path_factory.mktemp("tokens"))
    try:
        services.start(("ingest", "query"))
        yield Edge(services, ingest_key, feedback_key, review_key, kafka_bootstrap, names)
    finally:
        services.stop()


def _rid() -> str:
    return f"r-{uuid.uuid4().hex[:10]}"


async def test_a_token_sends_feedback_and_retractions_on_its_response(edge: Edge) -> None:
    rid = _rid()
    minted = await edge.mint(rid, ttl_seconds=120)
    assert minted.status_code == 201
    body = minted.json()
    assert body["response_id"] == rid
    expires = datetime.fromisoformat(body["expires_at"]).timestamp()
    assert 100 < expires - time.time() <= 121
    async with edge.client("ingest", body["token"]) as page:
        sent = await page.post("/v1/feedback", json={"response_id": rid, "thumb": "down",
                                                     "feedback_key": "person-1"},
                               headers={"Origin": ORIGIN})
        assert sent.status_code == 202, sent.text
        assert sent.headers["access-control-allow-origin"] == ORIGIN
        retracted = await page.post("/v1/feedback/retractions", json={
            "response_id": rid, "kind": "thumb", "feedback_key": "person-1"})
        assert retracted.status_code == 202, retracted.text


async def test_a_token_for_response_a_is_refused_on_response_b(edge: Edge) -> None:
    a, b = _rid(), _rid()
    token = await edge.token(a)
    async with edge.client("ingest", token) as page:
        feedback = await page.post("/v1/feedback", json={"response_id": b, "thumb": "up",
                                                         "feedback_key": "person-1"},
                                   headers={"Origin": ORIGIN})
        retraction = await page.post("/v1/feedback/retractions", json={
            "response_id": b, "kind": "thumb", "feedback_key": "person-1"})
    for answer in (feedback, retraction):
        assert answer.status_code == 403
        detail = answer.json()["detail"]
        assert repr(a) in detail and repr(b) in detail, detail
    # The page can read why: the refusal carries CORS headers too.
    assert feedback.headers["access-control-allow-origin"] == ORIGIN


async def test_expired_forged_and_malformed_tokens_are_refused(edge: Edge) -> None:
    rid = _rid()
    expired, _ = FeedbackTokenSigner(SECRET.encode(), clock=lambda: time.time() - 3_600).mint(
        "shop", rid, 60)
    forged, _ = FeedbackTokenSigner(b"another-secret-" * 3).mint("shop", rid, 60)
    good = await edge.token(rid)
    tampered = good.replace(good.split(".")[1], FeedbackTokenSigner(SECRET.encode()).mint(
        "other-tenant", rid, 60)[0].split(".")[1])
    reasons = {}
    for name, token in {"expired": expired, "forged": forged, "tampered": tampered,
                        "malformed": "fbt1.nonsense"}.items():
        async with edge.client("ingest", token) as page:
            answer = await page.post("/v1/feedback", json={"response_id": rid, "thumb": "up",
                                                           "feedback_key": "p"})
        assert answer.status_code == 401, (name, answer.text)
        reasons[name] = answer.json()["detail"]
    assert "expired" in reasons["expired"]
    assert "signature" in reasons["forged"] and "signature" in reasons["tampered"]


async def test_a_token_does_nothing_but_feedback(edge: Edge) -> None:
    rid = _rid()
    token = await edge.token(rid)
    async with edge.client("ingest", token) as page, edge.client("query", token) as query:
        logged = await page.post("/v1/responses", json={"response_id": rid, "output": "x",
                                                        "prompt": []})
        minted = await page.post("/v1/feedback/tokens", json={"response_id": rid})
        batch = await page.post("/v1/events", json={"events": [
            {"type": "feedback.submitted", "response_id": rid, "thumb": "up", "feedback_key": "p"}]})
        read = await query.get("/v1/analytics/approval")
    assert logged.status_code == 403
    assert minted.status_code == 403
    assert batch.status_code == 403
    assert read.status_code == 401


async def test_minting_needs_an_ingest_key_and_a_ttl_within_the_maximum(edge: Edge) -> None:
    async with edge.client("ingest", edge.feedback_key) as page:
        refused = await page.post("/v1/feedback/tokens", json={"response_id": _rid()})
    assert refused.status_code == 403
    too_long = await edge.mint(_rid(), ttl_seconds=MAX_TTL + 1)
    assert too_long.status_code == 422
    unknown = await edge.mint(_rid(), scope="everything")
    assert unknown.status_code == 422


async def _published_feedback(edge: Edge, response_id: str, count: int) -> list[dict[str, object]]:
    """The feedback topic's events on `response_id`, as ingest published them."""
    consumer = AIOKafkaConsumer(
        edge.names.physical(Topic.FEEDBACK), bootstrap_servers=edge.bootstrap,
        auto_offset_reset="earliest", group_id=f"tokens-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    found: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 20
        while len(found) < count and time.monotonic() < deadline:
            for part in (await consumer.getmany(timeout_ms=300)).values():
                for record in part:
                    document = orjson.loads(record.value)
                    if document.get("payload", {}).get("response_id") == response_id:
                        found.append(document)
    finally:
        await consumer.stop()
    return found


async def test_a_token_bound_to_a_user_speaks_for_that_user_only(edge: Edge) -> None:
    rid = _rid()
    minted = await edge.mint(rid, user_id="alice@example.com")
    assert minted.status_code == 201, minted.text
    token = minted.json()["token"]
    assert "alice" not in token, "the token carries the user id's HMAC, never the id"
    alice = hash_user_id(HMAC_SECRET.encode(), "shop", "alice@example.com")
    async with edge.client("ingest", token) as page:
        as_someone_else = await page.post("/v1/feedback", json={
            "response_id": rid, "thumb": "down", "user_id": "mallory"})
        retract_someone_else = await page.post("/v1/feedback/retractions", json={
            "response_id": rid, "kind": "thumb", "user_id": "mallory"})
        implicit = await page.post("/v1/feedback", json={"response_id": rid, "thumb": "up"})
        explicit = await page.post("/v1/feedback", json={
            "response_id": rid, "rating": 4, "user_id": "alice@example.com"})
    for refused in (as_someone_else, retract_someone_else):
        assert refused.status_code == 403, refused.text
        assert "another user" in refused.json()["detail"]
    assert implicit.status_code == 202, implicit.text
    assert explicit.status_code == 202, explicit.text
    published = await _published_feedback(edge, rid, 2)
    assert sorted(event["event_id"] for event in published) == sorted(
        [implicit.json()["event_id"], explicit.json()["event_id"]]
    ), "the refused requests published nothing"
    assert {event["user_id"] for event in published} == {alice}


async def test_a_review_key_cannot_speak_for_a_user(edge: Edge) -> None:
    rid = _rid()
    async with edge.client("ingest", edge.review_key) as reviewer:
        named = await reviewer.post("/v1/feedback", json={
            "response_id": rid, "correction": {"text": "better"}, "user_id": "bob"})
        keyed = await reviewer.post("/v1/feedback", json={
            "response_id": rid, "correction": {"text": "better"}, "feedback_key": "bob-device"})
        own = await reviewer.post("/v1/feedback", json={
            "response_id": rid, "correction": {"text": "better"}})
    for refused in (named, keyed):
        assert refused.status_code == 403, refused.text
        assert "review key" in refused.json()["detail"]
    assert own.status_code == 202, own.text
    published = await _published_feedback(edge, rid, 1)
    assert [event["event_id"] for event in published] == [own.json()["event_id"]]
    assert published[0].get("user_id") is None
