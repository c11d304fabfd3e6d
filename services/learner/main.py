"""Wires the learner consumer service and its refit loop. No logic here."""

import asyncpg
from fastapi import FastAPI
from faststream.kafka import KafkaBroker

from feedbackloop.contract import SegmentWeightsVersion, Topic
from feedbackloop.pipeline.app import build_consumer_app, consumer_config
from feedbackloop.serving import serve
from feedbackloop.settings import Settings
from services.learner.handlers import SPEC
from services.learner.refits import RefitConfig, run_refits


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.require_runtime()
    config = RefitConfig.from_settings(settings)
    weights_topic = settings.topic_names().physical(Topic.WEIGHTS)

    async def refits(pool: asyncpg.Pool, broker: KafkaBroker) -> None:
        async def publish(key: str, value: bytes) -> None:
            await broker.publish(value, topic=weights_topic, key=key.encode())

        await run_refits(pool, publish, config)

    return build_consumer_app(
        SPEC, consumer_config(settings), background=refits,
        publishes=[(Topic.WEIGHTS, SegmentWeightsVersion,
                    "Every promoted version of a segment's learned weights "
                    "(feedbackloop.contract.weights), keyed <tenant>:<segment>.")],
    )


def main() -> None:
    settings = Settings()
    serve(lambda: create_app(settings), host=settings.host, port=settings.learner_port)


if __name__ == "__main__":
    main()
