"""Wires the query service. No logic here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry

from feedbackloop.asyncapi import asyncapi_json
from feedbackloop.contract import Topic
from feedbackloop.http.auth import ApiKeyVerifier
from feedbackloop.http.encoding import Utf8Bodies
from feedbackloop.http.key_changes import KeyChangeListener
from feedbackloop.http.limits import BodySizeLimit
from feedbackloop.http.problems import install_problem_handlers
from feedbackloop.http.ratelimit import TokenBucketLimiter
from feedbackloop.observability import CONTENT_TYPE_LATEST, JobMetrics, render
from feedbackloop.pipeline.jobs import Job, JobRunner
from feedbackloop.postgres import create_pool
from feedbackloop.serving import serve
from feedbackloop.settings import Settings
from services.query.alert_evaluator import alert_config, alert_evaluation_job
from services.query.alert_relay import alert_relay_job
from services.query.analytics import router as analytics_router
from services.query.console.app import close_console, install_console, open_console
from services.query.deps import QueryState
from services.query.gauges import AnalyticsGauges
from services.query.handlers import router
from services.query.recommendations import router as recommendations_router
from services.query.reviews import router as reviews_router
from services.query.training import router as training_router
from services.query.webhooks import router as webhooks_router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.require_runtime()
    registry = CollectorRegistry()
    job_metrics = JobMetrics(registry)
    gauges = AnalyticsGauges(
        registry,
        action_types=settings.analytics_label_action_types,
        models=settings.analytics_label_models,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.database_url.get_secret_value(),
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
        )
        verifier = ApiKeyVerifier(
            pool,
            cache_seconds=settings.api_key_cache_seconds,
            limiter=TokenBucketLimiter(
                rate_per_second=settings.rate_limit_requests_per_second,
                burst=settings.rate_limit_burst,
            ),
        )
        key_changes = KeyChangeListener(settings.database_url.get_secret_value(), verifier)
        app.state.query = QueryState(
            pool=pool,
            verifier=verifier,
            hmac_secret=settings.user_id_hmac_secret.get_secret_value().encode(),
        )
        app.state.console = open_console(app, settings)
        app.state.jobs = JobRunner([
            Job("api-key-changes", key_changes.run_once, interval=0.2,
                retry_max_seconds=key_changes.retry_max_seconds, close=key_changes.close),
            alert_evaluation_job(
                pool, alert_config(settings),
                interval_seconds=settings.alert_evaluation_interval_seconds, gauges=gauges,
            ),
            alert_relay_job(pool, settings),
        ], job_metrics)
        app.state.jobs.start()
        try:
            yield
        finally:
            await app.state.jobs.stop()
            await close_console(app.state.console)
            await pool.close()

    app = FastAPI(
        title="feedbackloop query",
        version="1",
        description="Analytics and user feedback history, read from the consumers' read models.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.include_router(router)
    app.include_router(recommendations_router)
    app.include_router(analytics_router)
    app.include_router(training_router)
    app.include_router(reviews_router)
    app.include_router(webhooks_router)
    # Inside the size limit, which bounds what it buffers.
    app.add_middleware(Utf8Bodies)
    app.add_middleware(BodySizeLimit, limit_for=lambda path: 65_536)
    # Last, so its headers (the CSP) are on every console answer, refusals included.
    install_console(app, settings)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(response: Response) -> dict[str, object]:
        try:
            database = await app.state.query.pool.fetchval("SELECT 1") == 1
        except Exception:
            database = False
        # The jobs are reported, not required: analytics serve while the broker is away (alert
        # changes wait in the outbox), and the API-key cache falls back on its TTL while the
        # listener reconnects.
        jobs: JobRunner = app.state.jobs
        response.status_code = 200 if database else 503
        return {"status": "ready" if database else "not ready", "checks": {"database": database},
                "jobs": jobs.checks(), "job_errors": jobs.errors()}

    @app.get("/metrics", tags=["ops"])
    async def prometheus_metrics() -> Response:
        return Response(render(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi.json", tags=["ops"])
    async def asyncapi() -> Response:
        document = asyncapi_json("query", settings.topic_names(), publishes=[(
            Topic.ALERTS, "Each change of an alert's state (feedbackloop.contract.alerts), "
            "keyed <tenant>:<rule>, through the outbox of the evaluation that made it.",
        )])
        return Response(document, media_type="application/json")

    return app


def main() -> None:
    settings = Settings()
    serve(lambda: create_app(settings), host=settings.host, port=settings.query_port)


if __name__ == "__main__":
    main()
