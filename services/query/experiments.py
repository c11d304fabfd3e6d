"""Experiment routes: define (`admin`), start, stop and conclude (`admin`), list and read
(`read`), and the results with their verdict (`read`). Every query is scoped to the caller's
tenant; another tenant's experiment is 404, as if it did not exist (the answer does not even repeat
the name asked for)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from feedbackloop.experiments.definition import (
    NAME,
    Experiment,
    ExperimentSpec,
    Status,
)
from feedbackloop.http.problems import ProblemException
from services.experiments import admin, reads
from services.experiments.results import ResultsOut, experiment_results
from services.metrics.reads import Grain
from services.query.deps import Admin, Reader, State

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])
ExperimentName = Annotated[str, Path(pattern=NAME)]


class ExperimentOut(BaseModel):
    experiment_id: str
    name: str
    status: Status
    spec: ExperimentSpec
    created_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None
    concluded_at: datetime | None
    conclusion: str | None
    winner: str | None


class TransitionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2_000, pattern=r"^[^\x00]*$")


class ConcludeRequest(TransitionRequest):
    winner: str | None = Field(
        default=None, pattern=NAME,
        description="The variant every unit gets from now on; the control when absent.",
    )


def experiment_out(experiment: Experiment) -> ExperimentOut:
    return ExperimentOut(
        experiment_id=experiment.experiment_id, name=experiment.name, status=experiment.status,
        spec=experiment.spec, created_at=experiment.created_at, started_at=experiment.started_at,
        stopped_at=experiment.stopped_at, concluded_at=experiment.concluded_at,
        conclusion=experiment.conclusion, winner=experiment.winner,
    )


@router.post("", status_code=201)
async def create_experiment(state: State, caller: Admin, body: ExperimentSpec) -> ExperimentOut:
    """A new experiment, in `draft` until started. 409 when the name is taken (names are
    never reused: the events tagged with one belong to one experiment)."""
    async with state.pool.acquire() as connection:
        try:
            created = await admin.create(connection, tenant_id=caller.tenant_id, spec=body)
        except admin.ExperimentExists as error:
            raise ProblemException(409, str(error)) from None
    return experiment_out(created)


@router.get("")
async def list_experiments(
    state: State, caller: Reader,
    status: Annotated[list[Status] | None, Query()] = None,
) -> list[ExperimentOut]:
    async with state.pool.acquire() as connection:
        found = await reads.experiments(connection, tenant_id=caller.tenant_id, statuses=status)
    return [experiment_out(e) for e in found]


async def _experiment(state: State, tenant_id: str, name: str) -> Experiment:
    async with state.pool.acquire() as connection:
        found = await reads.experiment(connection, tenant_id=tenant_id, name=name)
    if found is None:
        raise ProblemException(404, "no such experiment")
    return found


@router.get("/{name}")
async def get_experiment(state: State, caller: Reader, name: ExperimentName) -> ExperimentOut:
    return experiment_out(await _experiment(state, caller.tenant_id, name))


@router.get("/{name}/transitions")
async def experiment_transitions(state: State, caller: Reader,
                                 name: ExperimentName) -> list[dict[str, Any]]:
    """Every start, stop and conclusion: when, by whom (the API key), with its note."""
    await _experiment(state, caller.tenant_id, name)
    async with state.pool.acquire() as connection:
        return await reads.transitions(connection, tenant_id=caller.tenant_id, name=name)


async def _transition(state: State, caller: Any, name: str, action: str,
                      body: TransitionRequest, winner: str | None = None) -> ExperimentOut:
    async with state.pool.acquire() as connection:
        try:
            changed = await admin.transition(
                connection, tenant_id=caller.tenant_id, name=name, action=action,
                actor=f"key:{caller.key_id}", note=body.note, winner=winner,
            )
        except admin.UnknownExperiment:
            raise ProblemException(404, "no such experiment") from None
        except admin.TransitionRefused as error:
            raise ProblemException(409, str(error)) from None
    return experiment_out(changed)


@router.post("/{name}/start")
async def start_experiment(state: State, caller: Admin, name: ExperimentName,
                           body: TransitionRequest | None = None) -> ExperimentOut:
    """Assignment begins (a stopped experiment resumes with the same salt: units keep their
    variants). Ingest's cached definitions see it within a couple of seconds."""
    return await _transition(state, caller, name, "start", body or TransitionRequest())


@router.post("/{name}/stop")
async def stop_experiment(state: State, caller: Admin, name: ExperimentName,
                          body: TransitionRequest | None = None) -> ExperimentOut:
    """Assignment pauses: every unit gets the control and no exposure is logged."""
    return await _transition(state, caller, name, "stop", body or TransitionRequest())


@router.post("/{name}/conclude")
async def conclude_experiment(state: State, caller: Admin, name: ExperimentName,
                              body: ConcludeRequest | None = None) -> ExperimentOut:
    """The experiment ends for good: every unit gets `winner` (the control when absent)."""
    body = body or ConcludeRequest()
    return await _transition(state, caller, name, "conclude", body, winner=body.winner)


@router.get("/{name}/results")
async def experiment_results_route(
    state: State, caller: Reader, name: ExperimentName,
    grain: Annotated[Literal["minute", "hour", "day"], Query()] = "hour",
) -> ResultsOut:
    """Per variant and metric (the primary and each guardrail): observations, the mean, the
    difference from the control with its always-valid interval and p-value (mSPRT, looked at
    once per `grain` bucket), and the curve of those over time; the units exposed and the
    sample-ratio check; guardrail breaches; the verdict."""
    experiment = await _experiment(state, caller.tenant_id, name)
    g: Grain = grain
    async with state.pool.acquire() as connection:
        _, results = await experiment_results(connection, experiment, g)
    return results
