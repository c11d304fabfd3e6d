"""The profiles consumer: responses, feedback, recommendations and consent in; the profiles
schema out."""

from feedbackloop.consumer import ConsumerSpec
from feedbackloop.contract import Topic
from services.profiles.processing import ProfileEffect, process_message
from services.profiles.repository import write_effects

SPEC: ConsumerSpec[ProfileEffect] = ConsumerSpec(
    name="profiles",
    schema="profiles",
    topics=(Topic.RESPONSES, Topic.FEEDBACK, Topic.RECOMMENDATIONS, Topic.CONSENT),
    process=process_message,
    write=write_effects,
)
