"""The ops tests' tools: promtool, amtool and alertmanager, installed on first use."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ops.tools import install_prometheus_tools


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    return install_prometheus_tools()
