"""Wires the trainer consumer service and its background tasks (the training-examples relay,
and failure explanations and retraining when enabled). No logic here."""

import asyncpg
from fastapi import FastAPI
from faststream.kafka import KafkaBroker

from feedbackloop.contract import Topic, TrainingExampleMessage
from feedbackloop.pipeline.app import build_consumer_app, consumer_config
from feedbackloop.serving import serve
from feedbackloop.settings import Settings
from services.trainer.handlers import SPEC
from services.trainer.tasks import run_training_tasks


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.require_runtime()

    async def training_tasks(pool: asyncpg.Pool, broker: KafkaBroker) -> None:
        await run_training_tasks(pool, settings)

    return build_consumer_app(
        SPEC, consumer_config(settings), background=training_tasks,
        publishes=[(Topic.TRAINING_EXAMPLES, TrainingExampleMessage,
                    "Training examples, their revisions and their retractions "
                    "(feedbackloop.contract.training_examples), keyed <tenant>:<conversation>.")],
    )


def main() -> None:
    settings = Settings()
    serve(lambda: create_app(settings), host=settings.host, port=settings.trainer_port)


if __name__ == "__main__":
    main()
