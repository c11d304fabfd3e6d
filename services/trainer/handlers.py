"""The trainer consumer: responses, feedback and consent in; the trainer schema out."""

from feedbackloop.consumer import ConsumerSpec
from feedbackloop.contract import Topic
from services.trainer.processing import TrainerEffect, process_message
from services.trainer.repository import write_effects

SPEC: ConsumerSpec[TrainerEffect] = ConsumerSpec(
    name="trainer",
    schema="trainer",
    topics=(Topic.RESPONSES, Topic.FEEDBACK, Topic.CONSENT),
    process=process_message,
    write=write_effects,
)
