"""Every payload on every topic is a contract model with samples per version, and every
service's AsyncAPI document shows the topics it reads and writes with those models' schemas."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter

from feedbackloop.contract import (
    INPUT_TOPICS,
    OUTPUT_TOPICS,
    TOPIC_OF_OUTPUT_TYPE,
    TOPIC_OF_TYPE,
    Topic,
)
from feedbackloop.contract.catalog import PAYLOADS, message_type, payload_type
from feedbackloop.contract.samples import load_output_samples, load_samples, load_weights_samples
from feedbackloop.settings import Settings

# Every sample by type, across the schema versions that have samples.
SAMPLES: dict[str, list[dict[str, Any]]] = {}
for documents in (load_samples(1), load_output_samples(1), load_weights_samples(1),
                  load_weights_samples(2)):
    for kind, docs in documents.items():
        SAMPLES.setdefault(kind, []).extend(docs)

SETTINGS = Settings(database_url="postgresql://u@127.0.0.1:9/d", user_id_hmac_secret="s" * 40,
                    kafka_bootstrap_servers="127.0.0.1:9")


def test_every_topic_has_its_payload_models() -> None:
    assert set(PAYLOADS) == set(Topic) == {*INPUT_TOPICS, *OUTPUT_TOPICS}
    for kind, topic in {**TOPIC_OF_TYPE, **TOPIC_OF_OUTPUT_TYPE}.items():
        assert kind in {message_type(model) for model in PAYLOADS[topic]}, kind


@pytest.mark.parametrize("topic", list(Topic))
def test_every_payload_model_has_samples_and_every_sample_validates(topic: Topic) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(payload_type(topic))
    for model in PAYLOADS[topic]:
        samples = SAMPLES.get(message_type(model), [])
        assert samples, f"no samples of {message_type(model)}"
        for sample in samples:
            assert isinstance(model.model_validate(sample), model)
            assert isinstance(adapter.validate_python(sample), model)


def test_weights_samples_exist_for_each_schema_version() -> None:
    versions = {doc["schema_version"] for doc in SAMPLES["segment_weights.version"]}
    assert versions == {1, 2}


def _document(app: Any) -> dict[str, Any]:
    route = next(r for r in app.routes if getattr(r, "path", "") == "/asyncapi.json")
    response = asyncio.run(route.endpoint())
    assert response.media_type == "application/json"
    return dict(orjson.loads(response.body))


def _payload_schemas(document: dict[str, Any], topic: Topic) -> set[str]:
    """The names of the schemas the messages of `topic`'s channel refer to."""
    channels = [c for c in document["channels"].values()
                if c["address"] == SETTINGS.topic_names().physical(topic)]
    assert len(channels) == 1, (topic, list(document["channels"]))
    names: set[str] = set()
    for reference in channels[0]["messages"].values():
        message = document["components"]["messages"][reference["$ref"].rsplit("/", 1)[1]]
        schema_name = message["payload"]["$ref"].rsplit("/", 1)[1].replace("%20", " ")
        schema = document["components"]["schemas"][schema_name]
        names |= {ref["$ref"].rsplit("/", 1)[1] for ref in schema.get("oneOf", [])} or {schema_name}
    return names


SERVICES = {
    # service: (topics read, topics written)
    "profiles": ((Topic.RESPONSES, Topic.FEEDBACK, Topic.RECOMMENDATIONS, Topic.CONSENT), ()),
    "learner": ((Topic.RECOMMENDATIONS, Topic.CONSENT), (Topic.WEIGHTS,)),
    "trainer": ((Topic.RESPONSES, Topic.FEEDBACK, Topic.CONSENT), (Topic.TRAINING_EXAMPLES,)),
    "metrics": ((Topic.RESPONSES, Topic.FEEDBACK, Topic.RECOMMENDATIONS, Topic.CONSENT), ()),
    "webhooks": ((Topic.FEEDBACK, Topic.TRAINING_EXAMPLES, Topic.ALERTS, Topic.CONSENT), ()),
    "query": ((), (Topic.ALERTS,)),
    "ingest": ((), INPUT_TOPICS),
}


@pytest.mark.parametrize("service", list(SERVICES))
def test_each_service_documents_its_topics_with_their_contract_schemas(service: str) -> None:
    import importlib

    main = importlib.import_module(f"services.{service}.main")
    document = _document(main.create_app(SETTINGS))
    assert document["asyncapi"].startswith("3.")
    reads, writes = SERVICES[service]
    assert len(document["channels"]) == len(reads) + len(writes)
    for topic in (*reads, *writes):
        expected = {model.__name__ for model in PAYLOADS[topic]}
        assert _payload_schemas(document, topic) == expected, topic
        for name in expected:
            assert document["components"]["schemas"][name]["properties"]["type"]
    actions = {operation["action"] for operation in document.get("operations", {}).values()}
    assert actions == ({"receive"} if reads else set()) | ({"send"} if writes else set())
