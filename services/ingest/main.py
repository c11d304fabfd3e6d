"""Wires the ingest service. No logic here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from feedbackloop.asyncapi import asyncapi_json
from feedbackloop.contract import INPUT_TOPICS
from feedbackloop.http.cors import BrowserCors
from feedbackloop.http.encoding import Utf8Bodies
from feedbackloop.http.key_changes import KeyChangeListener
from feedbackloop.http.limits import BodySizeLimit
from feedbackloop.http.ops import (
    Readiness,
    api_key_verifier,
    database_ready,
    install_ops_routes,
    service_pool,
)
from feedbackloop.http.problems import install_problem_handlers
from feedbackloop.http.tokens import FeedbackTokenSigner, derived_token_secret
from feedbackloop.kafka import EventPublisher
from feedbackloop.observability import IngestMetrics
from feedbackloop.serving import serve
from feedbackloop.settings import Settings
from services.ingest.deps import IngestState
from services.ingest.experiments import DefinitionCache
from services.ingest.experiments import router as experiments_router
from services.ingest.handlers import event_type_of_path, is_event_route, router
from services.ingest.otlp import router as otlp_router
from services.ingest.ranking import router as ranking_router
from services.ingest.refusals import RefusalCounter
from services.ingest.reviews import router as reviews_router
from services.ingest.tokens import router as tokens_router
from services.ingest.widget import widget_router

# Routes a web page may call with a browser-safe key or a signed feedback token (CORS).
BROWSER_PATHS = {"/v1/feedback", "/v1/feedback/retractions"}


INPUT_TOPICS_DOC = (
    "Every accepted event of the topic, keyed <tenant>:<subject>, acknowledged by the broker "
    "before the 202."
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.require_runtime()
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    app = FastAPI(
        title="feedbackloop ingest",
        version="1",
        description="Send what users did with an AI's output. Every accepted event (202) has "
        "been acknowledged by the event log; 503 means retry with the same event ids.",
        lifespan=_lifespan(settings, metrics),
    )
    install_problem_handlers(app)
    for routes in (router, ranking_router, experiments_router, otlp_router, reviews_router,
                   tokens_router,
                   widget_router(settings.widget_dir, settings.widget_demo_tenant)):
        app.include_router(routes)
    _install_middleware(app, settings, metrics)

    async def readiness() -> Readiness:
        state: IngestState = app.state.ingest
        return Readiness({"broker": await state.publisher.is_ready(),
                          "database": await database_ready(app.state.pool)})

    install_ops_routes(
        app, registry=registry, readiness=readiness,
        asyncapi=lambda: asyncapi_json("ingest", settings.topic_names(), publishes=[
            (topic, INPUT_TOPICS_DOC) for topic in INPUT_TOPICS
        ]),
    )
    return app


def _install_middleware(app: FastAPI, settings: Settings, metrics: IngestMetrics) -> None:
    def body_limit(path: str) -> int:
        batches = ("/v1/events", "/v1/traces")
        return settings.max_batch_bytes if path in batches else settings.max_event_bytes

    # Inside the size limit, which bounds what it buffers.
    app.add_middleware(Utf8Bodies, binary_types={"application/x-protobuf"},
                       decompressing_paths={"/v1/traces"})
    app.add_middleware(BodySizeLimit, limit_for=body_limit)
    # Outside the size limit, so a 413 it answers is counted too.
    app.add_middleware(
        RefusalCounter, metrics=metrics, event_route=is_event_route,
        event_type_of=event_type_of_path,
    )
    # Added last, so outermost: refusals by the inner layers carry CORS headers too.
    app.add_middleware(
        BrowserCors,
        paths=BROWSER_PATHS,
        origins=settings.cors_allowed_origins,
        max_age=settings.cors_max_age_seconds,
    )


def _lifespan(
    settings: Settings, metrics: IngestMetrics
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await service_pool(settings)
        publisher = settings.event_publisher()
        starting = asyncio.create_task(publisher.start_when_reachable())
        state = _state(settings, pool, publisher, metrics)
        key_changes = KeyChangeListener(settings.database_url.get_secret_value(), state.verifier)
        listening = asyncio.create_task(key_changes.run())
        app.state.ingest = state
        app.state.pool = pool
        app.state.experiment_definitions = DefinitionCache(pool)
        try:
            yield
        finally:
            for task in (starting, listening):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await publisher.stop()
            await pool.close()

    return lifespan


def _state(
    settings: Settings, pool: asyncpg.Pool, publisher: EventPublisher, metrics: IngestMetrics
) -> IngestState:
    hmac_secret = settings.user_id_hmac_secret.get_secret_value().encode()
    token_secret = settings.feedback_token_secret.get_secret_value().encode()
    tokens = FeedbackTokenSigner(token_secret or derived_token_secret(hmac_secret))
    return IngestState(
        verifier=api_key_verifier(pool, settings, tokens=tokens),
        publisher=publisher,
        topics=settings.topic_names(),
        metrics=metrics,
        hmac_secret=hmac_secret,
        retry_after_seconds=settings.retry_after_seconds,
        max_batch_events=settings.max_batch_events,
        max_batch_bytes=settings.max_batch_bytes,
        otlp_response_id_attribute=settings.otlp_response_id_attribute,
        tokens=tokens,
        token_default_ttl_seconds=settings.feedback_token_default_ttl_seconds,
        token_max_ttl_seconds=settings.feedback_token_max_ttl_seconds,
        customer_min_confidence=settings.learner_customer_min_confidence,
    )


def main() -> None:
    settings = Settings()
    serve(lambda: create_app(settings), host=settings.host, port=settings.ingest_port)


if __name__ == "__main__":
    main()
