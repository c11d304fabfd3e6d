"""The output topics' messages that other consumers read: training examples and alert changes."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import orjson
import pytest

from feedbackloop.contract import (
    OUTPUT_MESSAGE_TYPES,
    AlertStateChanged,
    TrainingExample,
    UnknownEventType,
    decode_event,
    decode_message,
    load_output_samples,
    load_samples,
)
from services.trainer.examples import outbox as trainer_outbox
from services.trainer.jobs.relay import outbox_message

OUTPUTS = [(kind, doc) for kind, docs in load_output_samples().items() for doc in docs]


def test_every_output_type_has_samples() -> None:
    assert set(load_output_samples()) == set(OUTPUT_MESSAGE_TYPES)


@pytest.mark.parametrize(("kind", "document"), OUTPUTS)
def test_output_sample_round_trips_with_a_stable_id(kind: str, document: dict) -> None:
    message = decode_message(orjson.dumps(document))
    assert message.type == kind
    again = decode_message(orjson.dumps(message.model_dump(mode="json")))
    assert again == message and again.event_id == message.event_id


def test_input_consumers_refuse_output_messages_and_decode_message_takes_inputs_too() -> None:
    doc = load_output_samples()["alert.state_changed"][0]
    with pytest.raises(UnknownEventType):
        decode_event(orjson.dumps(doc))
    vote = load_samples()["feedback.submitted"][0]
    assert decode_message(orjson.dumps(vote)) == decode_event(orjson.dumps(vote))
    with pytest.raises(UnknownEventType):
        decode_message(orjson.dumps({"type": "training_example.nope"}))


def test_each_revision_of_an_example_has_its_own_id() -> None:
    first, second, _ = load_output_samples()["training_example"]
    assert first["example_id"] == second["example_id"]
    a = decode_message(orjson.dumps(first))
    b = decode_message(orjson.dumps(second))
    assert a.event_id != b.event_id


def test_the_trainer_relay_publishes_contract_messages() -> None:
    sample = load_output_samples()["training_example"][0]
    record = {k: v for k, v in sample.items() if k not in ("type", "revision")}
    created = datetime(2026, 11, 20, 10, 0, 2, tzinfo=UTC)
    example = trainer_outbox.OutboxItem(
        seq=1, kind="example", example_id=uuid4(), tenant_id="acme", conversation_id="chat-7",
        revision=3, record=record, reason=None, created_at=created,
    )
    message = decode_message(outbox_message(example, topic="t").value)
    assert isinstance(message, TrainingExample) and message.revision == 3
    retraction = trainer_outbox.OutboxItem(
        seq=2, kind="retraction", example_id=uuid4(), tenant_id="acme",
        conversation_id="chat-7", revision=0, record=None, reason="superseded", created_at=created,
    )
    retracted = decode_message(outbox_message(retraction, topic="t").value)
    assert retracted.type == "training_example.retracted"


def test_alert_change_model_matches_its_sample() -> None:
    doc = load_output_samples()["alert.state_changed"][1]
    change = AlertStateChanged.model_validate(doc)
    assert (change.previous, change.state, change.value) == ("firing", "ok", None)


def test_the_trainer_documents_the_training_examples_topic_with_its_schema() -> None:
    import asyncio

    from feedbackloop.settings import Settings
    from services.trainer.main import create_app

    app = create_app(Settings(database_url="postgresql://u@127.0.0.1:9/d", user_id_hmac_secret="s" * 40,
                              kafka_bootstrap_servers="127.0.0.1:9"))
    route = next(r for r in app.routes if getattr(r, "path", "") == "/asyncapi.json")
    document = orjson.loads(asyncio.run(route.endpoint()).body)  # type: ignore[attr-defined]
    assert any(name.endswith("training-examples") for name in document["channels"])
    schemas = document["components"]["schemas"]
    assert {"TrainingExample", "TrainingExampleRetracted"} <= set(schemas)
    assert {"example_id", "revision", "kind", "split"} <= set(schemas["TrainingExample"]["properties"])
