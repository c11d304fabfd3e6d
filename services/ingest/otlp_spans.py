"""OpenTelemetry GenAI spans as `response.logged` requests: ingest's pure part of OTLP/HTTP.

A span is a GenAI span when it carries any `gen_ai.*` attribute; other spans are ignored (and
counted). A GenAI span becomes the request body of one `response.logged` event:
- `response_id`: the span id as 16 lowercase hex characters (the id an application has at hand
  to attach feedback to), or the value of a configured attribute when the span has it;
- `event_id`: a UUID derived from the trace and span ids, so an exporter's retry of the same
  spans is the same event and applied once;
- the prompt and the output from the current conventions (`gen_ai.system_instructions`,
  `gen_ai.input.messages`, `gen_ai.output.messages`, JSON with typed parts) or the previous ones
  (`gen_ai.prompt.N.role`/`.content` and `gen_ai.completion.N.*` attributes, and the
  `gen_ai.content.prompt`/`gen_ai.content.completion` span events);
- `model`: `gen_ai.response.model`, else `gen_ai.request.model`; `action_type`:
  `feedbackloop.action_type`, else `gen_ai.operation.name`; `user_id`: `user.id` or `enduser.id`;
  `session_id`: `session.id` or `gen_ai.conversation.id`; `occurred_at`: the span's end;
  `metadata`: the trace id, span id and the resource's `service.name`.
A GenAI span without a model, a prompt or an output cannot make an event: it is rejected, and
the exporter is told how many were and why (OTLP partial success).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

# Trace and span ids of spans from OTLP: the namespace of the event ids derived from them.
SPAN_EVENT_NAMESPACE = uuid.UUID("5f0c4a8e-6f1d-4c1b-9a57-2f1e0d6b7c31")
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "model": "assistant", "tool": "tool", "function": "tool"}
_INDEXED = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(role|content)$")


class OtlpDecodeError(ValueError):
    """The body is not an OTLP traces export request in the encoding it claims."""


def decode_request(body: bytes, *, json: bool) -> ExportTraceServiceRequest:
    """An `ExportTraceServiceRequest` from protobuf or OTLP/JSON bytes (hex trace and span ids,
    as the OTLP/JSON encoding has them). Raises `OtlpDecodeError`."""
    request = ExportTraceServiceRequest()
    try:
        if not json:
            request.ParseFromString(body)
            return request
        document = orjson.loads(body)
        if not isinstance(document, dict):
            raise OtlpDecodeError("an OTLP/JSON body is a JSON object")
        for span in _json_spans(document):
            for name in ("traceId", "spanId", "parentSpanId"):
                if isinstance(span.get(name), str) and span[name]:
                    span[name] = base64.b64encode(bytes.fromhex(span[name])).decode()
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except OtlpDecodeError:
        raise
    except (ValueError, json_format.ParseError, binascii.Error, TypeError) as error:
        raise OtlpDecodeError(f"not an OTLP traces export request: {error}") from None
    except Exception as error:  # protobuf's DecodeError is not a ValueError
        raise OtlpDecodeError(f"not an OTLP traces export request: {error}") from None
    return request


def _json_spans(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for resource_spans in document.get("resourceSpans") or []:
        for scope_spans in (resource_spans or {}).get("scopeSpans") or []:
            for span in (scope_spans or {}).get("spans") or []:
                if isinstance(span, dict):
                    yield span


@dataclass
class SpanOutcome:
    """What became of an export's spans: the event requests of its GenAI spans, the count of
    spans that are not GenAI, and the GenAI spans that could not make an event (with why)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    ignored: int = 0
    rejected: list[str] = field(default_factory=list)


def response_requests(
    export: ExportTraceServiceRequest, *, response_id_attribute: str = ""
) -> SpanOutcome:
    """The `response.logged` request bodies of an export's GenAI spans."""
    outcome = SpanOutcome()
    for resource_spans in export.resource_spans:
        service = _attributes(resource_spans.resource.attributes).get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = _attributes(span.attributes)
                if not any(name.startswith("gen_ai.") for name in attributes):
                    outcome.ignored += 1
                    continue
                request = _response_request(span, attributes, service, response_id_attribute)
                if isinstance(request, str):
                    outcome.rejected.append(f"span {span.span_id.hex()}: {request}")
                else:
                    outcome.requests.append(request)
    return outcome


