"""Wires the webhooks consumer service, its delivery jobs and its retention job. No logic here."""

from fastapi import FastAPI

from feedbackloop.pipeline.app import build_consumer_app, consumer_config
from feedbackloop.serving import serve
from feedbackloop.settings import Settings
from services.webhooks.delivery import delivery_jobs
from services.webhooks.handlers import SPEC
from services.webhooks.retention import prune_job


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.require_runtime()
    return build_consumer_app(
        SPEC, consumer_config(settings),
        jobs=lambda pool, registry: [*delivery_jobs(pool, registry, settings),
                                     prune_job(pool, settings)],
    )


def main() -> None:
    settings = Settings()
    serve(lambda: create_app(settings), host=settings.host, port=settings.webhooks_port)


if __name__ == "__main__":
    main()
