"""Wires the trainer consumer service and its background jobs: the training-examples relay
(always), exports to object storage (when an endpoint is set), the failure explainer and the
retraining job (each only when enabled in settings: when off, no model is ever called).
No logic here."""

from datetime import timedelta

import asyncpg
from fastapi import FastAPI

from feedbackloop.contract import Topic, TrainingExampleMessage
from feedbackloop.pipeline.app import build_consumer_app, consumer_config
from feedbackloop.pipeline.jobs import Job
from feedbackloop.pipeline.outbox import settings_publisher
from feedbackloop.serving import serve
from feedbackloop.settings import Settings
from services.trainer.exports.object_store import object_store
from services.trainer.handlers import SPEC
from services.trainer.jobs.explanations import explanations_job_from_settings
from services.trainer.jobs.object_export import object_export_job
from services.trainer.jobs.relay import training_relay_job
from services.trainer.jobs.retraining import retraining_job_from_settings


def training_jobs(pool: asyncpg.Pool, settings: Settings) -> list[Job]:
    """The trainer's jobs. `pool` needs room for one connection per job besides the
    consumer's (a singleton job holds its lock connection for the run)."""
    jobs = [training_relay_job(pool, settings, settings_publisher(settings))]
    store = object_store(settings)
    if store is not None and settings.object_export_interval_seconds > 0:
        jobs.append(object_export_job(
            pool, store, interval=settings.object_export_interval_seconds,
            settle=timedelta(seconds=settings.object_export_settle_seconds),
            part_rows=settings.object_export_part_rows,
        ))
    if settings.failure_explanations_enabled:
        jobs.append(explanations_job_from_settings(pool, settings))
    if settings.retraining_enabled:
        jobs.append(retraining_job_from_settings(pool, settings))
    return jobs


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.require_runtime()
    return build_consumer_app(
        SPEC, consumer_config(settings),
        jobs=lambda pool, registry: training_jobs(pool, settings),
        publishes=[(Topic.TRAINING_EXAMPLES, TrainingExampleMessage,
                    "Training examples, their revisions and their retractions "
                    "(feedbackloop.contract.training_examples), keyed <tenant>:<conversation>.")],
    )


def main() -> None:
    settings = Settings()
    serve(lambda: create_app(settings), host=settings.host, port=settings.trainer_port)


if __name__ == "__main__":
    main()
