"""The typed reads of experiment definitions: the one door into the experiments schema for
other packages (ingest's assignment, the query API, the CLI), besides `admin.py`."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from feedbackloop.experiments.definition import Experiment, ExperimentSpec, Status
from services.experiments import repository


def experiment_of(row: asyncpg.Record) -> Experiment:
    spec: Any = row["spec"]
    return Experiment(
        tenant_id=row["tenant_id"], experiment_id=str(row["experiment_id"]), salt=row["salt"],
        spec=ExperimentSpec.model_validate(orjson.loads(spec) if isinstance(spec, str) else spec),
        status=row["status"], created_at=row["created_at"], started_at=row["started_at"],
        stopped_at=row["stopped_at"], concluded_at=row["concluded_at"],
        conclusion=row["conclusion"], winner=row["winner"],
    )


async def experiment(connection: asyncpg.Connection, *, tenant_id: str,
                     name: str) -> Experiment | None:
    row = await repository.fetch_one(connection, tenant_id, name)
    return experiment_of(row) if row is not None else None


async def experiments(connection: asyncpg.Connection, *, tenant_id: str | None,
                      statuses: list[Status] | None = None) -> list[Experiment]:
    """A tenant's experiments (every tenant's with None), oldest first."""
    rows = await repository.fetch_all(connection, tenant_id, list(statuses) if statuses else None)
    return [experiment_of(row) for row in rows]


async def transitions(connection: asyncpg.Connection, *, tenant_id: str,
                      name: str) -> list[dict[str, Any]]:
    return [dict(row) for row in await repository.fetch_transitions(connection, tenant_id, name)]
