"""Wires the learner consumer service and its jobs: the refits and the weights relay.
No logic here."""

import asyncpg
from fastapi import FastAPI

from feedbackloop.contract import SegmentWeightsVersion, Topic
from feedbackloop.pipeline.app import build_consumer_app, consumer_config
from feedbackloop.pipeline.jobs import Job
from feedbackloop.pipeline.outbox import settings_publisher
from feedbackloop.serving import serve
from feedbackloop.settings import Settings
from services.learner.handlers import SPEC
from services.learner.refits.config import RefitConfig
from services.learner.refits.job import refits_job
from services.learner.weights_outbox import weights_relay_job


def learner_jobs(pool: asyncpg.Pool, settings: Settings) -> list[Job]:
    return [
        refits_job(pool, RefitConfig.from_settings(settings)),
        weights_relay_job(pool, settings, settings_publisher(settings)),
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.require_runtime()
    return build_consumer_app(
        SPEC, consumer_config(settings),
        jobs=lambda pool, registry: learner_jobs(pool, settings),
        publishes=[(Topic.WEIGHTS, SegmentWeightsVersion,
                    "Every promoted version of a segment's learned weights "
                    "(feedbackloop.contract.weights), keyed <tenant>:<segment>.")],
    )


def main() -> None:
    settings = Settings()
    serve(lambda: create_app(settings), host=settings.host, port=settings.learner_port)


if __name__ == "__main__":
    main()
