"""OpenTelemetry GenAI spans in, through the real OpenTelemetry SDK and its OTLP/HTTP exporter:
an instrumented LLM call becomes a logged response that feedback can attach to by span id."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from feedbackloop.embedded import TansuBroker, free_port
from services.ingest.otlp_spans import SPAN_EVENT_NAMESPACE
from tests.e2e.conftest import Stack, service_env
from tests.infra import ServiceProcesses, create_database, create_topics, eventually, unique_prefix

pytestmark = pytest.mark.e2e

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _spans() -> list[ReadableSpan]:
    """An LLM call in the current conventions, one in the previous ones, an HTTP span and a
    GenAI span with no output, recorded by the SDK."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attributes({
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.system_instructions": json.dumps([{"type": "text",
                                                        "content": "You book appointments."}]),
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
                {"type": "text", "content": "Book me in on Tuesday"}]}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                {"type": "text", "content": "Booked: Tuesday 10:00."}], "finish_reason": "stop"}]),
            "user.id": "alice",
            "feedbackloop.action_type": "appointment",
        })
    with tracer.start_as_current_span("openai.chat") as span:
        span.set_attributes({
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "Be brief.",
            "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "Add milk",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "Added milk to your list.",
        })
    with tracer.start_as_current_span("GET /orders") as span:
        span.set_attribute("http.request.method", "GET")
    with tracer.start_as_current_span("chat broken") as span:
        span.set_attributes({"gen_ai.request.model": "gpt-4o",
                             "gen_ai.input.messages": json.dumps([{"role": "user",
                                                                   "content": "hi"}])})
    provider.shutdown()
    return list(memory.get_finished_spans())


def _span_id(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"{context.span_id:016x}"


async def _logged(database_url: str, response_ids: list[str]) -> dict[str, asyncpg.Record]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT response_id, prompt, output, model, action_type FROM trainer.responses "
            "WHERE tenant_id = 'acme' AND response_id = ANY($1::text[])", response_ids)
    finally:
        await connection.close()
    return {row["response_id"]: row for row in rows}


async def test_the_otel_exporter_logs_genai_spans_that_feedback_attaches_to(stack: Stack) -> None:
    spans = _spans()
    chat, legacy, http_span, broken = spans
    exporter = OTLPSpanExporter(
        endpoint=f"{stack.services.url('ingest')}/v1/traces",
        headers={"Authorization": f"Bearer {stack.api_key}"}, compression=Compression.Gzip,
    )
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()

    ids = [_span_id(chat), _span_id(legacy)]
    assert all(len(i) == 16 and i == i.lower() for i in ids)

    async def both_logged() -> dict[str, Any] | None:
        rows = await _logged(stack.database_url, ids)
        return rows if len(rows) == 2 else None

    rows = await eventually(both_logged, timeout=30)
    current = rows[ids[0]]
    assert current["model"] == "gpt-4o-2024-08-06" and current["action_type"] == "appointment"
    assert current["output"] == "Booked: Tuesday 10:00."
    assert [(m["role"], m["content"]) for m in json.loads(current["prompt"])] == [
        ("system", "You book appointments."), ("user", "Book me in on Tuesday")]
    previous = rows[ids[1]]
    assert previous["model"] == "gpt-4o-mini" and previous["output"] == "Added milk to your list."
    assert [m["role"] for m in json.loads(previous["prompt"])] == ["system", "user"]
    assert await _logged(stack.database_url, [_span_id(http_span), _span_id(broken)]) == {}

    # Feedback attaches by span id, and counts under the span's model.
    async with stack.ingest() as ingest, stack.query() as query:
        voted = await ingest.post("/v1/feedback", json={"response_id": ids[0], "thumb": "down",
                                                        "user_id": "alice"})
        assert voted.status_code == 202, voted.text

        async def counted() -> dict[str, Any] | None:
            answer = await query.get("/v1/analytics/approval", params={"group_by": "model"})
            groups = {g["group"]: g for g in answer.json()["groups"]}
            group = groups.get("gpt-4o-2024-08-06")
            return group if group and group["down"] == 1 else None

        await eventually(counted, timeout=30)

        # The same spans again (an exporter's retry) are the same events: applied once.
        again = await ingest.post("/v1/traces", content=encode_spans(spans).SerializeToString(),
                                  headers=PROTOBUF)
        assert again.status_code == 200
        answer = ExportTraceServiceResponse.FromString(again.content)
        assert answer.partial_success.rejected_spans == 1
        assert _span_id(broken) in answer.partial_success.error_message
        assert "no output" in answer.partial_success.error_message
        metrics = (await ingest.get("/metrics")).text
    assert 'feedbackloop_ingest_otlp_spans_total{outcome="ignored"} 2.0' in metrics
    assert 'feedbackloop_ingest_otlp_spans_total{outcome="rejected"} 2.0' in metrics
    assert 'feedbackloop_ingest_otlp_spans_total{outcome="event"} 4.0' in metrics
    # The retry carried the same event ids, derived from the trace and span ids.
    expected = {uuid.uuid5(SPAN_EVENT_NAMESPACE, f"{span.get_span_context().trace_id:032x}:"
                                                 f"{_span_id(span)}") for span in (chat, legacy)}
    connection = await asyncpg.connect(stack.database_url)
    try:
        claimed = {row["event_id"] for row in await connection.fetch(
            "SELECT event_id FROM trainer.processed_events WHERE event_id = ANY($1::uuid[])",
            list(expected))}
    finally:
        await connection.close()
    assert claimed == expected


