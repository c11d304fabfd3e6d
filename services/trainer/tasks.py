"""The trainer's background work beside its consumer, as one coroutine to run for the life of
the service: the training-examples relay (always), exports to object storage (when an endpoint
is set), the failure explainer and the retraining job (each only when enabled in settings:
when off, no model is ever called)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg

from feedbackloop.contract import Topic
from feedbackloop.kafka import EventPublisher
from feedbackloop.settings import Settings
from services.trainer.explanations import build_client, explain_failures_forever
from services.trainer.object_exports import export_forever, object_store
from services.trainer.relay import relay_forever
from services.trainer.retraining import RetrainingConfig, retrain_forever


async def run_training_tasks(pool: asyncpg.Pool, settings: Settings) -> None:
    """Runs until cancelled; the publisher is closed on the way out. `pool` needs room for
    one connection per enabled task besides the consumer's (each holds a lock connection)."""
    publisher = EventPublisher(
        settings.kafka_connection(),
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=settings.kafka_linger_ms,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        timeout_seconds=settings.publish_timeout_seconds,
    )
    try:
        await publisher.start_when_reachable(settings.consumer_retry_max_seconds)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(relay_forever(
                pool, publisher.publish,
                topic=settings.topic_names().physical(Topic.TRAINING_EXAMPLES),
                batch_size=settings.training_relay_batch_size,
                idle_seconds=settings.training_relay_interval_seconds,
                retry_max_seconds=settings.consumer_retry_max_seconds,
            ))
            store = object_store(settings)
            if store is not None and settings.object_export_interval_seconds > 0:
                tasks.create_task(export_forever(
                    pool, store, interval=settings.object_export_interval_seconds,
                    settle=timedelta(seconds=settings.object_export_settle_seconds),
                ))
            if settings.failure_explanations_enabled:
                key = settings.failure_explanations_api_key
                tasks.create_task(explain_failures_forever(
                    pool,
                    build_client(
                        base_url=settings.failure_explanations_base_url,
                        api_key=key.get_secret_value() if key else "",
                        timeout_seconds=settings.failure_explanations_timeout_seconds,
                    ),
                    model=settings.failure_explanations_model,
                    requests_per_minute=settings.failure_explanations_requests_per_minute,
                ))
            if settings.retraining_enabled:
                key = settings.retraining_api_key
                client = None
                if settings.retraining_mode == "fine_tune":
                    client = build_client(
                        base_url=settings.retraining_base_url,
                        api_key=key.get_secret_value() if key else "",
                        timeout_seconds=120.0,
                    )
                tasks.create_task(retrain_forever(
                    pool,
                    RetrainingConfig(
                        export_dir=settings.retraining_export_dir,
                        mode=settings.retraining_mode,
                        method=settings.retraining_method,
                        min_not_useful=settings.retraining_min_not_useful,
                        lookback=timedelta(seconds=settings.retraining_interval_seconds),
                        provider=settings.retraining_provider,
                        base_url=settings.retraining_base_url,
                        model=settings.retraining_model,
                    ),
                    interval=timedelta(seconds=settings.retraining_interval_seconds),
                    client=client,
                ))
    finally:
        await publisher.stop()
