"""Generated requests against the running ingest and query services, from their own OpenAPI
documents: valid and invalid bodies, parameters and headers, with a valid API key.

The promise checked: no 5xx ever, and every 4xx is an RFC 9457 problem document
(`application/problem+json` with the same `status`), except on the OTLP receiver, which answers
as OTLP/HTTP clients expect: a `google.rpc.Status` in protobuf or JSON. A bounded number of
cases per operation keeps `make test` fast; `FEEDBACKLOOP_SCHEMATHESIS_MAX_EXAMPLES` raises it
for a longer run.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = int(os.environ.get("FEEDBACKLOOP_SCHEMATHESIS_MAX_EXAMPLES", "12"))
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure here is reproducible
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _check(case: Any, stack: Stack) -> None:
    # The caller's key, whatever Authorization header the case generated: the point is to reach
    # the validation and the handlers, not to stop at 401.
    response = case.call(headers={"Authorization": f"Bearer {stack.api_key}"}, timeout=30)
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    # The broker and PostgreSQL are up: even a 503 would be a bug here.
    assert response.status_code < 500, where
    if response.status_code >= 400:
        content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type")
        if case.path == "/v1/traces" and response.status_code not in (401, 403, 429):
            _check_otlp_status(response, content_type, where)
            return
        assert content_type == ["application/problem+json"], where
        problem = response.json()
        assert problem["status"] == response.status_code, where
        assert problem["title"] and "detail" in problem, where


def _check_otlp_status(response: Any, content_type: list[str] | None, where: str) -> None:
    if content_type == ["application/json"]:
        status = json_format.Parse(response.text, Status())
    else:
        assert content_type == ["application/x-protobuf"], where
        status = Status.FromString(response.content)
    assert status.code and status.message, where


# schemathesis's own pytest integration (`from_fixture(...).parametrize()`) does not run under
# pytest 9 (it sets `node._nodeid`), so each operation's strategy is driven by hypothesis here.
@pytest.mark.parametrize("service", ["ingest", "query"])
def test_no_5xx_and_every_4xx_is_a_problem(stack: Stack, service: str) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.services.url(service)}/openapi.json")
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in MODES:

            @FUZZ_SETTINGS
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                _check(case, stack)

            try:
                fuzz()
            except Unsatisfiable:
                # Nothing can be made invalid (no parameters, no body): positive cases only.
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
            except AssertionError as error:
                failures[f"{operation.label} ({mode.value})"] = str(error)[:1500]
    assert operations >= 5
    assert failures == {}
