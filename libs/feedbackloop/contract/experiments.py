"""`experiment.exposure`: a unit was shown a variant of an experiment (topic: responses).

Ingest publishes one when it answers `POST /v1/experiments/{name}/assign` (and when the ranking
API ranks a session inside a ranker experiment); a client that decides what to show itself may
send one too. The envelope's `experiment` and `variant` name what was shown; the unit is the
envelope's user (its HMAC) or session, as `payload.unit` says, and keys the event, so one
unit's exposures stay in order. The metrics consumer counts distinct units per variant (the
sample-ratio check); consumers that do not care ignore it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from feedbackloop.contract.envelope import ContractModel, Envelope

ExposureSource = Literal["assign", "ranking", "client"]


class ExposurePayload(ContractModel):
    unit: Literal["user", "session"]
    source: ExposureSource = "client"


class ExperimentExposure(Envelope):
    type: Literal["experiment.exposure"] = "experiment.exposure"
    payload: ExposurePayload

    @model_validator(mode="after")
    def _names_what_and_whom(self) -> ExperimentExposure:
        if self.experiment is None or self.variant is None:
            raise ValueError("an exposure needs `experiment` and `variant`")
        if self.payload.unit == "user" and self.user_id is None:
            raise ValueError("an exposure of a user needs user_id")
        if self.payload.unit == "session" and self.session_id is None:
            raise ValueError("an exposure of a session needs session_id")
        return self

    @property
    def subject(self) -> str:
        unit = self.user_id if self.payload.unit == "user" else self.session_id
        assert unit is not None
        return unit
