"""Logical topic names, in one place. Physical names come from settings (a prefix)."""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    RESPONSES = "responses"
    FEEDBACK = "feedback"
    RECOMMENDATIONS = "recommendations"
    CONSENT = "consent"
    TRAINING_EXAMPLES = "training-examples"
    WEIGHTS = "weights"
    ALERTS = "alerts"

    @property
    def is_input(self) -> bool:
        return self in INPUT_TOPICS


INPUT_TOPICS: tuple[Topic, ...] = (
    Topic.RESPONSES,
    Topic.FEEDBACK,
    Topic.RECOMMENDATIONS,
    Topic.CONSENT,
)
OUTPUT_TOPICS: tuple[Topic, ...] = (Topic.TRAINING_EXAMPLES, Topic.WEIGHTS, Topic.ALERTS)
# Topics a consumer of the platform reads, each with its dead-letter topic: the inputs, and the
# outputs that feed other outputs (webhooks are fed from training examples and alert changes).
CONSUMED_TOPICS: tuple[Topic, ...] = (*INPUT_TOPICS, Topic.TRAINING_EXAMPLES, Topic.ALERTS)

TOPIC_OF_TYPE: dict[str, Topic] = {
    "response.logged": Topic.RESPONSES,
    "experiment.exposure": Topic.RESPONSES,
    "feedback.submitted": Topic.FEEDBACK,
    "feedback.retracted": Topic.FEEDBACK,
    "review.submitted": Topic.FEEDBACK,
    "recommendation.session_started": Topic.RECOMMENDATIONS,
    "recommendation.interaction": Topic.RECOMMENDATIONS,
    "recommendation.choice": Topic.RECOMMENDATIONS,
    "user.consent_changed": Topic.CONSENT,
    "user.erasure_requested": Topic.CONSENT,
}
# Messages on output topics that are contract models too (they have no envelope).
TOPIC_OF_OUTPUT_TYPE: dict[str, Topic] = {
    "training_example": Topic.TRAINING_EXAMPLES,
    "training_example.retracted": Topic.TRAINING_EXAMPLES,
    "alert.state_changed": Topic.ALERTS,
}


class TopicNames:
    """Maps logical topics to physical names: `<prefix>.<topic>` and `<prefix>.<topic>.dlq`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def physical(self, topic: Topic) -> str:
        return f"{self.prefix}.{topic.value}"

    def dead_letter(self, topic: Topic) -> str:
        return f"{self.prefix}.{topic.value}.dlq"

    def logical(self, physical: str) -> Topic:
        name = physical.removeprefix(f"{self.prefix}.").removesuffix(".dlq")
        return Topic(name)

    def all_physical(self) -> list[str]:
        names = [self.physical(topic) for topic in Topic]
        names += [self.dead_letter(topic) for topic in CONSUMED_TOPICS]
        return names
