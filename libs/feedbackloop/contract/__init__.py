"""The event contract, v1: frozen models, topic names, the codec and the request bodies."""

from feedbackloop.contract.codec import (
    EVENT_ADAPTER,
    EVENT_TYPES,
    Event,
    InvalidEvent,
    PoisonMessage,
    UndecodableMessage,
    UnknownEventType,
    UnsupportedSchemaVersion,
    decode_event,
    encode_event,
)
from feedbackloop.contract.envelope import SCHEMA_VERSION, Envelope
from feedbackloop.contract.feedback import (
    FEEDBACK_KINDS,
    FeedbackEvent,
    FeedbackKind,
    FeedbackPayload,
    FeedbackRetracted,
    FeedbackSubmitted,
    RetractionPayload,
    signal_digest,
    signal_order,
    signal_person,
)
from feedbackloop.contract.recommendations import (
    SEGMENTS,
    Choice,
    Interaction,
    Segment,
    SessionStarted,
    ShownOption,
)
from feedbackloop.contract.responses import ResponseLogged
from feedbackloop.contract.reviews import (
    REVIEW_ACTIONS,
    ReviewAction,
    ReviewFields,
    ReviewPayload,
    ReviewSubmitted,
)
from feedbackloop.contract.samples import load_samples
from feedbackloop.contract.topics import (
    INPUT_TOPICS,
    OUTPUT_TOPICS,
    TOPIC_OF_TYPE,
    Topic,
    TopicNames,
)
from feedbackloop.contract.users import ConsentChanged, ErasureRequested

__all__ = [
    "EVENT_ADAPTER",
    "EVENT_TYPES",
    "FEEDBACK_KINDS",
    "INPUT_TOPICS",
    "OUTPUT_TOPICS",
    "REVIEW_ACTIONS",
    "SCHEMA_VERSION",
    "SEGMENTS",
    "TOPIC_OF_TYPE",
    "Choice",
    "ConsentChanged",
    "Envelope",
    "ErasureRequested",
    "Event",
    "FeedbackEvent",
    "FeedbackKind",
    "FeedbackPayload",
    "FeedbackRetracted",
    "FeedbackSubmitted",
    "Interaction",
    "InvalidEvent",
    "PoisonMessage",
    "ResponseLogged",
    "RetractionPayload",
    "ReviewAction",
    "ReviewFields",
    "ReviewPayload",
    "ReviewSubmitted",
    "Segment",
    "SessionStarted",
    "ShownOption",
    "Topic",
    "TopicNames",
    "UndecodableMessage",
    "UnknownEventType",
    "UnsupportedSchemaVersion",
    "decode_event",
    "encode_event",
    "load_samples",
    "signal_digest",
    "signal_order",
    "signal_person",
]
