"""The webhooks consumer: feedback, training examples and alert changes in; deliveries out."""

from feedbackloop.contract import Topic, decode_message
from feedbackloop.pipeline.consumer import ConsumerSpec
from services.webhooks.processing import (
    AlertNotice,
    ExampleNotice,
    WebhooksEffect,
    process_message,
)
from services.webhooks.repository import write_effects


def subjects(effect: WebhooksEffect) -> tuple[str, ...]:
    """Every event of one signal identity (of one response) or one example is classified under
    one lock, so two replicas never both call a change new."""
    if isinstance(effect, ExampleNotice):
        return (f"example:{effect.tenant_id}:{effect.example_id}",)
    if isinstance(effect, AlertNotice):
        return ()
    return (f"response:{effect.tenant_id}:{effect.response_id}",)


SPEC: ConsumerSpec[WebhooksEffect] = ConsumerSpec(
    name="webhooks",
    schema="webhooks",
    topics=(Topic.FEEDBACK, Topic.TRAINING_EXAMPLES, Topic.ALERTS),
    process=process_message,
    write=write_effects,
    subjects=subjects,
    decode=decode_message,
)
