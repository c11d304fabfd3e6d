"""`POST /v1/experiments/{name}/assign`: a unit's variant, and its exposure logged.

The variant is a salted hash of the unit (`feedbackloop.experiments.assignment`): the same on
every call and every replica, with nothing written. Definitions come from a per-process cache
(`DefinitionCache`, a short TTL): the database is read at most once per experiment per TTL,
never written. While the experiment runs, the exposure (`experiment.exposure`) is published
and the answer waits for the broker's acknowledgement like every event ingest accepts (503
with Retry-After otherwise); `log_exposure: false` answers without publishing, for a client
that logs the exposure itself when the variant is really shown.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from feedbackloop.contract.envelope import Identifier
from feedbackloop.contract.experiments import ExposureSource
from feedbackloop.contract.requests import ExposureRequest, RawUserId
from feedbackloop.experiments.assignment import Assignment, NotStarted, assignment_of
from feedbackloop.experiments.definition import NAME, Experiment
from feedbackloop.http.auth import Scope
from feedbackloop.http.problems import ProblemException
from services.experiments import reads
from services.ingest.deps import Caller, IngestState, State, requires, tenancy_of
from services.ingest.handlers import publish_events
from services.ingest.processing import PreparedEvent, RequestProblem, prepare

router = APIRouter(prefix="/v1", tags=["experiments"])
DEFINITION_CACHE_SECONDS = 2.0


class DefinitionCache:
    """Experiment definitions by (tenant, name), each kept `ttl` seconds (an unknown name
    too, so a typo does not reach the database on every call). A change (start, stop,
    conclude) reaches every replica within `ttl`. Concurrent misses of one key share one read.
    While PostgreSQL cannot be read, the last definition read is served (assignment goes on
    as it was); with none, `get` raises `ProblemException` 503."""

    def __init__(self, pool: asyncpg.Pool, ttl: float = DEFINITION_CACHE_SECONDS) -> None:
        self.pool = pool
        self.ttl = ttl
        self._entries: dict[tuple[str, str], tuple[float, Experiment | None]] = {}
        self._loading: dict[tuple[str, str], asyncio.Task[Experiment | None]] = {}

    async def get(self, tenant_id: str, name: str) -> Experiment | None:
        key = (tenant_id, name)
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._load(tenant_id, name))
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        try:
            return await asyncio.shield(task)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            if entry is not None:
                return entry[1]
            raise ProblemException(
                503, f"experiment definitions cannot be read now ({type(error).__name__})",
                headers={"Retry-After": "1"}) from None

    async def _load(self, tenant_id: str, name: str) -> Experiment | None:
        async with self.pool.acquire() as connection:
            found = await reads.experiment(connection, tenant_id=tenant_id, name=name)
        if len(self._entries) > 10_000:
            self._entries.clear()  # bounded: names are the tenants' own, but keep memory flat
        self._entries[(tenant_id, name)] = (time.monotonic() + self.ttl, found)
        return found


def definitions(request: Request) -> DefinitionCache:
    cache: DefinitionCache = request.app.state.experiment_definitions
    return cache


class AssignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: RawUserId | None = Field(
        default=None, description="The unit of a `user` experiment (hashed like every user id).")
    session_id: Identifier | None = Field(
        default=None, description="The unit of a `session` experiment.")
    log_exposure: bool = Field(
        default=True, description="Publish the exposure now (false: you log it yourself, "
        "as an `experiment.exposure` event, when the variant is shown).")
    event_id: uuid.UUID | None = Field(
        default=None, description="Idempotency key of the exposure; generated when absent.")


class AssignResponse(BaseModel):
    experiment: str
    variant: str
    unit: Literal["user", "session"]
    in_experiment: bool = Field(description="False once stopped (the control) or concluded "
                                "(the winner): no exposure is logged then.")
    exposure_event_id: uuid.UUID | None


async def _assignment(caller: Caller, cache: DefinitionCache, name: str, *,
                      user_id: str | None, session_id: str | None
                      ) -> tuple[Experiment, Assignment]:
    """The unit's assignment in experiment `name`. Raises `ProblemException` (404 unknown,
    409 a draft, 422 without the experiment's unit)."""
    experiment = await cache.get(caller.tenant_id, name)
    if experiment is None:
        raise ProblemException(404, "no such experiment")
    unit = experiment.spec.unit
    unit_id = user_id if unit == "user" else session_id
    if unit_id is None:
        field = "user_id" if unit == "user" else "session_id"
        raise ProblemException(422, f"experiment {name!r} is randomized by {unit}: send "
                               f"{field}", errors=[{"loc": ["body", field],
                                                   "msg": "required", "type": "missing"}])
    try:
        return experiment, assignment_of(experiment, unit_id)
    except NotStarted as error:
        raise ProblemException(409, str(error)) from None


