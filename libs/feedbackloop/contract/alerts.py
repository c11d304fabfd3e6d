"""The alerts topic: state changes of the query service's alert rules.

The alert evaluator writes each change in the same transaction as the new state (an outbox),
and a relay publishes it as `alert.state_changed`, keyed `<tenant_id>:<rule>`. `event_id` is
assigned when the change is queued, so a change published twice is the same message twice.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from feedbackloop.contract.envelope import ContractModel, Identifier, UtcDatetime

AlertStateName = Literal["ok", "pending", "firing"]


class AlertStateChanged(ContractModel):
    """`alert.state_changed`: one rule, for one tenant and subject (an action type, a segment,
    or '' for the whole tenant), went from `previous` to `state` at `since`."""

    type: Literal["alert.state_changed"] = "alert.state_changed"
    schema_version: int = 1
    event_id: UUID
    tenant_id: Identifier
    rule: str
    subject: str
    previous: AlertStateName
    state: AlertStateName
    since: UtcDatetime
    value: float | None
    sample: int
    threshold: float
    evaluated_at: UtcDatetime
