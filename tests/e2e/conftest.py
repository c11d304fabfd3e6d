"""The seven services as real processes over HTTP, on the session's broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from feedbackloop.contract import TopicNames
from feedbackloop.http.auth import ALL_SCOPES
from services.cli.admin import create_key
from tests.infra import (
    ServiceProcesses,
    create_database,
    create_topics,
    idempotence_supported,
    unique_prefix,
)

ALL_SERVICES = ("ingest", "profiles", "learner", "trainer", "metrics", "webhooks", "query")
HMAC_SECRET = "e2e-secret-0123456789abcdef0123456789abcdef"


@dataclass
class Stack:
    services: ServiceProcesses
    names: TopicNames
    database_url: str
    bootstrap: str
    api_key: str

    def ingest(self, key: str | None = None) -> httpx.AsyncClient:
        return _client(self.services.url("ingest"), key or self.api_key)

    def query(self, key: str | None = None) -> httpx.AsyncClient:
        return _client(self.services.url("query"), key or self.api_key)

    async def key(self, tenant: str, scopes: list[str]) -> str:
        _, key = await create_key(self.database_url, tenant_id=tenant, name="test", scopes=scopes)
        return key


def _client(base_url: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def service_env(bootstrap: str, database_url: str, prefix: str) -> dict[str, str]:
    return dict(os.environ) | {
        "FEEDBACKLOOP_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "FEEDBACKLOOP_DATABASE_URL": database_url,
        "FEEDBACKLOOP_KAFKA_TOPIC_PREFIX": prefix,
        "FEEDBACKLOOP_USER_ID_HMAC_SECRET": HMAC_SECRET,
        "FEEDBACKLOOP_KAFKA_ENABLE_IDEMPOTENCE": str(idempotence_supported(bootstrap)).lower(),
        "FEEDBACKLOOP_CONSUMER_BATCH_TIMEOUT_MS": "50",
        "FEEDBACKLOOP_PUBLISH_TIMEOUT_SECONDS": "3",
        "FEEDBACKLOOP_API_KEY_CACHE_SECONDS": "0",
        # Refits within seconds, so the recommendation loop can be seen closing.
        "FEEDBACKLOOP_LEARNER_REFIT_POLL_SECONDS": "0.5",
        "FEEDBACKLOOP_LEARNER_REFIT_MIN_NEW_CHOICES": "20",
        "FEEDBACKLOOP_LEARNER_REFIT_INTERVAL_SECONDS": "3",
        "FEEDBACKLOOP_LEARNER_MIN_CHOICES": "20",
        # The webhook receivers of the tests listen on 127.0.0.1.
        "FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS": "true",
    }


@pytest.fixture(scope="module")
def stack(
    postgres_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    prefix = unique_prefix()
    database_url = asyncio.run(create_database(postgres_url))
    names = asyncio.run(create_topics(kafka_bootstrap, prefix))
    _, api_key = asyncio.run(
        create_key(database_url, tenant_id="acme", name="e2e", scopes=list(ALL_SCOPES))
    )
    log_dir: Path = tmp_path_factory.mktemp("services")
    services = ServiceProcesses(service_env(kafka_bootstrap, database_url, prefix), log_dir)
    try:
        services.start(ALL_SERVICES)
        yield Stack(services, names, database_url, kafka_bootstrap, api_key)
    finally:
        services.stop()


@pytest.fixture
async def ingest(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with stack.ingest() as client:
        yield client


@pytest.fixture
async def query(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with stack.query() as client:
        yield client
