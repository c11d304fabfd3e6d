"""The metrics consumer: responses, feedback and recommendations in; exact rollups out. It
reads the consent topic for erasures only (a user's experiment units)."""

from datetime import timedelta
from functools import partial

from feedbackloop.contract import Topic, UserErased
from feedbackloop.pipeline.consumer import ConsumerSpec
from services.metrics.processing import DEFAULT_LATENESS, MetricsEffect, process_message
from services.metrics.repository import write_effects


def subjects(effect: MetricsEffect) -> tuple[str, ...]:
    """A signal and the subject it is counted under are written under one lock, so the late
    re-attribution never misses a signal committed concurrently by another replica."""
    if isinstance(effect, UserErased):  # the same lock as the user's exposures
        return (f"{effect.tenant_id}:user:{effect.user_id}",)
    return (f"{effect.tenant_id}:{effect.subject_id}",)


def build_spec(lateness: timedelta = DEFAULT_LATENESS) -> ConsumerSpec[MetricsEffect]:
    """The metrics consumer with its lateness window (`FEEDBACKLOOP_METRICS_LATENESS_SECONDS`)."""
    return ConsumerSpec(
        name="metrics",
        schema="metrics",
        topics=(Topic.RESPONSES, Topic.FEEDBACK, Topic.RECOMMENDATIONS, Topic.CONSENT),
        process=partial(process_message, lateness=lateness),
        write=write_effects,
        subjects=subjects,
    )


SPEC: ConsumerSpec[MetricsEffect] = build_spec()
