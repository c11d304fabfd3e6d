"""The profiles consumer: responses, feedback, recommendations and consent in; the profiles
schema out."""

from feedbackloop.contract import Topic
from feedbackloop.pipeline.consumer import ConsumerSpec
from services.profiles.processing import FeedbackGiven, ProfileEffect, process_message
from services.profiles.repository import write_effects


def subjects(effect: ProfileEffect) -> tuple[str, ...]:
    """Feedback on one response is written under one lock: which of a signal's events is
    current is decided from the stored rows, so two transactions must never decide it without
    seeing each other's rows (a partition held by two replicas for a moment in a rebalance)."""
    if isinstance(effect, FeedbackGiven):
        return (f"response:{effect.tenant_id}:{effect.response_id}",)
    return ()


SPEC: ConsumerSpec[ProfileEffect] = ConsumerSpec(
    name="profiles",
    schema="profiles",
    topics=(Topic.RESPONSES, Topic.FEEDBACK, Topic.RECOMMENDATIONS, Topic.CONSENT),
    process=process_message,
    write=write_effects,
    subjects=subjects,
)
