"""Creating an endpoint through the query API and the CLI, on a real PostgreSQL: a URL on a
literal non-public address, `localhost` or another scheme is refused (422; the CLI exits with
the reason) and nothing is written, unless FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS is
true; a public name is accepted."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from feedbackloop.http.auth import ALL_SCOPES
from feedbackloop.settings import Settings
from services.cli.admin import create_key
from services.cli.main import main as cli
from services.query.main import create_app
from tests.infra import create_database

pytestmark = pytest.mark.integration

REFUSED = [
    "http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:8080/hook",
    "http://[::ffff:10.0.0.1]/", "http://2130706433/", "http://localhost:9000/",
    "http://10.0.0.5/hook",
]


async def test_the_api_refuses_endpoints_on_non_public_addresses(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    database_url = await create_database(postgres_url)
    _, key = await create_key(database_url, tenant_id="acme", name="t", scopes=list(ALL_SCOPES))
    settings = Settings(database_url=database_url, kafka_bootstrap_servers=kafka_bootstrap,
                        user_id_hmac_secret="endpoint-checks-0123456789abcdef0123456789",
                        webhooks_allow_private_networks=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://query",
        headers={"Authorization": f"Bearer {key}"},
    ) as query:
        for url in REFUSED:
            answer = await query.post("/v1/webhooks/endpoints", json={
                "url": url, "event_types": ["feedback.submitted"]})
            assert answer.status_code == 422, (url, answer.text)
            assert "FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS" in answer.text, url
        other_scheme = await query.post("/v1/webhooks/endpoints", json={
            "url": "ftp://hooks.example.com/x", "event_types": ["feedback.submitted"]})
        assert other_scheme.status_code == 422
        assert (await query.get("/v1/webhooks/endpoints")).json() == []
        accepted = await query.post("/v1/webhooks/endpoints", json={
            "url": "https://hooks.example.com/feedback", "event_types": ["feedback.submitted"]})
        assert accepted.status_code == 201, accepted.text
        assert [e["url"] for e in (await query.get("/v1/webhooks/endpoints")).json()] == [
            "https://hooks.example.com/feedback"]


async def test_the_cli_refuses_them_unless_private_networks_are_allowed(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database_url = await create_database(postgres_url)
    monkeypatch.setenv("FEEDBACKLOOP_DATABASE_URL", database_url)
    # The key sealing the endpoint's secret is derived from it, as the services derive it.
    monkeypatch.setenv("FEEDBACKLOOP_USER_ID_HMAC_SECRET", "endpoint-checks-0123456789abcdef0123456789")
    create = ["webhooks", "create", "--tenant", "acme", "--url", "http://10.0.0.5/hook",
              "--events", "feedback.submitted"]
    monkeypatch.setenv("FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", "false")
    with pytest.raises(SystemExit, match="private address"):
        await asyncio.to_thread(cli, create)
    assert await asyncio.to_thread(cli, ["webhooks", "list", "--tenant", "acme"]) == 0
    assert "10.0.0.5" not in capsys.readouterr().out
    monkeypatch.setenv("FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS", "true")
    assert await asyncio.to_thread(cli, create) == 0
    assert await asyncio.to_thread(cli, ["webhooks", "list", "--tenant", "acme"]) == 0
    assert "http://10.0.0.5/hook" in capsys.readouterr().out