def _response_request(
    span: Span, attributes: dict[str, Any], service: Any, response_id_attribute: str
) -> dict[str, Any] | str:
    """The request body, or why there is none."""
    trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
    if len(span_id) != 16:
        return "a span id is 8 bytes"
    model = attributes.get("gen_ai.response.model") or attributes.get("gen_ai.request.model")
    if not model:
        return "no gen_ai.response.model or gen_ai.request.model"
    prompt, output = _conversation(span, attributes)
    if not prompt:
        return "no input messages (gen_ai.input.messages or gen_ai.prompt.N.*)"
    if not output:
        return "no output message (gen_ai.output.messages or gen_ai.completion.N.*)"
    custom = attributes.get(response_id_attribute) if response_id_attribute else None
    ended = span.end_time_unix_nano or span.start_time_unix_nano
    request: dict[str, Any] = {
        "event_id": str(uuid.uuid5(SPAN_EVENT_NAMESPACE, f"{trace_id}:{span_id}")),
        "response_id": str(custom) if custom not in (None, "") else span_id,
        "prompt": prompt,
        "output": output,
        "model": str(model),
        "action_type": str(attributes.get("feedbackloop.action_type")
                           or attributes.get("gen_ai.operation.name") or "unspecified"),
        "metadata": {"trace_id": trace_id, "span_id": span_id}
        | ({"service_name": str(service)} if service else {}),
    }
    if ended:
        request["occurred_at"] = datetime.fromtimestamp(ended / 1e9, UTC).isoformat()
    user = attributes.get("user.id") or attributes.get("enduser.id")
    if user not in (None, ""):
        request["user_id"] = str(user)
    session = attributes.get("session.id") or attributes.get("gen_ai.conversation.id")
    if session not in (None, ""):
        request["session_id"] = str(session)
    return request


def _conversation(span: Span, attributes: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """(prompt messages, output text) from whichever convention the span follows."""
    prompt = _instructions(attributes.get("gen_ai.system_instructions"))
    prompt += _messages(attributes.get("gen_ai.input.messages"))
    output = "\n".join(m["content"] for m in _messages(attributes.get("gen_ai.output.messages"))
                       if m["role"] == "assistant")
    if not prompt or not output:
        indexed = _indexed(attributes)
        prompt = prompt or indexed.get("prompt", [])
        output = output or "\n".join(m["content"] for m in indexed.get("completion", []))
    if not prompt or not output:
        for event in span.events:
            event_attributes = _attributes(event.attributes)
            if event.name == "gen_ai.content.prompt" and not prompt:
                prompt = _messages(event_attributes.get("gen_ai.prompt"))
            if event.name == "gen_ai.content.completion" and not output:
                output = "\n".join(m["content"]
                                   for m in _messages(event_attributes.get("gen_ai.completion")))
    return prompt, output


def _messages(raw: Any) -> list[dict[str, str]]:
    """Chat messages from a JSON string or list: `{role, parts: [{type, content}]}` (current
    conventions) or `{role, content}` (previous ones). Unknown roles and non-text parts drop."""
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
    if not isinstance(raw, list):
        return []
    messages = []
    for message in raw:
        if not isinstance(message, dict):
            continue
        role = _ROLES.get(str(message.get("role", "")).lower())
        text = _text(message)
        if role and text:
            messages.append({"role": role, "content": text})
    return messages


def _text(message: dict[str, Any]) -> str:
    if isinstance(message.get("content"), str):
        return str(message["content"])
    parts = message.get("parts")
    if not isinstance(parts, list):
        return ""
    return "\n".join(str(part.get("content", "")) for part in parts
                     if isinstance(part, dict) and part.get("type", "text") == "text"
                     and part.get("content"))


def _instructions(raw: Any) -> list[dict[str, str]]:
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return [{"role": "system", "content": raw}] if raw else []
    if isinstance(raw, list):
        text = _text({"parts": raw})
        return [{"role": "system", "content": text}] if text else []
    return []


def _indexed(attributes: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """`gen_ai.prompt.N.role` / `.content` attributes as ordered messages per side."""
    found: dict[tuple[str, int], dict[str, str]] = {}
    for name, value in attributes.items():
        match = _INDEXED.match(name)
        if match:
            found.setdefault((match[1], int(match[2])), {})[match[3]] = str(value)
    sides: dict[str, list[dict[str, str]]] = {}
    for (side, _), fields in sorted(found.items()):
        role = _ROLES.get(fields.get("role", "assistant" if side == "completion" else "user"))
        if role and fields.get("content"):
            sides.setdefault(side, []).append({"role": role, "content": fields["content"]})
    return sides


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {pair.key: _value(pair.value) for pair in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


__all__ = ["OtlpDecodeError", "SpanOutcome", "decode_request", "response_requests"]
