"""Wires the profiles consumer service. No logic here."""

from fastapi import FastAPI

from feedbackloop.pipeline.app import build_consumer_app, consumer_config
from feedbackloop.serving import serve
from feedbackloop.settings import Settings
from services.profiles.handlers import SPEC


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.require_runtime()
    return build_consumer_app(SPEC, consumer_config(settings))


def main() -> None:
    settings = Settings()
    serve(lambda: create_app(settings), host=settings.host, port=settings.profiles_port)


if __name__ == "__main__":
    main()
