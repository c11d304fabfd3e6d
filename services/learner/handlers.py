"""The learner consumer: recommendation sessions and choices in; the learner schema out."""

from feedbackloop.contract import Topic
from feedbackloop.pipeline.consumer import ConsumerSpec
from services.learner.processing import LearnerEffect, process_message
from services.learner.repository import write_effects

SPEC: ConsumerSpec[LearnerEffect] = ConsumerSpec(
    name="learner",
    schema="learner",
    topics=(Topic.RECOMMENDATIONS, Topic.CONSENT),
    process=process_message,
    write=write_effects,
)
