"""GenAI spans as response requests: each convention, the configured response id, and what is
ignored or rejected."""

from __future__ import annotations

import json

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from services.ingest.otlp_spans import OtlpDecodeError, decode_request, response_requests

SPAN_ID = bytes.fromhex("00f067aa0ba902b7")
TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")


def _kv(key: str, value: object) -> KeyValue:
    return KeyValue(key=key, value=_any(value))


def _any(value: object) -> AnyValue:
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[_kv(k, v) for k, v in value.items()]))
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    return AnyValue(string_value=str(value))


def _export(*spans: Span) -> ExportTraceServiceRequest:
    export = ExportTraceServiceRequest()
    export.resource_spans.add().scope_spans.add().spans.extend(spans)
    return export


def _span(attributes: dict[str, object], **fields: object) -> Span:
    span = Span(trace_id=TRACE_ID, span_id=SPAN_ID, name="chat",
                end_time_unix_nano=1_700_000_000_000_000_000, **fields)  # type: ignore[arg-type]
    span.attributes.extend(_kv(k, v) for k, v in attributes.items())
    return span


def test_structured_message_attributes_and_a_configured_response_id() -> None:
    span = _span({
        "gen_ai.request.model": "m",
        "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "q"}]}],
        "gen_ai.output.messages": [{"role": "assistant",
                                    "parts": [{"type": "tool_call", "name": "f"},
                                              {"type": "text", "content": "a"}]}],
        "app.message_id": "msg-42",
        "session.id": "s-1",
    })
    [request] = response_requests(_export(span), response_id_attribute="app.message_id").requests
    assert request["response_id"] == "msg-42"
    assert request["prompt"] == [{"role": "user", "content": "q"}]
    assert request["output"] == "a"
    assert request["session_id"] == "s-1"
    assert request["occurred_at"].startswith("2023-11-14T22:13:20")
    assert request["metadata"] == {"trace_id": TRACE_ID.hex(), "span_id": SPAN_ID.hex()}
    # Without the attribute on the span, the span id.
    [fallback] = response_requests(_export(span), response_id_attribute="other").requests
    assert fallback["response_id"] == "00f067aa0ba902b7"
    assert fallback["event_id"] == request["event_id"]


def test_the_span_event_convention() -> None:
    span = _span({"gen_ai.request.model": "m"})
    prompt = span.events.add(name="gen_ai.content.prompt")
    prompt.attributes.append(_kv("gen_ai.prompt", json.dumps([{"role": "user", "content": "q"}])))
    completion = span.events.add(name="gen_ai.content.completion")
    completion.attributes.append(
        _kv("gen_ai.completion", json.dumps([{"role": "assistant", "content": "a"}])))
    [request] = response_requests(_export(span)).requests
    assert (request["prompt"], request["output"]) == ([{"role": "user", "content": "q"}], "a")


def test_other_spans_are_ignored_and_incomplete_genai_spans_rejected() -> None:
    outcome = response_requests(_export(
        _span({"http.request.method": "GET"}),
        _span({"gen_ai.operation.name": "chat", "gen_ai.prompt.0.content": "q",
               "gen_ai.completion.0.content": "a"}),
    ))
    assert outcome.ignored == 1 and outcome.requests == []
    assert outcome.rejected == ["span 00f067aa0ba902b7: no gen_ai.response.model or "
                                "gen_ai.request.model"]


@pytest.mark.parametrize("body", [b"[]", b"{\"resourceSpans\": [{\"scopeSpans\": [{\"spans\": "
                                  b"[{\"spanId\": \"zz\"}]}]}]}", b"not json"])
def test_json_that_is_not_an_export_request(body: bytes) -> None:
    with pytest.raises(OtlpDecodeError):
        decode_request(body, json=True)
