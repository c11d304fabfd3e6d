"""Generated requests against the running ingest and query services, from their own OpenAPI
documents: valid and invalid bodies, parameters and headers, with a valid API key.

The promise checked: no 5xx ever, and every 4xx is an RFC 9457 problem document
(`application/problem+json` with the same `status`). A bounded number of cases per operation
keeps `make test` fast; `FEEDBACKLOOP_SCHEMATHESIS_MAX_EXAMPLES` raises it for a longer run.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
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
        assert content_type == ["application/problem+json"], where
        problem = response.json()
        assert problem["status"] == response.status_code, where
        assert problem["title"] and "detail" in problem, where


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
