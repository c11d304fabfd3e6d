"""Wires the metrics consumer service. No logic here."""

from datetime import timedelta

from fastapi import FastAPI

from feedbackloop.pipeline.app import build_consumer_app, consumer_config
from feedbackloop.serving import serve
from feedbackloop.settings import Settings
from services.metrics.handlers import build_spec


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.require_runtime()
    spec = build_spec(timedelta(seconds=settings.metrics_lateness_seconds))
    return build_consumer_app(spec, consumer_config(settings))


def main() -> None:
    settings = Settings()
    serve(lambda: create_app(settings), host=settings.host, port=settings.metrics_port)


if __name__ == "__main__":
    main()
