"""Retention on a real PostgreSQL: the webhooks job deletes deliveries delivered longer ago than
the retention and nothing else; the query service's job deletes alert changes published longer
ago than theirs and never an unpublished one; both drain a backlog in batches."""

from __future__ import annotations

import secrets
import uuid

import asyncpg
import orjson
import pytest

from feedbackloop.postgres import create_pool
from feedbackloop.settings import Settings
from services.query import repository as query_repository
from services.query.alert_relay import alert_changes_prune_job
from services.webhooks import admin, repository
from services.webhooks.processing import Delivery
from services.webhooks.retention import prune_job
from services.webhooks.sealing import SecretBox
from tests.infra import create_database

pytestmark = pytest.mark.integration

BOX = SecretBox(secrets.token_bytes(32))  # seals the endpoints' secrets

SETTINGS = Settings(webhooks_delivered_retention_days=30, alert_changes_retention_days=7)


async def _deliveries(connection: asyncpg.Connection, endpoint_id: uuid.UUID,
                      state: str, age_days: float, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    await repository.insert_deliveries(connection, [
        Delivery(i, "acme", endpoint_id, "feedback.submitted", {"type": "feedback.submitted"})
        for i in ids
    ])
    await connection.execute(
        """
        UPDATE webhooks.deliveries SET state = $2,
            created_at = now() - make_interval(secs => $3::float8 * 86400),
            delivered_at = CASE WHEN $2 = 'delivered'
                                THEN now() - make_interval(secs => $3::float8 * 86400) END
        WHERE delivery_id = ANY($1::uuid[])
        """, ids, state, age_days)
    return ids


async def test_delivered_deliveries_past_their_retention_are_pruned_and_nothing_else(
    postgres_url: str,
) -> None:
    pool = await create_pool(await create_database(postgres_url), min_size=1, max_size=2)
    try:
        async with pool.acquire() as connection:
            endpoint, _ = await admin.create_endpoint(
                connection, box=BOX, tenant_id="acme", url="https://hooks.example.com/x",
                event_types=["feedback.submitted"])
            old_delivered = await _deliveries(connection, endpoint.endpoint_id, "delivered", 31, 7)
            kept = (await _deliveries(connection, endpoint.endpoint_id, "delivered", 29, 2)
                    + await _deliveries(connection, endpoint.endpoint_id, "dead", 90, 2)
                    + await _deliveries(connection, endpoint.endpoint_id, "pending", 90, 2))
            # A batch at a time: 3, 3, 1, then nothing.
            batches = [await repository.prune_delivered(connection, older_than_days=30, limit=3)
                       for _ in range(4)]
            assert batches == [3, 3, 1, 0]
            remaining = {row["delivery_id"] for row in await connection.fetch(
                "SELECT delivery_id FROM webhooks.deliveries")}
            assert remaining == set(kept) and not remaining & set(old_delivered)
            # The job itself (with its lock) over a fresh old one.
            await _deliveries(connection, endpoint.endpoint_id, "delivered", 40, 1)
        job = prune_job(pool, SETTINGS)
        assert job.name == "webhook-retention"
        assert await job.run() == 1
        assert await job.run() == 0
        async with pool.acquire() as connection:
            assert await connection.fetchval("SELECT count(*) FROM webhooks.deliveries") == 6
            # A retention in fractions of a day is kept as such, not truncated to whole days.
            await connection.execute("DELETE FROM webhooks.deliveries")
            half_day = await _deliveries(connection, endpoint.endpoint_id, "delivered", 0.6, 1)
            recent = await _deliveries(connection, endpoint.endpoint_id, "delivered", 0.4, 1)
            assert await repository.prune_delivered(connection, older_than_days=0.5,
                                                    limit=10) == 1
            assert [row["delivery_id"] for row in await connection.fetch(
                "SELECT delivery_id FROM webhooks.deliveries")] == recent
            assert half_day
    finally:
        await pool.close()


async def test_published_alert_changes_past_their_retention_are_pruned(
    postgres_url: str,
) -> None:
    pool = await create_pool(await create_database(postgres_url), min_size=1, max_size=2)
    try:
        async with pool.acquire() as connection:
            async def change(published_days_ago: float | None) -> uuid.UUID:
                event_id = uuid.uuid4()
                await connection.execute(
                    "INSERT INTO query.alert_changes (event_id, tenant_id, rule, document, "
                    "created_at, published_at) VALUES ($1, 'acme', 'approval_rate', $2, "
                    "now() - interval '60 days', "
                    "now() - make_interval(secs => $3::float8 * 86400))",
                    event_id, orjson.dumps({"rule": "approval_rate"}).decode(),
                    published_days_ago)
                return event_id

            old = [await change(8), await change(30)]
            kept = [await change(6), await change(None), await change(None)]
            assert await query_repository.prune_published_alert_changes(
                connection, older_than_days=7, limit=1) == 1
        job = alert_changes_prune_job(pool, SETTINGS)
        assert await job.run() == 1
        assert await job.run() == 0
        async with pool.acquire() as connection:
            remaining = {row["event_id"] for row in await connection.fetch(
                "SELECT event_id FROM query.alert_changes")}
            assert remaining == set(kept) and not remaining & set(old)
            # The unpublished ones are still the relay's to publish.
            assert len(await query_repository.pending_alert_changes(connection, limit=10)) == 2
    finally:
        await pool.close()
