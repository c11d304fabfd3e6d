"""Signed webhooks out, over real processes: ingest, the webhooks consumer and query on the
session's broker and PostgreSQL, delivering to a real HTTP receiver (uvicorn, in a thread) that
verifies every request with `standardwebhooks.Webhook(secret).verify`.

A thumb flipped and retracted over HTTP arrives as submitted, changed, retracted; a receiver
failing its first attempts gets the delivery later with the same webhook-id; one that always
fails leaves it dead after the limit, and a replay after the fix delivers it exactly once more;
alert changes relayed by query reach their subscribers (FEEDBACKLOOP_ALERT_WEBHOOK_URL among
them); training examples arrive as created, revised and retracted; tenants never see each
other's endpoints or deliveries."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request, Response
from standardwebhooks import Webhook

from feedbackloop.contract import AlertStateChanged, Topic, TopicNames, load_output_samples
from feedbackloop.http.auth import ALL_SCOPES
from feedbackloop.postgres import create_pool
from services.cli.admin import create_key
from services.cli.main import main as cli
from services.query import repository as query_repository
from services.webhooks.admin import generate_secret
from tests.e2e.conftest import service_env
from tests.infra import ServiceProcesses, create_database, create_topics, eventually, unique_prefix

pytestmark = pytest.mark.e2e

MAX_ATTEMPTS = 4
LEGACY_SECRET = generate_secret()


@dataclass
class Received:
    name: str
    webhook_id: str
    body: dict[str, Any]
    status: int


@dataclass
class Receiver:
    """Endpoints by name: each verifies the signature with its secret, then answers as told:
    `failures[name]` more 503s per webhook-id first (-1: always), 204 after."""

    port: int
    secrets: dict[str, str] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    _seen: dict[tuple[str, str], int] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{name}"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hooks/{name}")
        async def hook(name: str, request: Request) -> Response:
            raw = await request.body()
            try:
                body = Webhook(self.secrets[name]).verify(raw, dict(request.headers))
            except Exception as error:
                self.unverified.append(f"{name}: {error}")
                return Response(status_code=400)
            webhook_id = request.headers["webhook-id"]
            seen = self._seen.get((name, webhook_id), 0)
            self._seen[(name, webhook_id)] = seen + 1
            failing = self.failures.get(name, 0)
            status = 503 if failing < 0 or seen < failing else 204
            self.received.append(Received(name, webhook_id, body, status))
            return Response(status_code=status)

        return app

    def of(self, name: str, *, delivered: bool = True) -> list[Received]:
        return [r for r in self.received if r.name == name and (r.status == 204 or not delivered)]


async def until(predicate: Any) -> Any:
    """`eventually` (30 s) for a plain predicate of what the receiver got."""

    async def check() -> Any:
        return predicate()

    return await eventually(check, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(_free_port())
    receiver.secrets["legacy"] = LEGACY_SECRET
    server = uvicorn.Server(uvicorn.Config(
        receiver.app(), host="127.0.0.1", port=receiver.port, log_level="warning", lifespan="off",
    ))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.05)
    yield receiver
    server.should_exit = True
    thread.join(10)


@dataclass
class Hooks:
    services: ServiceProcesses
    names: TopicNames
    database_url: str
    bootstrap: str
    key: str
    other_key: str
    reader_key: str

    def client(self, service: str, key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.services.url(service), timeout=30,
                                 headers={"Authorization": f"Bearer {key or self.key}"})


@pytest.fixture(scope="module")
def hooks(
    postgres_url: str, kafka_bootstrap: str, receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Hooks]:
    prefix = unique_prefix()
    database_url = asyncio.run(create_database(postgres_url))
    names = asyncio.run(create_topics(kafka_bootstrap, prefix))

    def key(tenant: str, scopes: list[str]) -> str:
        return asyncio.run(create_key(database_url, tenant_id=tenant, name="t", scopes=scopes))[1]

    env = service_env(kafka_bootstrap, database_url, prefix) | {
        "FEEDBACKLOOP_WEBHOOKS_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "FEEDBACKLOOP_WEBHOOKS_RETRY_BASE_SECONDS": "0.3",
        "FEEDBACKLOOP_WEBHOOKS_RETRY_MAX_SECONDS": "0.6",
        "FEEDBACKLOOP_WEBHOOKS_DELIVERY_INTERVAL_SECONDS": "0.1",
        "FEEDBACKLOOP_WEBHOOKS_TIMEOUT_SECONDS": "3",
        "FEEDBACKLOOP_ALERT_WEBHOOK_URL": receiver.url("legacy"),
        "FEEDBACKLOOP_ALERT_WEBHOOK_SECRET": LEGACY_SECRET,
        "FEEDBACKLOOP_ALERT_RELAY_INTERVAL_SECONDS": "0.2",
    }
    services = ServiceProcesses(env, tmp_path_factory.mktemp("webhooks"))
    try:
        services.start(("ingest", "webhooks", "query"))
        yield Hooks(services, names, database_url, kafka_bootstrap,
                    key("acme", list(ALL_SCOPES)), key("other", list(ALL_SCOPES)),
                    key("acme", ["read"]))
    finally:
        services.stop()


@pytest.fixture
async def query(hooks: Hooks) -> AsyncIterator[httpx.AsyncClient]:
    async with hooks.client("query") as client:
        yield client


@pytest.fixture
async def ingest(hooks: Hooks) -> AsyncIterator[httpx.AsyncClient]:
    async with hooks.client("ingest") as client:
        yield client


async def _endpoint(
    query: httpx.AsyncClient, receiver: Receiver, name: str, event_types: list[str]
) -> str:
    answer = await query.post("/v1/webhooks/endpoints", json={
        "url": receiver.url(name), "event_types": event_types, "description": name,
    })
    assert answer.status_code == 201, answer.text
    receiver.secrets[name] = answer.json()["secret"]
    assert answer.json()["secret"].startswith("whsec_")
    return str(answer.json()["endpoint_id"])


async def _thumb(ingest: httpx.AsyncClient, response_id: str, thumb: str | None, at: datetime,
                 user: str = "u1") -> None:
    if thumb is None:
        answer = await ingest.post("/v1/feedback/retractions", json={
            "response_id": response_id, "kind": "thumb", "user_id": user,
            "occurred_at": at.isoformat(),
        })
    else:
        answer = await ingest.post("/v1/feedback", json={
            "response_id": response_id, "thumb": thumb, "user_id": user,
            "occurred_at": at.isoformat(), "event_id": str(uuid.uuid4()),
        })
    assert answer.status_code == 202, answer.text


async def _deliveries(query: httpx.AsyncClient, endpoint_id: str, **params: Any) -> list[dict[str, Any]]:
    answer = await query.get("/v1/webhooks/deliveries", params={"endpoint_id": endpoint_id, **params})
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


async def test_a_flip_and_a_retraction_arrive_as_submitted_changed_retracted(
    hooks: Hooks, receiver: Receiver, ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    endpoint = await _endpoint(query, receiver, "mine", [
        "feedback.submitted", "feedback.changed", "feedback.retracted",
    ])
    t0 = datetime.now(UTC).replace(microsecond=0)
    steps = [("down", "feedback.submitted"), ("up", "feedback.changed"), (None, "feedback.retracted")]
    for minute, (thumb, expected) in enumerate(steps):
        await _thumb(ingest, "r-flip", thumb, t0 + timedelta(minutes=minute))
        await until(lambda n=minute + 1: len(receiver.of("mine")) >= n or None)
        assert receiver.of("mine")[-1].body["type"] == expected
    submitted, changed, retracted = (r.body for r in receiver.of("mine"))
    assert submitted["data"]["signal"]["thumb"] == "down"
    assert changed["data"]["signal"]["thumb"] == "up"
    assert changed["data"]["previous"]["thumb"] == "down"
    assert retracted["data"]["previous"]["thumb"] == "up" and "signal" not in retracted["data"]
    assert {b["data"]["signal_id"] for b in (submitted, changed, retracted)} == {
        submitted["data"]["signal_id"]
    }
    assert submitted["data"]["response_id"] == "r-flip" and "user_id" not in submitted["data"]
    assert receiver.unverified == []
    listed = await _deliveries(query, endpoint)
    assert [(d["event_type"], d["state"], d["attempts"]) for d in reversed(listed)] == [
        ("feedback.submitted", "delivered", 1), ("feedback.changed", "delivered", 1),
        ("feedback.retracted", "delivered", 1),
    ]
    # An older vote arriving late never wins: nothing is sent for it.
    await _thumb(ingest, "r-flip", "up", t0 - timedelta(minutes=5))
    await asyncio.sleep(1.5)
    assert len(receiver.of("mine")) == 3


async def test_a_failing_receiver_gets_the_delivery_later_with_the_same_id(
    hooks: Hooks, receiver: Receiver, ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    receiver.failures["flaky"] = 2
    endpoint = await _endpoint(query, receiver, "flaky", ["feedback.submitted"])
    await _thumb(ingest, "r-flaky", "up", datetime.now(UTC))
    await until(lambda: receiver.of("flaky") or None)
    attempts = receiver.of("flaky", delivered=False)
    assert [a.status for a in attempts] == [503, 503, 204]
    assert len({a.webhook_id for a in attempts}) == 1
    [delivery] = await _deliveries(query, endpoint)
    assert (delivery["delivery_id"], delivery["state"], delivery["attempts"]) == (
        attempts[0].webhook_id, "delivered", 3,
    )
    assert delivery["last_status"] == 204 and delivery["body"]["type"] == "feedback.submitted"


async def test_always_failing_ends_dead_and_a_replay_delivers_exactly_once_more(
    hooks: Hooks, receiver: Receiver, ingest: httpx.AsyncClient, query: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    receiver.failures["down"] = -1
    endpoint = await _endpoint(query, receiver, "down", ["feedback.submitted"])
    await _thumb(ingest, "r-down", "down", datetime.now(UTC))

    async def dead() -> list[dict[str, Any]] | None:
        return await _deliveries(query, endpoint, state="dead") or None

    [delivery] = await eventually(dead, timeout=30)
    assert delivery["attempts"] == MAX_ATTEMPTS and delivery["last_status"] == 503
    assert len(receiver.of("down", delivered=False)) == MAX_ATTEMPTS
    # The consumer went on meanwhile: other endpoints kept receiving (see the other tests).
    receiver.failures["down"] = 0
    monkeypatch.setenv("FEEDBACKLOOP_DATABASE_URL", hooks.database_url)
    listing = ["webhooks", "deliveries", "--tenant", "acme", "--endpoint", endpoint]
    assert await asyncio.to_thread(cli, listing) == 0
    assert " dead " in capsys.readouterr().out
    replaying = ["webhooks", "replay", "--tenant", "acme", delivery["delivery_id"]]
    assert await asyncio.to_thread(cli, replaying) == 0
    await until(lambda: receiver.of("down") or None)
    await asyncio.sleep(1.0)
    sent = receiver.of("down", delivered=False)
    assert len(sent) == MAX_ATTEMPTS + 1 and [r.status for r in sent][-1] == 204
    assert {r.webhook_id for r in sent} == {delivery["delivery_id"]}
    [again] = await _deliveries(query, endpoint)
    assert (again["state"], again["attempts"], again["replays"]) == ("delivered", 1, 1)
    # A delivered one can be sent again through the API too; a pending or unknown one cannot.
    replay = await query.post(f"/v1/webhooks/deliveries/{delivery['delivery_id']}/replay")
    assert replay.status_code == 202, replay.text
    await until(lambda: len(receiver.of("down")) == 2 or None)
    missing = await query.post(f"/v1/webhooks/deliveries/{uuid.uuid4()}/replay")
    assert missing.status_code == 404


async def test_alert_changes_reach_their_subscribers_and_the_configured_url(
    hooks: Hooks, receiver: Receiver, query: httpx.AsyncClient
) -> None:
    await _endpoint(query, receiver, "alerts", ["alert.state_changed"])
    sample = load_output_samples()["alert.state_changed"][0]
    changes = [
        AlertStateChanged.model_validate(sample | {"event_id": str(uuid.uuid4()), "tenant_id": tenant})
        for tenant in ("acme", "other")
    ]
    pool = await create_pool(hooks.database_url, min_size=1, max_size=1)
    try:
        # As the evaluator does in its transaction; query's relay publishes them.
        async with pool.acquire() as connection:
            await query_repository.queue_alert_changes(connection, changes=[
                (c.event_id, c.tenant_id, c.rule, c.model_dump(mode="json")) for c in changes
            ])
    finally:
        await pool.close()
    await until(lambda: len(receiver.of("legacy")) >= 2 or None)
    await until(lambda: receiver.of("alerts") or None)
    assert sorted(r.body["data"]["tenant_id"] for r in receiver.of("legacy")) == ["acme", "other"]
    [mine] = receiver.of("alerts")
    assert mine.body["type"] == "alert.state_changed"
    assert (mine.body["data"]["rule"], mine.body["data"]["previous"], mine.body["data"]["state"]) == (
        "approval_below", "ok", "pending",
    )
    assert receiver.unverified == []


async def test_training_examples_arrive_created_revised_retracted(
    hooks: Hooks, receiver: Receiver, query: httpx.AsyncClient
) -> None:
    await _endpoint(query, receiver, "examples", [
        "training_example.created", "training_example.revised", "training_example.retracted",
    ])
    first, second, _ = load_output_samples()["training_example"]
    [retraction] = load_output_samples()["training_example.retracted"]
    producer = AIOKafkaProducer(bootstrap_servers=hooks.bootstrap)
    await producer.start()
    try:
        # As the trainer's relay publishes them, in order on the conversation's partition.
        for message in (first, first, second, retraction):
            await producer.send_and_wait(
                hooks.names.physical(Topic.TRAINING_EXAMPLES), orjson.dumps(message),
                key=b"acme:chat-7",
            )
    finally:
        await producer.stop()
    await until(lambda: len(receiver.of("examples")) >= 3 or None)
    await asyncio.sleep(0.5)
    assert [r.body["type"] for r in receiver.of("examples")] == [
        "training_example.created", "training_example.revised", "training_example.retracted",
    ]
    assert receiver.of("examples")[1].body["data"]["label"] is True


async def test_tenants_never_see_each_other(
    hooks: Hooks, receiver: Receiver, query: httpx.AsyncClient
) -> None:
    mine = await _endpoint(query, receiver, "isolated", ["feedback.submitted"])
    async with hooks.client("query", hooks.other_key) as other, \
            hooks.client("ingest", hooks.other_key) as other_ingest, \
            hooks.client("query", hooks.reader_key) as reader:
        assert (await other.get("/v1/webhooks/endpoints")).json() == []
        assert (await other.get("/v1/webhooks/deliveries")).json() == []
        assert (await other.delete(f"/v1/webhooks/endpoints/{mine}")).status_code == 404
        theirs = (await query.get("/v1/webhooks/deliveries")).json()
        assert theirs, "acme has deliveries from the other tests"
        replay = await other.post(f"/v1/webhooks/deliveries/{theirs[0]['delivery_id']}/replay")
        assert replay.status_code == 404
        # Another tenant's feedback never reaches acme's endpoints.
        await _thumb(other_ingest, "r-other", "up", datetime.now(UTC))
        # A read key lists but cannot create.
        assert (await reader.get("/v1/webhooks/endpoints")).status_code == 200
        refused = await reader.post("/v1/webhooks/endpoints", json={
            "url": receiver.url("x"), "event_types": ["feedback.submitted"],
        })
        assert refused.status_code == 403
        assert (await query.post("/v1/webhooks/endpoints", json={
            "url": receiver.url("x"), "event_types": ["feedback.nope"],
        })).status_code == 422
    await asyncio.sleep(1.5)
    assert receiver.of("isolated") == []
    assert [e["endpoint_id"] for e in (await query.get("/v1/webhooks/endpoints")).json()].count(mine) == 1
    assert (await query.delete(f"/v1/webhooks/endpoints/{mine}")).status_code == 204
    assert mine not in [e["endpoint_id"] for e in (await query.get("/v1/webhooks/endpoints")).json()]


async def test_secrets_are_stored_sealed_and_a_plaintext_row_is_sealed_when_delivered(
    hooks: Hooks, receiver: Receiver, ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    rolled = await _endpoint(query, receiver, "rolled", ["feedback.submitted"])
    connection = await asyncpg.connect(hooks.database_url)
    try:
        stored = dict(await connection.fetch("SELECT endpoint_id::text, secret FROM webhooks.endpoints"))
        # Every endpoint so far (the operator's FEEDBACKLOOP_ALERT_WEBHOOK_URL one too).
        assert len(stored) >= 2 and all(s.startswith("enc1:") for s in stored.values()), stored
        for secret in receiver.secrets.values():
            assert not any(secret in s or secret.removeprefix("whsec_") in s
                           for s in stored.values())
        # As a release of before (still running beside this one) would store it.
        await connection.execute("UPDATE webhooks.endpoints SET secret = $2 WHERE endpoint_id = $1",
                                 uuid.UUID(rolled), receiver.secrets["rolled"])
        await _thumb(ingest, "r-rolled", "up", datetime.now(UTC))
        await until(lambda: receiver.of("rolled") or None)

        async def sealed() -> bool | None:
            value = await connection.fetchval(
                "SELECT secret FROM webhooks.endpoints WHERE endpoint_id = $1", uuid.UUID(rolled))
            return value.startswith("enc1:") or None

        await eventually(sealed, timeout=30)
    finally:
        await connection.close()
    assert receiver.unverified == []
    assert receiver.of("rolled")[0].body["data"]["response_id"] == "r-rolled"


async def test_an_erasure_consumed_after_its_users_feedback_deletes_its_deliveries_before_and_after_it(
    hooks: Hooks, receiver: Receiver, ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    """The user's feedback at T-1 and T+1 is consumed and delivered before their erasure at T
    arrives on the consent topic: both deliveries go (occurred_at is the client's word); another
    user's stays."""
    endpoint = await _endpoint(query, receiver, "erased", ["feedback.submitted"])
    erased_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    await _thumb(ingest, "r-erased-before", "down", erased_at - timedelta(minutes=1), user="u-gone")
    await _thumb(ingest, "r-erased-after", "up", erased_at + timedelta(minutes=1), user="u-gone")
    await _thumb(ingest, "r-stays", "up", erased_at - timedelta(minutes=1), user="u-stays")
    await until(lambda: len(receiver.of("erased")) >= 3 or None)
    answer = await ingest.post("/v1/users/u-gone/erasure",
                               json={"occurred_at": erased_at.isoformat()})
    assert answer.status_code == 202, answer.text

    async def remaining() -> list[str] | None:
        listed = await _deliveries(query, endpoint)
        responses = sorted(d["body"]["data"]["response_id"] for d in listed)
        return responses if len(responses) == 1 else None

    assert await eventually(remaining, timeout=30) == ["r-stays"]
