"""Wires the query service. No logic here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from feedbackloop.asyncapi import asyncapi_json
from feedbackloop.contract import Topic
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
from feedbackloop.observability import JobMetrics
from feedbackloop.pipeline.jobs import Job, JobRunner
from feedbackloop.serving import serve
from feedbackloop.settings import Settings
from services.query.alert_evaluator import alert_config, alert_evaluation_job
from services.query.alert_relay import alert_changes_prune_job, alert_relay_job
from services.query.analytics import router as analytics_router
from services.query.console.app import close_console, install_console, open_console
from services.query.deps import QueryState
from services.query.experiments import router as experiments_router
from services.query.experiments_gauges import ExperimentGauges, experiment_gauges_job
from services.query.gauges import AnalyticsGauges
from services.query.handlers import router
from services.query.recommendations import router as recommendations_router
from services.query.reviews import router as reviews_router
from services.query.training import router as training_router
from services.query.webhooks import router as webhooks_router
from services.webhooks.admin import SecretBox

ALERTS_TOPIC = (
    "Each change of an alert's state (feedbackloop.contract.alerts), keyed <tenant>:<rule>, "
    "through the outbox of the evaluation that made it."
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.require_runtime()
    registry = CollectorRegistry()
    app = FastAPI(
        title="feedbackloop query",
        version="1",
        description="Analytics and user feedback history, read from the consumers' read models.",
        lifespan=_lifespan(settings, registry),
    )
    install_problem_handlers(app)
    for routes in (router, recommendations_router, analytics_router, training_router,
                   reviews_router, webhooks_router, experiments_router):
        app.include_router(routes)
    app.state.webhooks_allow_private_networks = settings.webhooks_allow_private_networks
    app.state.webhook_secrets = SecretBox.from_settings(settings)
    # Inside the size limit, which bounds what it buffers.
    app.add_middleware(Utf8Bodies)
    app.add_middleware(BodySizeLimit, limit_for=lambda path: 65_536)
    # Last, so its headers (the CSP) are on every console answer, refusals included.
    install_console(app, settings)

    async def readiness() -> Readiness:
        # The jobs are reported, not required: analytics serve while the broker is away (alert
        # changes wait in the outbox), and the API-key cache falls back on its TTL while the
        # listener reconnects.
        jobs: JobRunner = app.state.jobs
        return Readiness({"database": await database_ready(app.state.query.pool)},
                         {"jobs": jobs.checks(), "job_errors": jobs.errors()})

    install_ops_routes(
        app, registry=registry, readiness=readiness,
        asyncapi=lambda: asyncapi_json(
            "query", settings.topic_names(), publishes=[(Topic.ALERTS, ALERTS_TOPIC)]
        ),
    )
    return app


def _lifespan(
    settings: Settings, registry: CollectorRegistry
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    job_metrics = JobMetrics(registry)
    experiment_gauges = ExperimentGauges(registry)
    gauges = AnalyticsGauges(
        registry,
        action_types=settings.analytics_label_action_types,
        models=settings.analytics_label_models,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await service_pool(settings)
        verifier = api_key_verifier(pool, settings)
        key_changes = KeyChangeListener(settings.database_url.get_secret_value(), verifier)
        app.state.query = QueryState(
            pool=pool,
            verifier=verifier,
            hmac_secret=settings.user_id_hmac_secret.get_secret_value().encode(),
        )
        app.state.console = open_console(app, settings)
        app.state.jobs = JobRunner(
            _jobs(pool, settings, key_changes, gauges, experiment_gauges), job_metrics
        )
        app.state.jobs.start()
        try:
            yield
        finally:
            await app.state.jobs.stop()
            await close_console(app.state.console)
            await pool.close()

    return lifespan


def _jobs(
    pool: asyncpg.Pool, settings: Settings, key_changes: KeyChangeListener,
    gauges: AnalyticsGauges, experiment_gauges: ExperimentGauges,
) -> list[Job]:
    """The query service's background work: each a job, reported in /readyz and the metrics."""
    return [
        Job("api-key-changes", key_changes.run_once, interval=0.2,
            retry_max_seconds=key_changes.retry_max_seconds, close=key_changes.close),
        alert_evaluation_job(
            pool, alert_config(settings),
            interval_seconds=settings.alert_evaluation_interval_seconds, gauges=gauges,
        ),
        alert_relay_job(pool, settings),
        alert_changes_prune_job(pool, settings),
        experiment_gauges_job(pool, experiment_gauges),
    ]


def main() -> None:
    settings = Settings()
    serve(lambda: create_app(settings), host=settings.host, port=settings.query_port)


if __name__ == "__main__":
    main()
