"""The delivery job's guard on real sockets and a real PostgreSQL: an endpoint that resolves to a
non-public address is never connected to and its delivery is dead at once with the reason; the
connection goes to the checked address while the Host header and TLS's server name stay the
URL's; a redirect is not followed; nothing of a receiver's answer but its status is kept."""

from __future__ import annotations

import ipaddress
import secrets
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from feedbackloop.observability import WebhookMetrics
from feedbackloop.postgres import create_pool
from services.webhooks import admin, reads, repository
from services.webhooks.delivery import deliver_due
from services.webhooks.network import IPAddress, delivery_client
from services.webhooks.processing import Delivery, RetryPolicy
from services.webhooks.sealing import SecretBox
from tests.infra import create_database

pytestmark = pytest.mark.integration

BOX = SecretBox(secrets.token_bytes(32))  # seals the endpoints' secrets

POLICY = RetryPolicy(max_attempts=5, base_seconds=0.01, max_seconds=0.01)
LEAK = "receiver-private-body-text"


class Receiver:
    """A real HTTP(S) server on 127.0.0.1 that records what reached it and answers `status`."""

    def __init__(self, *, status: int = 204, location: str | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict[str, str]] = []
        self.server_names: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(dict(self.headers.items()))
                self.send_response(status, "leaked reason phrase " + LEAK)
                if location:
                    self.send_header("Location", location)
                body = (LEAK * 50).encode()
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            def remember(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
                outer.server_names.append(name)

            tls.sni_callback = remember  # type: ignore[assignment]
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.close()


@pytest.fixture
async def pool(postgres_url: str) -> Any:
    pool = await create_pool(await create_database(postgres_url), min_size=1, max_size=4)
    yield pool
    await pool.close()


async def _queue(pool: asyncpg.Pool, url: str) -> Any:
    async with pool.acquire() as connection:
        endpoint, _ = await admin.create_endpoint(
            connection, box=BOX, tenant_id="acme", url=url, event_types=["feedback.submitted"],
            allow_private_networks=True,  # created by an operator who allowed it, say
        )
        delivery = Delivery(uuid.uuid4(), "acme", endpoint.endpoint_id,
                            "feedback.submitted", {"type": "feedback.submitted", "data": {}})
        await repository.insert_deliveries(connection, [delivery])
    return delivery.delivery_id


async def _delivery(pool: asyncpg.Pool, delivery_id: Any) -> reads.DeliveryView:
    async with pool.acquire() as connection:
        found = [d for d in await reads.deliveries(connection, tenant_id="acme")
                 if d.delivery_id == delivery_id]
    return found[0]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "[::ffff:127.0.0.1]"])
async def test_a_host_on_a_private_address_is_never_connected_to_and_not_retried(
    pool: asyncpg.Pool, receivers: list[Receiver], host: str
) -> None:
    receiver = Receiver()
    receivers.append(receiver)
    delivery_id = await _queue(pool, f"http://{host}:{receiver.port}/hook")
    async with delivery_client(timeout=5, allow_private_networks=False) as client:
        sent = await deliver_due(pool, client, POLICY, WebhookMetrics(CollectorRegistry()),
                                 box=BOX, batch_size=10, timeout_seconds=5)
        assert sent == 1
        # Nothing is due again: the refusal is final until the delivery is replayed.
        assert await deliver_due(pool, client, POLICY, WebhookMetrics(CollectorRegistry()),
                                 box=BOX, batch_size=10, timeout_seconds=5) == 0
    delivery = await _delivery(pool, delivery_id)
    assert receiver.requests == []
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("dead", 1, None)
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("refused: ") and "loopback" in delivery.last_error
    assert "FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS" in delivery.last_error


async def test_allowing_private_networks_delivers_to_them(
    pool: asyncpg.Pool, receivers: list[Receiver]
) -> None:
    receiver = Receiver()
    receivers.append(receiver)
    delivery_id = await _queue(pool, f"http://localhost:{receiver.port}/hook")
    async with delivery_client(timeout=5, allow_private_networks=True) as client:
        await deliver_due(pool, client, POLICY, WebhookMetrics(CollectorRegistry()),
                          box=BOX, batch_size=10, timeout_seconds=5)
    assert (await _delivery(pool, delivery_id)).state == "delivered"
    assert receiver.requests[0]["Host"] == f"localhost:{receiver.port}"


def _certificate(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return key, cert


async def test_the_connection_goes_to_the_checked_address_with_the_urls_host_and_server_name(
    pool: asyncpg.Pool, receivers: list[Receiver], tmp_path: Path
) -> None:
    """The name is resolved and checked by the guard itself (a policy that admits only
    127.0.0.1 here, where every public address would do in production); TLS still verifies
    the certificate for the URL's name, sends it as SNI, and the Host header is the name."""
    key, cert = _certificate(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    receiver = Receiver(tls=server_tls)
    receivers.append(receiver)
    client_tls = ssl.create_default_context(cafile=str(cert))
    checked: list[str] = []

    def only_127_0_0_1(address: IPAddress) -> str | None:
        checked.append(str(address))
        return None if address == ipaddress.ip_address("127.0.0.1") else "not the test's"

    delivery_id = await _queue(pool, f"https://localhost:{receiver.port}/hook")
    async with delivery_client(timeout=5, allow_private_networks=False, verify=client_tls,
                               refusal=only_127_0_0_1) as client:
        await deliver_due(pool, client, POLICY, WebhookMetrics(CollectorRegistry()),
                          box=BOX, batch_size=10, timeout_seconds=5)
    delivery = await _delivery(pool, delivery_id)
    assert (delivery.state, delivery.last_error) == ("delivered", None)
    assert checked == ["127.0.0.1"]
    assert receiver.server_names == ["localhost"]
    assert receiver.requests[0]["Host"] == f"localhost:{receiver.port}"


async def test_redirects_are_not_followed_and_no_answer_body_is_kept(
    pool: asyncpg.Pool, receivers: list[Receiver]
) -> None:
    target = Receiver()
    redirecting = Receiver(status=307, location=f"http://127.0.0.1:{target.port}/elsewhere")
    failing = Receiver(status=500)
    receivers += [target, redirecting, failing]
    redirected = await _queue(pool, f"http://127.0.0.1:{redirecting.port}/hook")
    failed = await _queue(pool, f"http://127.0.0.1:{failing.port}/hook")
    async with delivery_client(timeout=5, allow_private_networks=True) as client:
        await deliver_due(pool, client, POLICY, WebhookMetrics(CollectorRegistry()),
                          box=BOX, batch_size=10, timeout_seconds=5)
    assert target.requests == [] and len(redirecting.requests) == 1
    first = await _delivery(pool, redirected)
    assert (first.state, first.last_status) == ("pending", 307)
    assert first.last_error == "HTTP 307 Temporary Redirect (redirects are not followed)"
    second = await _delivery(pool, failed)
    assert (second.state, second.last_status) == ("pending", 500)
    assert second.last_error == "HTTP 500 Internal Server Error"
    async with pool.acquire() as connection:
        stored = await connection.fetchval(
            "SELECT string_agg(coalesce(last_error, ''), ' ') FROM webhooks.deliveries")
    assert LEAK not in stored
