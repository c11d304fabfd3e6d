"""The weights topic: what the learner publishes for every promoted version of a segment's
weights, keyed `<tenant_id>:<segment>`. Delivery is at least once: deduplicate on
(`tenant_id`, `segment`, `version`).

Schema versions: 1 (the first), 2 adds `kind` (`full`: a batched refit; `incremental`: a
Newton step from the previous version on the choices since) and `promotion` (the off-policy
check that let it be served: its reason and estimates). A reader of version 1 ignores the
added fields; a reader of version 2 takes a version-1 message as `kind = full` with no
promotion. Unpromoted versions are never published.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from feedbackloop.contract.envelope import ContractModel, Identifier, UtcDatetime

WEIGHTS_SCHEMA_VERSION: Literal[2] = 2


class SegmentWeightsVersion(ContractModel):
    """`segment_weights.version`: one promoted version of a segment's learned weights."""

    type: Literal["segment_weights.version"] = "segment_weights.version"
    schema_version: Literal[1, 2] = WEIGHTS_SCHEMA_VERSION
    tenant_id: Identifier
    segment: str
    version: int = Field(ge=1)
    weights: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    confidence: float = Field(ge=0.0, le=1.0)
    sample_size: int = Field(ge=0)
    rank_effects: dict[str, float]
    fitted_at: UtcDatetime
    kind: Literal["full", "incremental"] = "full"
    promotion: dict[str, Any] | None = None
