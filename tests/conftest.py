"""Session-wide real infrastructure: one PostgreSQL server and one broker for the whole run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import kafka_broker, postgres_server


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="session")
def postgres_url(workdir: Path) -> Iterator[str]:
    with postgres_server(workdir) as url:
        yield url


@pytest.fixture(scope="session")
def kafka_bootstrap(workdir: Path) -> Iterator[str]:
    with kafka_broker(workdir) as bootstrap:
        yield bootstrap
