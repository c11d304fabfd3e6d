"""The webhooks consumer and its delivery job on a real PostgreSQL, with a real receiver:
deliveries are written in the pipeline's transaction, once however often a batch is redelivered,
and three senders working the same outbox at once send each delivery exactly once."""

from __future__ import annotations

import asyncio
import secrets
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook

from feedbackloop.contract import load_samples
from feedbackloop.observability import ConsumerMetrics, WebhookMetrics
from feedbackloop.pipeline.consumer import BatchPipeline
from feedbackloop.postgres import create_pool
from services.webhooks import admin, reads, repository
from services.webhooks.delivery import deliver_due
from services.webhooks.handlers import SPEC
from services.webhooks.processing import Delivery, RetryPolicy
from services.webhooks.sealing import SecretBox
from tests.infra import CollectedDeadLetters, create_database, records_of

pytestmark = pytest.mark.integration

BOX = SecretBox(secrets.token_bytes(32))  # seals the endpoints' secrets


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the three senders connect at once


class Receiver:
    """Counts verified requests per webhook-id; answers slowly, so senders overlap."""

    def __init__(self) -> None:
        self.secret = ""
        self.ids: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                Webhook(outer.secret).verify(body, dict(self.headers.items()))
                outer.ids.append(self.headers["webhook-id"])
                threading.Event().wait(0.05)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


async def test_deliveries_are_written_once_and_sent_once_by_concurrent_senders(
    postgres_url: str, receiver: Receiver
) -> None:
    database = await create_database(postgres_url)
    pool = await create_pool(database, min_size=1, max_size=6)
    try:
        async with pool.acquire() as connection:
            endpoint, receiver.secret = await admin.create_endpoint(
                connection, box=BOX, tenant_id="acme", url=receiver.url,
                event_types=["feedback.submitted", "feedback.changed", "feedback.retracted"],
                allow_private_networks=True,  # the receiver is on 127.0.0.1
            )
        pipeline = BatchPipeline(SPEC, pool, CollectedDeadLetters(),
                                 ConsumerMetrics(CollectorRegistry(), "webhooks"))
        docs = load_samples()["feedback.submitted"] + load_samples()["feedback.retracted"]
        records = records_of([orjson.dumps(doc) for doc in docs])
        first = await pipeline.process_batch(records)
        again = await pipeline.process_batch(records)  # a redelivered batch
        assert (first.applied, again.applied, again.duplicates) == (len(docs), 0, len(docs))
        async with pool.acquire() as connection:
            written = await reads.deliveries(connection, tenant_id="acme", limit=1_000)
            # Plus many of another tenant's endpoint's shape, to give the senders a backlog.
            await repository.insert_deliveries(connection, [
                Delivery(uuid.uuid4(), "acme", endpoint.endpoint_id, "feedback.submitted",
                         {"type": "feedback.submitted", "data": {"n": n}})
                for n in range(60)
            ])
        types = sorted(d.event_type for d in written)
        # resp-1's user: thumb, rating, comment, correction (4 identities, each new), resp-2's
        # replay, the unlogged thumb, the anonymous rating: 7 submitted; the thumb and
        # correction retractions of resp-3 retract nothing that was there; the anonymous
        # retraction neither.
        assert types == ["feedback.submitted"] * 7
        policy = RetryPolicy(max_attempts=3, base_seconds=0.1, max_seconds=0.1)
        metrics = WebhookMetrics(CollectorRegistry())
        async with httpx.AsyncClient(timeout=5) as client:

            async def sender() -> int:
                sent = 0
                while done := await deliver_due(pool, client, policy, metrics, box=BOX, batch_size=10,
                                                timeout_seconds=5):
                    sent += done
                return sent

            counts = await asyncio.gather(sender(), sender(), sender())
        assert len(set(receiver.ids)) == 67 and len(receiver.ids) == 67, counts
        assert sum(counts) == 67
        async with pool.acquire() as connection:
            states = {d.state for d in await reads.deliveries(connection, tenant_id="acme",
                                                              limit=1_000)}
            assert states == {"delivered"}
            assert await reads.deliveries(connection, tenant_id="other") == []
    finally:
        await pool.close()