def _exposure(state: IngestState, caller: Caller, experiment: Experiment, variant: str, *,
              user_id: str | None, session_id: str | None, event_id: uuid.UUID | None,
              source: ExposureSource) -> PreparedEvent:
    exposure = ExposureRequest(
        event_id=event_id, user_id=user_id, session_id=session_id, experiment=experiment.name,
        variant=variant, unit=experiment.spec.unit, source=source,
    )
    try:
        return prepare("experiment.exposure", exposure, tenancy_of(state, caller), state.topics)
    except RequestProblem as problem:
        raise ProblemException(422, "The exposure is invalid.", errors=problem.errors) from None


@dataclass(frozen=True)
class RankerArmChosen:
    """A ranked session's variant in a ranker experiment, what it ranks with, and the
    exposure to publish with the session (None once the experiment is not running)."""

    experiment: str
    variant: str
    in_experiment: bool
    policy: str
    weights_version: int | None
    exposure: PreparedEvent | None


async def ranker_arm(state: IngestState, caller: Caller, cache: DefinitionCache,
                     name: str | None, session_id: str) -> RankerArmChosen | None:
    """For a rank request naming a ranker experiment: the session's arm. None without one."""
    if name is None:
        return None
    experiment, assignment = await _assignment(caller, cache, name, user_id=None,
                                               session_id=session_id)
    if experiment.spec.kind != "ranker":
        raise ProblemException(422, f"experiment {name!r} is not a ranker experiment")
    variant = next(v for v in experiment.spec.variants if v.name == assignment.variant)
    assert variant.ranker is not None  # every variant of a ranker experiment has one
    exposure = (_exposure(state, caller, experiment, variant.name, user_id=None,
                          session_id=session_id, event_id=None, source="ranking")
                if assignment.in_experiment else None)
    return RankerArmChosen(
        experiment=name, variant=variant.name, in_experiment=assignment.in_experiment,
        policy=variant.ranker.policy, weights_version=variant.ranker.weights_version,
        exposure=exposure,
    )


@router.post("/experiments/{name}/assign", dependencies=[requires(Scope.INGEST)])
async def assign(body: AssignRequest, request: Request, state: State, caller: Caller,
                 name: Annotated[str, Path(pattern=NAME)]) -> AssignResponse:
    """The unit's variant: deterministic (a salted hash of the unit, the same on every call
    and replica), nothing written. While the experiment runs the exposure is logged and the
    answer comes after the broker acknowledged it. 404 unknown experiment, 409 a draft."""
    experiment, assignment = await _assignment(
        caller, definitions(request), name, user_id=body.user_id, session_id=body.session_id)
    exposure_id = None
    if assignment.in_experiment and body.log_exposure:
        event = _exposure(state, caller, experiment, assignment.variant, user_id=body.user_id,
                          session_id=body.session_id, event_id=body.event_id, source="assign")
        await publish_events(state, [event])
        exposure_id = uuid.UUID(event.event_id)
    return AssignResponse(experiment=name, variant=assignment.variant,
                          unit=experiment.spec.unit, in_experiment=assignment.in_experiment,
                          exposure_event_id=exposure_id)
