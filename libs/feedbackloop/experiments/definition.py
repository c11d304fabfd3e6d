"""An experiment as data: its variants and weights, its unit, its metrics, and the verdict
its analysis reaches. Pure: the models the API, the CLI and ingest share."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Metric = Literal["approval", "mean_rating", "conversion", "chosen_rank", "satisfaction"]
METRICS: tuple[Metric, ...] = ("approval", "mean_rating", "conversion", "chosen_rank",
                               "satisfaction")
Unit = Literal["user", "session"]
Status = Literal["draft", "running", "stopped", "concluded"]
STATUSES: tuple[Status, ...] = ("draft", "running", "stopped", "concluded")
Decision = Literal["keep_running", "ship", "stop_for_harm", "stop_no_effect",
                   "sample_ratio_mismatch"]
DECISIONS: tuple[Decision, ...] = ("keep_running", "ship", "stop_for_harm", "stop_no_effect",
                                   "sample_ratio_mismatch")
Kind = Literal["general", "ranker"]


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is observed: a proportion (`bernoulli`) or a mean of bounded values, and
    which way is better (+1 higher, -1 lower). A guardrail's test is tuned to effects of
    `guardrail_tau` (the primary metric's to the experiment's minimum detectable effect)."""

    family: Literal["feedback", "recommendation"]
    bernoulli: bool
    direction: int
    description: str
    guardrail_tau: float


METRIC_INFO: dict[Metric, MetricInfo] = {
    "approval": MetricInfo("feedback", True, 1, "thumbs up / (up + down), per current thumb",
                             0.02),
    "mean_rating": MetricInfo("feedback", False, 1, "mean 1-5 rating, per current rating",
                                0.2),
    "conversion": MetricInfo("recommendation", True, 1,
                             "sessions with a choice / sessions shown", 0.02),
    "chosen_rank": MetricInfo("recommendation", False, -1,
                              "mean rank of the chosen option (1 is the top); lower is better",
                              0.3),
    "satisfaction": MetricInfo("recommendation", False, 1, "mean 1-5 satisfaction of choices", 0.2),
}

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
_NAME = re.compile(NAME)


class RankerArm(BaseModel):
    """What a ranker experiment's variant ranks with: the learned weights (`learned`: the
    customer's or the segment's newest promoted version, as without an experiment), equal
    weights (`defaults`), or a candidate (`version`: version `weights_version` of the
    segment's weights, promoted or not; a segment without that version ranks with its
    current weights)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["learned", "defaults", "version"]
    weights_version: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _version_named(self) -> RankerArm:
        if (self.policy == "version") != (self.weights_version is not None):
            raise ValueError("`weights_version` is given exactly when the policy is `version`")
        return self


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME, description="As the events' `variant` will carry it.")
    weight: float = Field(gt=0, le=1_000_000, description="Relative share of the units.")
    ranker: RankerArm | None = Field(
        default=None, description="For a ranker experiment: what this variant ranks with."
    )


class ExperimentSpec(BaseModel):
    """What a tenant defines. The first variant is the control every other is compared to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME, description="As the events' `experiment` will carry it; "
                      "unique per tenant, never reused.")
    description: str = Field(default="", max_length=2_000, pattern=r"^[^\x00]*$")
    kind: Kind = "general"
    unit: Unit = "user"
    variants: list[Variant] = Field(min_length=2, max_length=10)
    primary_metric: Metric
    guardrail_metrics: list[Metric] = Field(default_factory=list, max_length=len(METRICS))
    minimum_detectable_effect: float = Field(
        gt=0, le=10, description="The smallest difference worth finding, in the primary "
        "metric's units (0.02 is two points of approval or conversion; 0.2 a fifth of a "
        "star). It tunes the sequential test.")
    planned_units: int = Field(ge=100, le=1_000_000_000,
                               description="The horizon: units exposed in all.")
    alpha: float = Field(default=0.05, gt=0, lt=0.5)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be distinct")
        if len(set(self.guardrail_metrics)) != len(self.guardrail_metrics):
            raise ValueError("a guardrail metric is listed twice")
        if self.primary_metric in self.guardrail_metrics:
            raise ValueError("the primary metric cannot also be a guardrail")
        arms = [v.ranker for v in self.variants]
        if self.kind == "ranker":
            if any(arm is None for arm in arms):
                raise ValueError("every variant of a ranker experiment needs `ranker`")
            if self.unit != "session":
                raise ValueError("a ranker experiment is randomized by session")
        elif any(arm is not None for arm in arms):
            raise ValueError("`ranker` belongs to ranker experiments (`kind: ranker`)")
        return self


@dataclass(frozen=True)
class Experiment:
    """A stored experiment: its spec, its salt (assignment is a hash of it and the unit, so
    every replica answers alike) and where it is in its life."""

    tenant_id: str
    experiment_id: str
    salt: str
    spec: ExperimentSpec
    status: Status
    created_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None
    concluded_at: datetime | None
    conclusion: str | None
    winner: str | None

    @property
    def name(self) -> str:
        return self.spec.name


TRANSITIONS: dict[str, tuple[tuple[Status, ...], Status]] = {
    "start": (("draft", "stopped"), "running"),
    "stop": (("running",), "stopped"),
    "conclude": (("draft", "running", "stopped"), "concluded"),
}
"""Action -> (the statuses it applies to, the status it leads to)."""


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))
