"""The fault suite runs only when asked (`make test-faults` sets FEEDBACKLOOP_TEST_FAULTS=1):
it takes minutes and stops and kills processes, so `make test` leaves it out."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: kills and stops parts of the system (slow)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("FEEDBACKLOOP_TEST_FAULTS") == "1":
        return
    skip = pytest.mark.skip(reason="the fault suite runs with FEEDBACKLOOP_TEST_FAULTS=1")
    for item in items:
        if "faults" in item.keywords:
            item.add_marker(skip)
