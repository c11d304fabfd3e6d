"""Metric names and labels, declared once; one registry per process.

Label values come from bounded sets: anything outside a set is reported as `other`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from feedbackloop.contract import EVENT_TYPES

OTHER = "other"
BOUNDED_EVENT_TYPES = frozenset(EVENT_TYPES)
INGEST_OUTCOMES = frozenset(
    {"accepted", "invalid", "unavailable", "too_large", "unauthorized", "rate_limited", "error"}
)
CONSUMER_OUTCOMES = frozenset({"applied", "duplicate", "ignored", "dead_lettered"})

__all__ = [
    "CONTENT_TYPE_LATEST", "ConsumerMetrics", "IngestMetrics", "JobMetrics", "WebhookMetrics",
    "bounded", "render",
]


def bounded(value: str | None, allowed: Iterable[str]) -> str:
    return value if value is not None and value in allowed else OTHER


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "feedbackloop_ingest_events_total",
            "Events received by ingest, by type and outcome.",
            ["event_type", "outcome"],
            registry=registry,
        )
        self.otlp_spans = Counter(
            "feedbackloop_ingest_otlp_spans_total",
            "Spans received on /v1/traces: made an event, ignored (not GenAI) or rejected.",
            ["outcome"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "feedbackloop_ingest_publish_seconds",
            "Time from publish to broker acknowledgement, per request.",
            registry=registry,
        )

    def count(self, event_type: str | None, outcome: str, amount: int = 1) -> None:
        self.events.labels(
            bounded(event_type, BOUNDED_EVENT_TYPES), bounded(outcome, INGEST_OUTCOMES)
        ).inc(amount)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.service = service
        self.messages = Counter(
            "feedbackloop_consumer_messages_total",
            "Messages handled by a consumer, by outcome.",
            ["service", "outcome"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "feedbackloop_consumer_batch_seconds",
            "Time to process and commit one batch.",
            ["service"],
            registry=registry,
        )
        self.transient_failures = Counter(
            "feedbackloop_consumer_transient_failures_total",
            "Transient failures (Postgres or broker unavailable) retried with backoff.",
            ["service"],
            registry=registry,
        )
        self.last_commit = Gauge(
            "feedbackloop_consumer_last_commit_timestamp_seconds",
            "Unix time of the last offset commit.",
            ["service"],
            registry=registry,
        )
        # Topic values are the physical names of the consumer's own input topics: a fixed set
        # per deployment, a handful of series per service.
        self.lag = Gauge(
            "feedbackloop_consumer_lag_messages",
            "Records on the partitions this replica holds that it has not committed yet: "
            "the end offset minus the first offset of the batch in hand (or the fetch position).",
            ["service", "topic"],
            registry=registry,
        )

    def count(self, outcome: str, amount: int = 1) -> None:
        if amount:
            self.messages.labels(self.service, bounded(outcome, CONSUMER_OUTCOMES)).inc(amount)


class JobMetrics:
    """Background jobs (`feedbackloop.pipeline.jobs`): `job` values are the job names a service wires."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "feedbackloop_job_runs_total",
            "Runs of a background job: worked (did something), idle, or failed (retried later).",
            ["job", "outcome"],
            registry=registry,
        )
        self.healthy = Gauge(
            "feedbackloop_job_healthy",
            "1 while the job's last run succeeded, 0 while it is failing and backing off.",
            ["job"],
            registry=registry,
        )
        self.last_success = Gauge(
            "feedbackloop_job_last_success_timestamp_seconds",
            "Unix time of the job's last successful run.",
            ["job"],
            registry=registry,
        )


WEBHOOK_OUTCOMES = frozenset({"delivered", "failed", "dead"})


class WebhookMetrics:
    """Webhook delivery attempts. No tenant or endpoint labels: those are unbounded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "feedbackloop_webhook_attempts_total",
            "Webhook delivery attempts: delivered (2xx), failed (retried later) or dead "
            "(failed for the last time).",
            ["outcome"],
            registry=registry,
        )
        self.pending = Gauge(
            "feedbackloop_webhook_deliveries_pending",
            "Deliveries waiting for their next attempt, as of the delivery job's last run.",
            registry=registry,
        )
        self.attempt_seconds = Histogram(
            "feedbackloop_webhook_attempt_seconds",
            "Time of one delivery attempt, request to response.",
            registry=registry,
        )

    def attempt(self, outcome: str) -> None:
        self.attempts.labels(bounded(outcome, WEBHOOK_OUTCOMES)).inc()


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
