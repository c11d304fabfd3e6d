"""OTLP/HTTP traces in: `POST /v1/traces`, the path OpenTelemetry exporters send to.

Protobuf (`application/x-protobuf`) or OTLP/JSON (`application/json`) bodies, plain or gzip,
authenticated with an `ingest` key in the `Authorization` header (the exporters' `headers`
setting). GenAI spans become `response.logged` events (see `otlp_spans`); the answer is what OTLP
clients expect: 200 with an `ExportTraceServiceResponse` in the request's encoding, with a
partial success naming the rejected spans; 400 (not retryable) for a body that is not an
export request; 429, 503 with `Retry-After` (retryable) when the key is over its rate or the
broker did not acknowledge, in which case none of the spans counts as received.
"""

from __future__ import annotations

import zlib

from fastapi import APIRouter, Request, Response
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from feedbackloop.http.auth import Scope
from feedbackloop.http.encoding import encoding_problem
from feedbackloop.http.problems import ProblemException
from services.ingest.deps import Caller, State, requires, tenancy_of
from services.ingest.handlers import publish_events
from services.ingest.otlp_spans import OtlpDecodeError, decode_request, response_requests
from services.ingest.processing import PreparedEvent, RequestProblem, parse_request, prepare

router = APIRouter(tags=["otlp"])

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@router.post(
    "/v1/traces",
    dependencies=[requires(Scope.INGEST)],
    responses={200: {"content": {PROTOBUF: {}, JSON: {}},
                     "description": "ExportTraceServiceResponse"}},
)
async def export_traces(request: Request, state: State, caller: Caller) -> Response:
    """Receive OpenTelemetry spans; GenAI spans become `response.logged` events."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    as_json = media_type == JSON
    try:
        if media_type not in (PROTOBUF, JSON):
            raise _Refused(415, f"OTLP/HTTP bodies are {PROTOBUF} or {JSON}, not {media_type!r}")
        body = _decompressed(await request.body(), request.headers.get("content-encoding", ""),
                             limit=state.max_batch_bytes)
        if as_json and (problem := encoding_problem(body, "")) is not None:
            raise _Refused(problem[0], problem[1])
        export = decode_request(body, json=as_json)
    except OtlpDecodeError as error:
        return _status(400, str(error), as_json)
    except _Refused as refused:
        return _status(refused.status, str(refused), as_json)

    outcome = response_requests(export, response_id_attribute=state.otlp_response_id_attribute)
    tenancy = tenancy_of(state, caller)
    events: list[PreparedEvent] = []
    rejected = list(outcome.rejected)
    for item in outcome.requests:
        try:
            events.append(prepare("response.logged", parse_request("response.logged", item),
                                  tenancy, state.topics))
        except RequestProblem as problem:
            first = problem.errors[0] if problem.errors else {}
            rejected.append(f"span {item['metadata']['span_id']}: "
                            f"{'.'.join(map(str, first.get('loc', [])))} {first.get('msg', '')}")
    if events:
        try:
            await publish_events(state, events)
        except ProblemException as error:
            return _status(error.status, error.detail, as_json, headers=error.headers)
    state.metrics.otlp_spans.labels("event").inc(len(events))
    state.metrics.otlp_spans.labels("ignored").inc(outcome.ignored)
    state.metrics.otlp_spans.labels("rejected").inc(len(rejected))
    if rejected:
        state.count("response.logged", "invalid", len(rejected))
    answer = ExportTraceServiceResponse()
    if rejected:
        answer.partial_success.rejected_spans = len(rejected)
        answer.partial_success.error_message = "; ".join(rejected[:20])[:4_000]
    return _encoded(200, answer, as_json)


def _decompressed(body: bytes, encoding: str, *, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise _Refused(415, f"the content encodings accepted are gzip and identity, not {encoding}")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise _Refused(400, f"the body is not valid gzip: {error}") from None
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise _Refused(413, f"the decompressed body is over the limit of {limit} bytes")
    return inflated


def _status(
    code: int, message: str, as_json: bool, headers: dict[str, str] | None = None
) -> Response:
    """A failure as OTLP/HTTP answers it: a `google.rpc.Status` in the request's encoding."""
    return _encoded(code, Status(code=_GRPC_CODES.get(code, 2), message=message), as_json,
                    headers=headers)


# google.rpc.Code for the HTTP statuses this route answers with.
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 413: 8, 415: 3, 429: 8, 503: 14}


def _encoded(
    code: int, message: Message, as_json: bool, headers: dict[str, str] | None = None
) -> Response:
    if as_json:
        return Response(json_format.MessageToJson(message, indent=None), status_code=code,
                        media_type=JSON, headers=headers)
    return Response(message.SerializeToString(), status_code=code, media_type=PROTOBUF,
                    headers=headers)
