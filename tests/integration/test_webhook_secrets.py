"""Endpoint secrets at rest, on a real PostgreSQL with a real receiver verifying every request
with `standardwebhooks`: what the query API and the CLI create is stored sealed (no plaintext in
the column) and still signs deliveries; a row of before in the plaintext form is delivered and
sealed, by the delivery job's first run alone too (and the column takes no third form); a
ciphertext copied onto another endpoint's row does not open there, and its delivery is dead at
once with the reason while the rest of the batch is delivered. Rotating the key, or setting one
where the key was derived, keeps every secret signing; only `feedbackloop webhooks reseal`
moves them to the new key, and it says what it could not."""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook

from feedbackloop.http.auth import ALL_SCOPES
from feedbackloop.observability import WebhookMetrics
from feedbackloop.postgres import create_pool
from feedbackloop.settings import Settings
from services.cli.admin import create_key
from services.cli.main import main as cli
from services.query.main import create_app
from services.webhooks import admin, repository
from services.webhooks.admin import SETTINGS_ENDPOINT_ID
from services.webhooks.delivery import deliver_due, delivery_jobs
from services.webhooks.processing import Delivery, RetryPolicy
from services.webhooks.sealing import SecretBox, UnreadableSecret
from tests.infra import create_database

pytestmark = pytest.mark.integration

HMAC_SECRET = "webhook-secrets-0123456789abcdef0123456789"
POLICY = RetryPolicy(max_attempts=5, base_seconds=0.01, max_seconds=0.01)


