"""The webhooks consumer: feedback, training examples, alert changes and erasures in;
deliveries out."""

from feedbackloop.contract import Topic, decode_message
from feedbackloop.pipeline.consumer import ConsumerSpec
from services.webhooks.processing import (
    AlertNotice,
    ExampleNotice,
    UserErasure,
    WebhooksEffect,
    process_message,
)
from services.webhooks.repository import write_effects


def subjects(effect: WebhooksEffect) -> tuple[str, ...]:
    """Every event of one signal identity (of one response) or one example is classified under
    one lock, so two replicas never both call a change new; a user's feedback and their
    erasure share one, so feedback written beside an erasure cannot escape it."""
    if isinstance(effect, ExampleNotice):
        return (f"example:{effect.tenant_id}:{effect.example_id}",)
    if isinstance(effect, AlertNotice):
        return ()
    if isinstance(effect, UserErasure):
        return (f"user:{effect.tenant_id}:{effect.user_digest}",)
    response = f"response:{effect.tenant_id}:{effect.response_id}"
    if effect.user_digest is None:
        return (response,)
    return (response, f"user:{effect.tenant_id}:{effect.user_digest}")


SPEC: ConsumerSpec[WebhooksEffect] = ConsumerSpec(
    name="webhooks",
    schema="webhooks",
    topics=(Topic.FEEDBACK, Topic.TRAINING_EXAMPLES, Topic.ALERTS, Topic.CONSENT),
    process=process_message,
    write=write_effects,
    subjects=subjects,
    decode=decode_message,
)
