"""Managing experiments: create, start, stop, conclude. Scoped to one tenant; with `reads.py`
the one door into the experiments schema. Every refusal is a typed error and changes nothing."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

import asyncpg

from feedbackloop.experiments.definition import TRANSITIONS, Experiment, ExperimentSpec
from services.experiments import repository
from services.experiments.reads import experiment_of


class ExperimentExists(ValueError):
    pass


class UnknownExperiment(LookupError):
    pass


class TransitionRefused(ValueError):
    pass


async def create(connection: asyncpg.Connection, *, tenant_id: str,
                 spec: ExperimentSpec) -> Experiment:
    """A new experiment in `draft`, with a fresh salt. Names are never reused, so the events
    tagged with one always belong to one experiment."""
    row = await repository.insert(
        connection, tenant_id=tenant_id, name=spec.name, experiment_id=uuid.uuid4(),
        salt=secrets.token_hex(16), spec=spec.model_dump(mode="json"),
    )
    if row is None:
        raise ExperimentExists(f"the tenant already has an experiment named {spec.name!r}")
    return experiment_of(row)


async def transition(connection: asyncpg.Connection, *, tenant_id: str, name: str, action: str,
                     actor: str, note: str | None = None, winner: str | None = None,
                     at: datetime | None = None) -> Experiment:
    """Apply `start`, `stop` or `conclude` (see `TRANSITIONS`); `winner`, on `conclude`, names
    the variant every unit gets from now on (the control when none)."""
    if action not in TRANSITIONS:
        raise TransitionRefused(f"unknown action {action!r}; one of {', '.join(TRANSITIONS)}")
    allowed, to_status = TRANSITIONS[action]
    async with connection.transaction():
        row = await repository.fetch_one(connection, tenant_id, name, for_update=True)
        if row is None:
            raise UnknownExperiment(f"no experiment {name!r}")
        current = experiment_of(row)
        if current.status not in allowed:
            raise TransitionRefused(
                f"cannot {action} an experiment that is {current.status} "
                f"(only one that is {' or '.join(allowed)})")
        if winner is not None:
            if action != "conclude":
                raise TransitionRefused("a winner is named only when concluding")
            if winner not in [v.name for v in current.spec.variants]:
                raise TransitionRefused(f"{winner!r} is not a variant of {name!r}")
        updated = await repository.update_status(
            connection, tenant_id=tenant_id, name=name, action=action,
            from_status=current.status, to_status=to_status, actor=actor,
            at=at or datetime.now(UTC), note=note, winner=winner,
        )
    return experiment_of(updated)