class Receiver:
    """Verifies each request with the secret of its path's endpoint; records what passed and
    what did not."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.verified: list[tuple[str, str]] = []  # (endpoint name, webhook-id)
        self.refused: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                name = self.path.rsplit("/", 1)[-1]
                try:
                    Webhook(outer.secrets[name]).verify(body, dict(self.headers.items()))
                except Exception as error:
                    outer.refused.append(f"{name}: {error}")
                    self.send_response(400)
                else:
                    outer.verified.append((name, self.headers["webhook-id"]))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{name}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def _settings(database_url: str, kafka_bootstrap: str = "", **more: Any) -> Settings:
    return Settings(**{"database_url": database_url, "kafka_bootstrap_servers": kafka_bootstrap,
                       "user_id_hmac_secret": HMAC_SECRET,
                       "webhooks_allow_private_networks": True} | more)


async def _stored(connection: asyncpg.Connection, endpoint_id: uuid.UUID) -> str:
    stored: str = await connection.fetchval(
        "SELECT secret FROM webhooks.endpoints WHERE endpoint_id = $1", endpoint_id)
    return stored


def _assert_sealed(stored: str, secret: str) -> None:
    assert stored.startswith("enc1:"), stored[:10]
    key = secret.removeprefix("whsec_")
    assert secret not in stored and key not in stored
    assert base64.b64decode(key) not in base64.b64decode(stored.removeprefix("enc1:"))


async def _delivery(connection: asyncpg.Connection, endpoint_id: uuid.UUID) -> uuid.UUID:
    delivery_id = uuid.uuid4()
    await repository.insert_deliveries(connection, [Delivery(
        delivery_id, "acme", endpoint_id, "feedback.submitted",
        {"type": "feedback.submitted", "data": {"endpoint": str(endpoint_id)}},
    )])
    return delivery_id


async def _state(connection: asyncpg.Connection, delivery_id: uuid.UUID) -> tuple[Any, ...]:
    row = await connection.fetchrow(
        "SELECT state, attempts, last_error FROM webhooks.deliveries WHERE delivery_id = $1",
        delivery_id)
    assert row is not None
    return tuple(row)


async def test_created_by_the_api_and_the_cli_the_secret_is_stored_sealed_and_signs(
    postgres_url: str, kafka_bootstrap: str, receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    database_url = await create_database(postgres_url)
    settings = _settings(database_url, kafka_bootstrap)
    _, key = await create_key(database_url, tenant_id="acme", name="t", scopes=list(ALL_SCOPES))
    app = create_app(settings)
    chosen = "whsec_" + base64.b64encode(b"a chosen secret of 32 bytes....!").decode()
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://query",
        headers={"Authorization": f"Bearer {key}"},
    ) as query:
        generated = await query.post("/v1/webhooks/endpoints", json={
            "url": receiver.url("api"), "event_types": ["feedback.submitted"]})
        given = await query.post("/v1/webhooks/endpoints", json={
            "url": receiver.url("given"), "event_types": ["feedback.submitted"],
            "secret": chosen})
        assert generated.status_code == given.status_code == 201, (generated.text, given.text)
        # The secret is returned at creation, as before, and never listed.
        assert given.json()["secret"] == chosen
        listed = (await query.get("/v1/webhooks/endpoints")).json()
        assert len(listed) == 2 and all("secret" not in e for e in listed)
        assert generated.json()["secret"] not in str(listed) and chosen not in str(listed)
    monkeypatch.setenv("FEEDBACKLOOP_DATABASE_URL", database_url)
    monkeypatch.setenv("FEEDBACKLOOP_USER_ID_HMAC_SECRET", HMAC_SECRET)
    monkeypatch.setenv("FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", "true")
    assert await asyncio.to_thread(cli, [
        "webhooks", "create", "--tenant", "acme", "--url", receiver.url("cli"),
        "--events", "feedback.submitted"]) == 0
    printed = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines()
                   if ":" in line)
    cli_id, cli_secret = uuid.UUID(printed["endpoint_id"].strip()), printed["secret"].strip()
    receiver.secrets |= {"api": generated.json()["secret"], "given": chosen, "cli": cli_secret}
    ids = {"api": uuid.UUID(generated.json()["endpoint_id"]),
           "given": uuid.UUID(given.json()["endpoint_id"]), "cli": cli_id}
    pool = await create_pool(database_url, min_size=1, max_size=4)
    box = SecretBox.from_settings(settings)
    try:
        async with pool.acquire() as connection:
            for name, endpoint_id in ids.items():
                _assert_sealed(await _stored(connection, endpoint_id), receiver.secrets[name])
            deliveries = {name: await _delivery(connection, endpoint_id)
                          for name, endpoint_id in ids.items()}
        async with httpx.AsyncClient(timeout=5) as client:
            sent = await deliver_due(pool, client, POLICY, WebhookMetrics(CollectorRegistry()),
                                     box=box, batch_size=10, timeout_seconds=5)
        assert sent == 3 and receiver.refused == []
        assert sorted(receiver.verified) == sorted(
            (name, str(delivery_id)) for name, delivery_id in deliveries.items())
        # Another key does not open them: the key is the services' own.
        # (A key set beside this HMAC secret would still try the key derived from it.)
        others = [_settings(database_url, user_id_hmac_secret="another-" + "x" * 40),
                  _settings(database_url, user_id_hmac_secret="another-" + "x" * 40,
                            webhooks_secret_key=base64.b64encode(secrets.token_bytes(32)).decode())]
        async with pool.acquire() as connection:
            for other in others:
                with pytest.raises(UnreadableSecret, match="another"):
                    SecretBox.from_settings(other).open(
                        ids["api"], await _stored(connection, ids["api"]))
    finally:
        await pool.close()


async def test_a_plaintext_row_of_before_is_delivered_and_sealed(
    postgres_url: str, receiver: Receiver
) -> None:
    database_url = await create_database(postgres_url)
    settings = _settings(database_url)
    box = SecretBox.from_settings(settings)
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        async with pool.acquire() as connection:
            views = {}
            for name in ("old", "older"):
                views[name], receiver.secrets[name] = await admin.create_endpoint(
                    connection, tenant_id="acme", url=receiver.url(name),
                    event_types=["feedback.submitted"], box=box, allow_private_networks=True)
                # As a release of before stored it.
                await connection.execute(
                    "UPDATE webhooks.endpoints SET secret = $2 WHERE endpoint_id = $1",
                    views[name].endpoint_id, receiver.secrets[name])
            delivery_id = await _delivery(connection, views["old"].endpoint_id)
        async with httpx.AsyncClient(timeout=5) as client:
            # A claim of a plaintext row signs with it, then seals every plaintext row.
            assert await deliver_due(pool, client, POLICY, WebhookMetrics(CollectorRegistry()),
                                     box=box, batch_size=10, timeout_seconds=5) == 1
        assert receiver.verified == [("old", str(delivery_id))] and receiver.refused == []
        async with pool.acquire() as connection:
            assert (await _state(connection, delivery_id))[0] == "delivered"
            for name, view in views.items():
                stored = await _stored(connection, view.endpoint_id)
                _assert_sealed(stored, receiver.secrets[name])
                assert box.open(view.endpoint_id, stored) == receiver.secrets[name]
            # The delivery job's first run seals them too, with no delivery due: and the
            # operator's endpoint (FEEDBACKLOOP_ALERT_WEBHOOK_URL) is stored sealed.
            await connection.execute(
                "UPDATE webhooks.endpoints SET secret = $2 WHERE endpoint_id = $1",
                views["older"].endpoint_id, receiver.secrets["older"])
            delivery_id = await _delivery(connection, views["older"].endpoint_id)
        alert_secret = "whsec_" + base64.b64encode(b"the operator's alert secret!0123").decode()
        job_settings = _settings(database_url, alert_webhook_url=receiver.url("alerts"),
                                 alert_webhook_secret=alert_secret)
        [job] = delivery_jobs(pool, CollectorRegistry(), job_settings)
        try:
            assert await job.run() == 1
        finally:
            assert job.close is not None
            await job.close()
        assert receiver.verified[-1] == ("older", str(delivery_id)) and receiver.refused == []
        async with pool.acquire() as connection:
            _assert_sealed(await _stored(connection, views["older"].endpoint_id),
                           receiver.secrets["older"])
            stored_alert = await _stored(connection, SETTINGS_ENDPOINT_ID)
            _assert_sealed(stored_alert, alert_secret)
            assert box.open(SETTINGS_ENDPOINT_ID, stored_alert) == alert_secret
            assert await connection.fetchval(
                "SELECT count(*) FROM webhooks.endpoints WHERE secret NOT LIKE 'enc1:%'") == 0
            # The column holds one of the two forms, nothing else (migration 0023).
            for other_form in ("", "s3cr3t", "v1,whsec_x"):
                with pytest.raises(asyncpg.CheckViolationError, match="endpoints_secret_form"):
                    await connection.execute(
                        "UPDATE webhooks.endpoints SET secret = $2 WHERE endpoint_id = $1",
                        views["old"].endpoint_id, other_form)
    finally:
        await pool.close()


async def test_the_first_run_seals_a_plaintext_row_with_no_delivery_due(
    postgres_url: str, receiver: Receiver
) -> None:
    """Nothing due, nothing claimed: the delivery job's first run alone seals the rows still
    in the plaintext form of before."""
    database_url = await create_database(postgres_url)
    settings = _settings(database_url)
    box = SecretBox.from_settings(settings)
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        async with pool.acquire() as connection:
            view, secret = await admin.create_endpoint(
                connection, tenant_id="acme", url=receiver.url("idle"),
                event_types=["feedback.submitted"], box=box, allow_private_networks=True)
            await connection.execute(
                "UPDATE webhooks.endpoints SET secret = $2 WHERE endpoint_id = $1",
                view.endpoint_id, secret)
        [job] = delivery_jobs(pool, CollectorRegistry(), settings)
        try:
            assert await job.run() == 0
        finally:
            assert job.close is not None
            await job.close()
        assert receiver.verified == []
        async with pool.acquire() as connection:
            stored = await _stored(connection, view.endpoint_id)
            _assert_sealed(stored, secret)
            assert box.open(view.endpoint_id, stored) == secret
            assert await connection.fetchval("SELECT count(*) FROM webhooks.deliveries") == 0
    finally:
        await pool.close()


async def test_a_ciphertext_copied_to_another_endpoint_is_dead_with_the_reason(
    postgres_url: str, receiver: Receiver
) -> None:
    database_url = await create_database(postgres_url)
    box = SecretBox.from_settings(_settings(database_url))
    metrics = WebhookMetrics(CollectorRegistry())
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        async with pool.acquire() as connection:
            views = {}
            for name in ("victim", "thief", "bystander"):
                views[name], receiver.secrets[name] = await admin.create_endpoint(
                    connection, tenant_id="acme", url=receiver.url(name),
                    event_types=["feedback.submitted"], box=box, allow_private_networks=True)
            # The victim's sealed secret, copied onto the thief's row.
            await connection.execute(
                "UPDATE webhooks.endpoints t SET secret = v.secret FROM webhooks.endpoints v "
                "WHERE t.endpoint_id = $1 AND v.endpoint_id = $2",
                views["thief"].endpoint_id, views["victim"].endpoint_id)
            copied = await _stored(connection, views["thief"].endpoint_id)
            assert copied == await _stored(connection, views["victim"].endpoint_id)
            with pytest.raises(UnreadableSecret, match="sealed for another endpoint"):
                box.open(views["thief"].endpoint_id, copied)
            stolen = await _delivery(connection, views["thief"].endpoint_id)
            fine = await _delivery(connection, views["bystander"].endpoint_id)
        async with httpx.AsyncClient(timeout=5) as client:
            assert await deliver_due(pool, client, POLICY, metrics, box=box, batch_size=10,
                                     timeout_seconds=5) == 2
            # Dead at once: nothing is due again, however long the job keeps running.
            await asyncio.sleep(0.1)
            assert await deliver_due(pool, client, POLICY, metrics, box=box, batch_size=10,
                                     timeout_seconds=5) == 0
        # Never sent (not even signed with the victim's secret); the bystander was.
        assert receiver.verified == [("bystander", str(fine))] and receiver.refused == []
        async with pool.acquire() as connection:
            state, attempts, error = await _state(connection, stolen)
            assert (state, attempts) == ("dead", 1)
            assert "does not decrypt" in error and "another endpoint" in error
            assert receiver.secrets["victim"] not in error and copied not in error
            assert (await _state(connection, fine))[0] == "delivered"
    finally:
        await pool.close()


async def _lagging_replica(connection: asyncpg.Connection, endpoint_id: uuid.UUID,
                           url: str, stored: str) -> None:
    """A replica still on the old settings creating an endpoint while `reseal` runs: every
    UPDATE of the endpoints (the reseal's) writes it too, in the same transaction."""
    await connection.execute(f"""
        CREATE FUNCTION lagging_replica() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO webhooks.endpoints (endpoint_id, tenant_id, url, secret, event_types)
            VALUES ('{endpoint_id}', 'acme', '{url}', '{stored}', ARRAY['feedback.submitted'])
            ON CONFLICT (endpoint_id) DO NOTHING;
            RETURN NULL;
        END $$;
        CREATE TRIGGER lagging_replica AFTER UPDATE ON webhooks.endpoints
            FOR EACH STATEMENT EXECUTE FUNCTION lagging_replica();
    """)


async def test_a_rotation_keeps_signing_and_only_reseal_moves_secrets_to_the_new_key(
    postgres_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Secrets sealed under the old key, with the new key current and the old one previous:
    deliveries are still signed with each endpoint's own secret, and the delivery job leaves
    those rows as they are, at its first run and when it claims one (a replica still on the
    old settings would seal them back). `feedbackloop webhooks reseal` seals them under the
    new key, counts again, and exits 1 naming how many are still not under it (one a lagging
    replica sealed meanwhile) and how many no key opens; run again, it exits 0. Then the old
    key can go."""
    database_url = await create_database(postgres_url)
    old, new = (base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(2))
    old_box = SecretBox.from_settings(_settings(database_url, webhooks_secret_key=old))
    new_only = SecretBox(base64.b64decode(new))
    rotated = _settings(database_url, webhooks_secret_key=new, webhooks_previous_secret_keys=old)
    metrics = WebhookMetrics(CollectorRegistry())
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        async with pool.acquire() as connection:
            views = {}
            for name, box in (("rotated", old_box), ("stranger", SecretBox(secrets.token_bytes(32)))):
                views[name], receiver.secrets[name] = await admin.create_endpoint(
                    connection, tenant_id="acme", url=receiver.url(name),
                    event_types=["feedback.submitted"], box=box, allow_private_networks=True)
            ids = {name: view.endpoint_id for name, view in views.items()}
            under_old = await _stored(connection, ids["rotated"])
            first = await _delivery(connection, ids["rotated"])
            lost = await _delivery(connection, ids["stranger"])
        [job] = delivery_jobs(pool, CollectorRegistry(), rotated)
        try:
            assert await job.run() == 2
        finally:
            assert job.close is not None
            await job.close()
        assert receiver.verified == [("rotated", str(first))] and receiver.refused == []
        async with pool.acquire() as connection:
            assert await _stored(connection, ids["rotated"]) == under_old
            state, _, error = await _state(connection, lost)
            assert state == "dead" and "does not decrypt" in error and old not in error
            again = await _delivery(connection, ids["rotated"])
        async with httpx.AsyncClient(timeout=5) as client:
            assert await deliver_due(pool, client, POLICY, metrics, box=SecretBox.from_settings(
                rotated), batch_size=10, timeout_seconds=5) == 1
        assert receiver.verified[-1] == ("rotated", str(again))
        lagging_id, receiver.secrets["lagging"] = uuid.uuid4(), admin.generate_secret()
        async with pool.acquire() as connection:
            assert await _stored(connection, ids["rotated"]) == under_old
            await _lagging_replica(connection, lagging_id, receiver.url("lagging"),
                                   old_box.seal(lagging_id, receiver.secrets["lagging"]))
        for variable, value in (("DATABASE_URL", database_url), ("USER_ID_HMAC_SECRET", HMAC_SECRET),
                                ("WEBHOOKS_SECRET_KEY", new), ("WEBHOOKS_PREVIOUS_SECRET_KEYS", old)):
            monkeypatch.setenv(f"FEEDBACKLOOP_{variable}", value)
        assert await asyncio.to_thread(cli, ["webhooks", "reseal"]) == 1
        printed = capsys.readouterr().out
        assert "sealed again under the current key: 1" in printed
        assert "still not sealed under the current key: 1" in printed
        assert "another replica may still be" in printed
        assert "no configured key opens: 1" in printed and old not in printed and new not in printed
        async with pool.acquire() as connection:
            assert new_only.open(ids["rotated"], await _stored(connection, ids["rotated"]))
            assert old_box.open(lagging_id, await _stored(connection, lagging_id))
            await connection.execute("DROP TRIGGER lagging_replica ON webhooks.endpoints")
            assert await admin.delete_endpoint(connection, tenant_id="acme",
                                               endpoint_id=ids["stranger"])
        # Every replica on the new settings now: a second run moves the rest, and says so.
        assert await asyncio.to_thread(cli, ["webhooks", "reseal"]) == 0
        printed = capsys.readouterr().out
        assert printed.strip() == "sealed again under the current key: 1"
        async with pool.acquire() as connection:
            for endpoint_id in (ids["rotated"], lagging_id):
                assert new_only.open(endpoint_id, await _stored(connection, endpoint_id))
            final = [await _delivery(connection, endpoint_id)
                     for endpoint_id in (ids["rotated"], lagging_id)]
        # The old key dropped: the same secrets still sign.
        async with httpx.AsyncClient(timeout=5) as client:
            assert await deliver_due(pool, client, POLICY, metrics, box=new_only, batch_size=10,
                                     timeout_seconds=5) == 2
        assert sorted(receiver.verified[-2:]) == sorted(
            [("rotated", str(final[0])), ("lagging", str(final[1]))])
        assert receiver.refused == []
    finally:
        await pool.close()


async def test_setting_a_key_where_it_was_derived_keeps_signing_and_reseal_moves_them(
    postgres_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A system that ran without FEEDBACKLOOP_WEBHOOKS_SECRET_KEY sealed under the key derived
    from the HMAC secret; given a key (and no previous one), it still signs with those secrets,
    and `reseal` seals them under the key."""
    database_url = await create_database(postgres_url)
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        async with pool.acquire() as connection:
            view, receiver.secrets["derived"] = await admin.create_endpoint(
                connection, tenant_id="acme", url=receiver.url("derived"),
                event_types=["feedback.submitted"],
                box=SecretBox.from_settings(_settings(database_url)), allow_private_networks=True)
            delivery_id = await _delivery(connection, view.endpoint_id)
        [job] = delivery_jobs(pool, CollectorRegistry(), _settings(
            database_url, webhooks_secret_key=key))
        try:
            assert await job.run() == 1
        finally:
            assert job.close is not None
            await job.close()
        assert receiver.verified == [("derived", str(delivery_id))] and receiver.refused == []
        for variable, value in (("DATABASE_URL", database_url), ("USER_ID_HMAC_SECRET", HMAC_SECRET),
                                ("WEBHOOKS_SECRET_KEY", key)):
            monkeypatch.setenv(f"FEEDBACKLOOP_{variable}", value)
        assert await asyncio.to_thread(cli, ["webhooks", "reseal"]) == 0
        assert capsys.readouterr().out.strip() == "sealed again under the current key: 1"
        async with pool.acquire() as connection:
            assert SecretBox(base64.b64decode(key)).open(
                view.endpoint_id, await _stored(connection, view.endpoint_id)
            ) == receiver.secrets["derived"]
    finally:
        await pool.close()
