"""The operations routes of an HTTP service (ingest, query): `/healthz`, `/readyz`, `/metrics`
and `/asyncapi.json`; and the database pool and API-key verifier both build from the shared
settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import asyncpg
from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry

from feedbackloop.http.auth import ApiKeyVerifier
from feedbackloop.http.ratelimit import TokenBucketLimiter
from feedbackloop.http.tokens import FeedbackTokenSigner
from feedbackloop.observability import CONTENT_TYPE_LATEST, render
from feedbackloop.postgres import create_pool
from feedbackloop.settings import Settings


@dataclass(frozen=True)
class Readiness:
    """`checks` must all pass for the service to be ready; `report` is shown beside them."""

    checks: Mapping[str, bool]
    report: Mapping[str, object] = field(default_factory=dict)


def install_ops_routes(
    app: FastAPI,
    *,
    registry: CollectorRegistry,
    readiness: Callable[[], Awaitable[Readiness]],
    asyncapi: Callable[[], bytes],
) -> None:
    """`/readyz` answers 503 unless every check of `readiness()` passes; `/metrics` renders
    `registry`; `/asyncapi.json` is `asyncapi()` (the topics the service reads and writes)."""

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(response: Response) -> dict[str, object]:
        state = await readiness()
        ready = all(state.checks.values())
        response.status_code = 200 if ready else 503
        return {"status": "ready" if ready else "not ready", "checks": dict(state.checks),
                **state.report}

    @app.get("/metrics", tags=["ops"])
    async def prometheus_metrics() -> Response:
        return Response(render(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi.json", tags=["ops"])
    async def asyncapi_document() -> Response:
        return Response(asyncapi(), media_type="application/json")


async def service_pool(settings: Settings) -> asyncpg.Pool:
    """The service's pool, sized by the settings."""
    return await create_pool(
        settings.database_url.get_secret_value(),
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
    )


async def database_ready(pool: asyncpg.Pool) -> bool:
    try:
        return bool(await pool.fetchval("SELECT 1") == 1)
    except Exception:
        return False


def api_key_verifier(
    pool: asyncpg.Pool, settings: Settings, *, tokens: FeedbackTokenSigner | None = None
) -> ApiKeyVerifier:
    """The verifier of API keys (and feedback tokens, when `tokens` is given), with the cache
    and the per-key rate limit of the settings."""
    return ApiKeyVerifier(
        pool,
        cache_seconds=settings.api_key_cache_seconds,
        limiter=TokenBucketLimiter(
            rate_per_second=settings.rate_limit_requests_per_second,
            burst=settings.rate_limit_burst,
        ),
        tokens=tokens,
    )
