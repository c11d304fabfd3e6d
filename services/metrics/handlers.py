"""The metrics consumer: responses and feedback in; per-minute rollups out."""

from feedbackloop.consumer import ConsumerSpec
from feedbackloop.contract import Topic
from services.metrics.processing import MetricsEffect, process_message
from services.metrics.repository import write_effects

SPEC: ConsumerSpec[MetricsEffect] = ConsumerSpec(
    name="metrics",
    schema="metrics",
    topics=(Topic.RESPONSES, Topic.FEEDBACK),
    process=process_message,
    write=write_effects,
)
