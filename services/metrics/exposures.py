"""Experiment exposures as counts of distinct units per variant: the effect (pure) and its SQL.

A unit's first exposure to an experiment names its variant and minute
(`metrics.experiment_units`, keyed by an opaque digest of tenant, experiment and unit); every
exposure counts in `metrics.experiment_exposure_minute`, as a new unit when it is the unit's
first, and as a crossover when it names another variant than the unit's first (a client that
did not keep to its assignment). Runs inside the pipeline's transaction, like every effect.

An erasure deletes the user's units (`erase_units`) and leaves a tombstone, so the user's
earlier exposures arriving later count nothing; the counts per minute stay, as every rollup's
do (they hold no one), so the sample-ratio check keeps its history.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from feedbackloop.contract import ExperimentExposure, UserErased
from feedbackloop.postgres import record_tombstones


@dataclass(frozen=True)
class ExposureSeen:
    tenant_id: str
    event_id: UUID
    experiment: str
    variant: str
    unit: str  # digest
    bucket: datetime
    occurred_at: datetime
    user_id: str | None = None  # a user unit's HMAC (for its erasure), None for a session unit

    @property
    def subject_id(self) -> str:
        # A user's exposures and their erasure take one lock, so neither misses the other.
        return f"user:{self.user_id}" if self.user_id is not None else f"exposure:{self.unit}"


def unit_digest(tenant_id: str, experiment: str, unit_kind: str, unit_id: str) -> str:
    joined = "\x00".join((tenant_id, experiment, unit_kind, unit_id))
    return hashlib.sha256(joined.encode()).hexdigest()


def exposure_seen(event: ExperimentExposure, bucket: datetime) -> ExposureSeen:
    assert event.experiment is not None and event.variant is not None
    return ExposureSeen(
        tenant_id=event.tenant_id, event_id=event.event_id, experiment=event.experiment,
        variant=event.variant, bucket=bucket, occurred_at=event.occurred_at,
        unit=unit_digest(event.tenant_id, event.experiment, event.payload.unit, event.subject),
        user_id=event.user_id if event.payload.unit == "user" else None,
    )


_Unit = tuple[str, str, str]  # tenant, experiment, unit


async def record_exposures(connection: asyncpg.Connection, run: Sequence[ExposureSeen]) -> None:
    """Count the run's exposures: new units, exposures and crossovers, per variant and minute.
    An exposure of an erased user that happened before the erasure counts nothing."""
    run = await _not_erased(connection, run)
    if not run:
        return
    first: dict[_Unit, ExposureSeen] = {}
    for e in sorted(run, key=lambda e: e.bucket):
        first.setdefault((e.tenant_id, e.experiment, e.unit), e)
    new = await _insert_units(connection, list(first.values()))
    assigned = await _assigned_variants(connection, list(first.values()))
    counts: dict[tuple[str, str, str, datetime], list[int]] = defaultdict(lambda: [0, 0, 0])
    for e in run:
        key = (e.tenant_id, e.experiment, e.variant, e.bucket)
        counts[key][1] += 1
        unit = (e.tenant_id, e.experiment, e.unit)
        if unit in assigned and assigned[unit] != e.variant:
            counts[key][2] += 1
    for unit in new:
        e = first[unit]
        counts[(e.tenant_id, e.experiment, e.variant, e.bucket)][0] += 1
    await _add_exposure_minutes(connection, counts)


async def _insert_units(connection: asyncpg.Connection, units: list[ExposureSeen]) -> list[_Unit]:
    """Each unit's first exposure assigns it (the first one stored wins); returns the units
    that were new."""
    inserted = await connection.fetch(
        """
        INSERT INTO metrics.experiment_units (tenant_id, experiment, unit, variant, bucket)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
        ON CONFLICT DO NOTHING
        RETURNING tenant_id, experiment, unit
        """,
        [e.tenant_id for e in units], [e.experiment for e in units], [e.unit for e in units],
        [e.variant for e in units], [e.bucket for e in units],
    )
    return [(row["tenant_id"], row["experiment"], row["unit"]) for row in inserted]


async def _assigned_variants(
    connection: asyncpg.Connection, units: list[ExposureSeen]
) -> dict[_Unit, str]:
    """The variant each unit is assigned to, as stored (an exposure to another is a crossover)."""
    stored = await connection.fetch(
        """
        SELECT u.tenant_id, u.experiment, u.unit, u.variant, u.bucket
        FROM metrics.experiment_units u
        JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant_id, experiment, unit)
          ON u.tenant_id = k.tenant_id AND u.experiment = k.experiment AND u.unit = k.unit
        """,
        [e.tenant_id for e in units], [e.experiment for e in units], [e.unit for e in units],
    )
    return {(r["tenant_id"], r["experiment"], r["unit"]): r["variant"] for r in stored}


async def _add_exposure_minutes(
    connection: asyncpg.Connection, counts: dict[tuple[str, str, str, datetime], list[int]]
) -> None:
    """Adds (units, exposures, crossovers) to each (tenant, experiment, variant, minute)."""
    keys = sorted(counts)  # one lock order for concurrent consumers
    await connection.execute(
        """
        INSERT INTO metrics.experiment_exposure_minute AS m
            (tenant_id, experiment, variant, bucket, units, exposures, crossovers)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                             $5::bigint[], $6::bigint[], $7::bigint[])
        ON CONFLICT (tenant_id, experiment, variant, bucket) DO UPDATE SET
            units = m.units + EXCLUDED.units, exposures = m.exposures + EXCLUDED.exposures,
            crossovers = m.crossovers + EXCLUDED.crossovers
        """,
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys],
        [counts[k][0] for k in keys], [counts[k][1] for k in keys], [counts[k][2] for k in keys],
    )


async def _not_erased(
    connection: asyncpg.Connection, run: Sequence[ExposureSeen]
) -> list[ExposureSeen]:
    users = sorted({(e.tenant_id, e.user_id) for e in run if e.user_id is not None})
    if not users:
        return list(run)
    rows = await connection.fetch(
        """
        SELECT u.tenant_id, u.user_id, e.erased_at
        FROM unnest($1::text[], $2::text[]) AS u(tenant_id, user_id)
        JOIN metrics.erased_users e
          ON e.tenant_id = u.tenant_id AND e.user_digest = public.erased_user_digest(u.user_id)
        """,
        [tenant for tenant, _ in users], [user for _, user in users],
    )
    erased = {(row["tenant_id"], row["user_id"]): row["erased_at"] for row in rows}
    return [e for e in run
            if (e.tenant_id, e.user_id) not in erased
            or e.occurred_at > erased[(e.tenant_id, e.user_id)]]


async def erase_units(connection: asyncpg.Connection, run: Sequence[UserErased]) -> None:
    """The users' tombstones (their earlier exposures arriving later count nothing), and their
    units deleted in every experiment of their tenant (a unit is stored as its digest, so the
    digests are computed for each experiment the tenant has units in)."""
    await record_tombstones(connection, "metrics", run)
    tenants = sorted({e.tenant_id for e in run})
    experiments = await connection.fetch(
        "SELECT DISTINCT tenant_id, experiment FROM metrics.experiment_units "
        "WHERE tenant_id = ANY($1::text[])",
        tenants,
    )
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for row in experiments:
        by_tenant[row["tenant_id"]].append(row["experiment"])
    doomed = [
        (e.tenant_id, unit_digest(e.tenant_id, experiment, "user", e.user_id))
        for e in run for experiment in by_tenant[e.tenant_id]
    ]
    if doomed:
        await connection.execute(
            """
            DELETE FROM metrics.experiment_units u
            USING unnest($1::text[], $2::text[]) AS d(tenant_id, unit)
            WHERE u.tenant_id = d.tenant_id AND u.unit = d.unit
            """,
            [tenant for tenant, _ in doomed], [unit for _, unit in doomed],
        )