async def test_otlp_json_with_hex_ids_and_gzip_is_answered_in_json(stack: Stack) -> None:
    span_id = "00f067aa0ba902b7"
    body = {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "json-bot"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "4BF92F3577B34DA6A3CE929D0E0E4736", "spanId": span_id.upper(),
            "name": "chat", "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000001000000000",
            "attributes": [
                {"key": "gen_ai.request.model", "value": {"stringValue": "json-model"}},
                {"key": "gen_ai.input.messages", "value": {"stringValue": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "hello"}]}])}},
                {"key": "gen_ai.output.messages", "value": {"stringValue": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "hi!"}]}])}},
            ]}]}]}]}
    async with stack.ingest() as ingest:
        answer = await ingest.post(
            "/v1/traces", content=gzip.compress(json.dumps(body).encode()),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {}

    async def logged() -> dict[str, Any] | None:
        return (await _logged(stack.database_url, [span_id])) or None

    rows = await eventually(logged, timeout=30)
    assert rows[span_id]["model"] == "json-model" and rows[span_id]["output"] == "hi!"


async def test_bad_bodies_are_not_retryable_and_a_key_is_required(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.services.url("ingest"), timeout=30) as anonymous:
        unauthenticated = await anonymous.post("/v1/traces", content=b"", headers=PROTOBUF)
    assert unauthenticated.status_code == 401
    async with stack.ingest() as ingest:
        garbage = await ingest.post("/v1/traces", content=b"\xff\x00not protobuf",
                                    headers=PROTOBUF)
        assert garbage.status_code == 400
        assert "not an OTLP traces export request" in Status.FromString(garbage.content).message
        wrong_type = await ingest.post("/v1/traces", content=b"x",
                                       headers={"Content-Type": "text/plain"})
        assert wrong_type.status_code == 415
        bomb = gzip.compress(b"\x00" * 3_000_000)
        too_large = await ingest.post("/v1/traces", content=bomb,
                                      headers=PROTOBUF | {"Content-Encoding": "gzip"})
        assert too_large.status_code == 413


@pytest.fixture(scope="module")
def without_broker(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcesses, str, TansuBroker]]:
    """Ingest on a broker of its own, which the test stops."""
    workdir = tmp_path_factory.mktemp("otlp-broker")
    broker = TansuBroker(workdir / "tansu.log", free_port())
    broker.start()
    prefix = unique_prefix()
    database_url = asyncio.run(create_database(postgres_url))
    asyncio.run(create_topics(broker.bootstrap_servers, prefix))
    from services.cli.admin import create_key

    _, key = asyncio.run(create_key(database_url, tenant_id="acme", name="otlp",
                                    scopes=["ingest"]))
    services = ServiceProcesses(service_env(broker.bootstrap_servers, database_url, prefix),
                                workdir)
    try:
        services.start(("ingest",))
        yield services, key, broker
    finally:
        services.stop()
        broker.stop()


def test_a_broker_that_does_not_acknowledge_gets_a_retryable_answer(
    without_broker: tuple[ServiceProcesses, str, TansuBroker],
) -> None:
    services, key, broker = without_broker
    broker.stop()
    body = encode_spans(_spans()).SerializeToString()
    answer = httpx.post(f"{services.url('ingest')}/v1/traces", content=body, timeout=60,
                        headers=PROTOBUF | {"Authorization": f"Bearer {key}"})
    assert answer.status_code == 503
    assert int(answer.headers["retry-after"]) >= 1
    assert Status.FromString(answer.content).code == 14  # UNAVAILABLE
