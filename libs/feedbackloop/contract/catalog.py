"""Every topic's payloads, in one place: the contract models of the messages on each topic,
inputs and outputs. The sample tests check that every model here has samples and that every
sample validates; the AsyncAPI documents show each topic with these models' JSON schemas."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

from feedbackloop.contract.alerts import AlertStateChanged
from feedbackloop.contract.envelope import ContractModel
from feedbackloop.contract.experiments import ExperimentExposure
from feedbackloop.contract.feedback import FeedbackRetracted, FeedbackSubmitted
from feedbackloop.contract.recommendations import Choice, Interaction, SessionStarted
from feedbackloop.contract.responses import ResponseLogged
from feedbackloop.contract.reviews import ReviewSubmitted
from feedbackloop.contract.topics import Topic
from feedbackloop.contract.training_examples import TrainingExample, TrainingExampleRetracted
from feedbackloop.contract.users import ConsentChanged, ErasureRequested
from feedbackloop.contract.weights import SegmentWeightsVersion

PAYLOADS: dict[Topic, tuple[type[ContractModel], ...]] = {
    Topic.RESPONSES: (ResponseLogged, ExperimentExposure),
    Topic.FEEDBACK: (FeedbackSubmitted, FeedbackRetracted, ReviewSubmitted),
    Topic.RECOMMENDATIONS: (SessionStarted, Interaction, Choice),
    Topic.CONSENT: (ConsentChanged, ErasureRequested),
    Topic.TRAINING_EXAMPLES: (TrainingExample, TrainingExampleRetracted),
    Topic.WEIGHTS: (SegmentWeightsVersion,),
    Topic.ALERTS: (AlertStateChanged,),
}


def payload_type(topic: Topic) -> Any:
    """The type of one message on `topic`: its model, or the union of its models told apart
    by `type` (for a `TypeAdapter` or a schema)."""
    models = PAYLOADS[topic]
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007


def message_type(model: type[ContractModel]) -> str:
    """The `type` every message of `model` carries."""
    default = model.model_fields["type"].default
    assert isinstance(default, str), model
    return default
