"""The webhooks consumer's pure logic: which message is which webhook event, and the bodies.

Feedback: the consumer keeps the current event of each signal identity (the latest by
`signal_order`, as every read model does) and classifies each new event against it:

- `feedback.submitted`: the identity had no current signal (never seen, or retracted) and a
  later submission made one; feedback that names nobody is a signal of its own, always new.
- `feedback.changed`: a later submission replaced the current signal (a flipped thumb, a new
  rating, an edited correction); the body carries the signal it replaced as `previous`.
- `feedback.retracted`: a later retraction removed the current signal.
- nothing: an older event arriving after a newer one (it never wins), or a retraction of a
  signal that is not there. Its order is still remembered, so whatever arrives later is
  classified against the true current state.

Whatever the arrival order, the last notification of an identity describes its current state.
Training examples follow the same rule by revision (`training_example.created`, `.revised`,
`.retracted`); alert state changes are delivered as they come (`alert.state_changed`).

Erasure (`user.erasure_requested`): everything kept of the user's feedback goes, deliveries in
every state and the current signals, and the user's earlier events that arrive later send
nothing. A training example's text is its conversation's, whose user the webhooks consumer does
not know: the trainer retracts the example with reason `erasure`, and that retraction removes
every delivery of the example. For this, each delivery and signal keeps the digest of its
user (`user_digest`, the SHA-256 of the tenant-keyed user HMAC, as the erasure tombstones do;
never in a body) or the example it is of.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from feedbackloop.contract import (
    AlertStateChanged,
    ErasureRequested,
    FeedbackRetracted,
    FeedbackSubmitted,
    Message,
    TrainingExample,
    TrainingExampleRetracted,
    signal_digest,
    signal_order,
)

WebhookEventType = Literal[
    "feedback.submitted", "feedback.changed", "feedback.retracted",
    "training_example.created", "training_example.revised", "training_example.retracted",
    "alert.state_changed",
]
WEBHOOK_EVENT_TYPES: tuple[WebhookEventType, ...] = (
    "feedback.submitted", "feedback.changed", "feedback.retracted",
    "training_example.created", "training_example.revised", "training_example.retracted",
    "alert.state_changed",
)
ALL_TENANTS = "*"  # the endpoint configured from FEEDBACKLOOP_ALERT_WEBHOOK_URL
_DELIVERY_NAMESPACE = uuid.UUID("1f6e0c5a-93d2-4b8e-a7f4-52c1d0e9b3a7")

Order = tuple[datetime, UUID]


@dataclass(frozen=True)
class FeedbackNotice:
    """A feedback event, as the webhooks consumer needs it. `signal` is the identity's opaque
    digest (None: the event is a signal of its own); `value` what a body says of the signal."""

    tenant_id: str
    event_id: UUID
    response_id: str
    signal: str | None
    order: Order
    retracted: bool
    value: dict[str, Any]
    meta: dict[str, Any]
    user_digest: str | None = None  # whose event it is (None: it names no user)


@dataclass(frozen=True)
class UserErasure:
    tenant_id: str
    event_id: UUID
    user_digest: str
    erased_at: datetime  # the erasure's occurred_at: the user's events up to it send nothing


@dataclass(frozen=True)
class ExampleNotice:
    tenant_id: str
    event_id: UUID
    example_id: UUID
    revision: int | None  # None: a retraction
    data: dict[str, Any]


@dataclass(frozen=True)
class AlertNotice:
    tenant_id: str
    event_id: UUID
    rule: str
    data: dict[str, Any]


WebhooksEffect = FeedbackNotice | ExampleNotice | AlertNotice | UserErasure


def user_digest(user_id: str | None) -> str | None:
    """What identifies a user's rows here: SHA-256 of the tenant-keyed HMAC, in hex (the same
    as `public.erased_user_digest`)."""
    return None if user_id is None else hashlib.sha256(user_id.encode()).hexdigest()


@dataclass(frozen=True)
class CurrentSignal:
    order: Order
    retracted: bool
    value: dict[str, Any] | None
    user_digest: str | None = None


@dataclass(frozen=True)
class CurrentExample:
    revision: int
    retracted: bool


@dataclass(frozen=True)
class Notification:
    """One webhook event of one tenant, before it is addressed to endpoints."""

    tenant_id: str
    event_type: WebhookEventType
    source_id: UUID
    body: dict[str, Any]
    user_digest: str | None = None  # the user whose event it tells of
    example_id: UUID | None = None  # the example it tells of


def process_message(message: Message) -> WebhooksEffect | None:
    """The effect of one consumed message; None for a message webhooks do not tell of."""
    if isinstance(message, FeedbackSubmitted):
        return _submission_notice(message)
    if isinstance(message, FeedbackRetracted):
        return _retraction_notice(message)
    if isinstance(message, TrainingExample | TrainingExampleRetracted):
        return ExampleNotice(
            tenant_id=message.tenant_id, event_id=message.event_id,
            example_id=message.example_id,
            revision=message.revision if isinstance(message, TrainingExample) else None,
            data=message.model_dump(mode="json", exclude={"type", "schema_version"}),
        )
    if isinstance(message, ErasureRequested):
        assert message.user_id is not None  # the contract requires it
        return UserErasure(
            tenant_id=message.tenant_id, event_id=message.event_id,
            user_digest=hashlib.sha256(message.user_id.encode()).hexdigest(),
            erased_at=message.occurred_at,
        )
    if isinstance(message, AlertStateChanged):
        return AlertNotice(
            tenant_id=message.tenant_id, event_id=message.event_id, rule=message.rule,
            data=message.model_dump(mode="json", exclude={"type", "schema_version"}),
        )
    return None


def _submission_notice(message: FeedbackSubmitted) -> FeedbackNotice:
    payload = message.payload
    person = message.person
    kind = payload.kind
    signal: Any = getattr(payload, kind)
    value = {
        "kind": kind,
        kind: signal.model_dump(mode="json") if hasattr(signal, "model_dump") else signal,
        "verdict": payload.verdict,
        "model": payload.model,
        "action_type": payload.action_type,
        "event_id": str(message.event_id),
        "occurred_at": message.occurred_at.isoformat(),
    }
    return FeedbackNotice(
        tenant_id=message.tenant_id,
        event_id=message.event_id,
        response_id=payload.response_id,
        signal=None if person is None
        else signal_digest(message.tenant_id, payload.response_id, person, kind),
        order=signal_order(message.occurred_at, message.event_id),
        retracted=False,
        value=value,
        meta=_meta(message),
        user_digest=user_digest(message.user_id),
    )


def _retraction_notice(message: FeedbackRetracted) -> FeedbackNotice:
    payload = message.payload
    return FeedbackNotice(
        tenant_id=message.tenant_id,
        event_id=message.event_id,
        response_id=payload.response_id,
        signal=signal_digest(message.tenant_id, payload.response_id, message.person, payload.kind),
        order=signal_order(message.occurred_at, message.event_id),
        retracted=True,
        value={"kind": payload.kind},
        meta=_meta(message),
        user_digest=user_digest(message.user_id),
    )


def _meta(event: FeedbackSubmitted | FeedbackRetracted) -> dict[str, Any]:
    return {
        "event_id": str(event.event_id),
        "response_id": event.payload.response_id,
        "occurred_at": event.occurred_at.isoformat(),
        "received_at": event.received_at.isoformat(),
        "session_id": event.session_id,
        "experiment": event.experiment,
        "variant": event.variant,
    }


def classify_feedback(
    current: CurrentSignal | None, notice: FeedbackNotice
) -> WebhookEventType | None:
    """What a feedback event is against its identity's current state (see the module)."""
    if notice.signal is None:
        return "feedback.submitted"
    if current is not None and current.order >= notice.order:
        return None
    if notice.retracted:
        return "feedback.retracted" if current is not None and not current.retracted else None
    if current is None or current.retracted:
        return "feedback.submitted"
    return "feedback.changed"


def classify_example(
    current: CurrentExample | None, notice: ExampleNotice
) -> WebhookEventType | None:
    """A first revision (or one after a retraction) is created, a higher one revised; a
    retraction of an example that is there is retracted; anything else is old news."""
    if notice.revision is None:
        return "training_example.retracted" if current and not current.retracted else None
    if current is None or current.retracted:
        return "training_example.created"
    return "training_example.revised" if notice.revision > current.revision else None


def advance_feedback(
    current: Mapping[tuple[str, str], CurrentSignal], notices: Sequence[FeedbackNotice]
) -> tuple[list[Notification], dict[tuple[str, str], CurrentSignal]]:
    """The notifications of `notices`, applied in order to the stored `current` states, and
    the states that changed (to store)."""
    states = dict(current)
    changed: dict[tuple[str, str], CurrentSignal] = {}
    notifications: list[Notification] = []
    for notice in notices:
        key = (notice.tenant_id, notice.signal) if notice.signal is not None else None
        before = states.get(key) if key is not None else None
        event_type = classify_feedback(before, notice)
        if key is not None and (before is None or before.order < notice.order):
            after = CurrentSignal(notice.order, notice.retracted,
                                  None if notice.retracted else notice.value, notice.user_digest)
            states[key] = changed[key] = after
        if event_type is not None:
            notifications.append(Notification(
                notice.tenant_id, event_type, notice.event_id,
                feedback_body(event_type, notice, before), user_digest=notice.user_digest,
            ))
    return notifications, changed


def advance_examples(
    current: Mapping[tuple[str, UUID], CurrentExample], notices: Sequence[ExampleNotice]
) -> tuple[list[Notification], dict[tuple[str, UUID], CurrentExample]]:
    states = dict(current)
    changed: dict[tuple[str, UUID], CurrentExample] = {}
    notifications: list[Notification] = []
    for notice in notices:
        key = (notice.tenant_id, notice.example_id)
        before = states.get(key)
        event_type = classify_example(before, notice)
        if notice.revision is None:
            if before is not None:
                states[key] = changed[key] = replace(before, retracted=True)
            else:
                states[key] = changed[key] = CurrentExample(0, True)
        elif event_type is not None:
            states[key] = changed[key] = CurrentExample(notice.revision, False)
        if event_type is not None:
            notifications.append(Notification(
                notice.tenant_id, event_type, notice.event_id,
                {"type": event_type, "timestamp": _example_time(notice), "data": notice.data},
                example_id=notice.example_id,
            ))
    return notifications, changed


def alert_notifications(notices: Iterable[AlertNotice]) -> list[Notification]:
    return [
        Notification(n.tenant_id, "alert.state_changed", n.event_id, {
            "type": "alert.state_changed", "timestamp": n.data["since"], "data": n.data,
        })
        for n in notices
    ]


def feedback_body(
    event_type: WebhookEventType, notice: FeedbackNotice, before: CurrentSignal | None
) -> dict[str, Any]:
    """`{"type", "timestamp", "data"}`: the event's envelope fields, `signal_id` (the same for
    every event of one identity), the signal now (`signal`, absent for a retraction) and the
    one it replaced or removed (`previous`, for changed and retracted)."""
    data: dict[str, Any] = notice.meta | {
        "signal_id": notice.signal,
        "kind": notice.value["kind"],
    }
    if not notice.retracted:
        data["signal"] = {k: v for k, v in notice.value.items() if k not in ("event_id", "occurred_at")}
    if event_type != "feedback.submitted" and before is not None and before.value is not None:
        data["previous"] = before.value
    return {"type": event_type, "timestamp": notice.meta["occurred_at"], "data": data}


def _example_time(notice: ExampleNotice) -> Any:
    if notice.revision is None:
        return notice.data.get("retracted_at")
    return notice.data.get("provenance", {}).get("created_at")


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: UUID
    tenant_id: str
    event_types: frozenset[str]


@dataclass(frozen=True)
class Delivery:
    delivery_id: UUID
    tenant_id: str
    endpoint_id: UUID
    event_type: str
    body: dict[str, Any]
    user_digest: str | None = None
    example_id: UUID | None = None


def address(notifications: Iterable[Notification], endpoints: Iterable[Endpoint]) -> list[Delivery]:
    """One delivery per notification and endpoint of its tenant subscribed to its type (and per
    all-tenant endpoint, for alert changes). A delivery belongs to its endpoint's tenant: those
    of the all-tenant endpoint are the operator's (tenant '*'), listed to no tenant. The
    delivery id is derived, so the same message never makes two deliveries to one endpoint."""
    by_tenant: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        by_tenant.setdefault(endpoint.tenant_id, []).append(endpoint)
    deliveries = []
    for notification in notifications:
        candidates = by_tenant.get(notification.tenant_id, [])
        if notification.event_type == "alert.state_changed":
            candidates = candidates + by_tenant.get(ALL_TENANTS, [])
        for endpoint in candidates:
            if notification.event_type in endpoint.event_types:
                deliveries.append(Delivery(
                    uuid.uuid5(_DELIVERY_NAMESPACE, f"{endpoint.endpoint_id}:"
                               f"{notification.event_type}:{notification.source_id}"),
                    endpoint.tenant_id, endpoint.endpoint_id, notification.event_type,
                    notification.body, notification.user_digest, notification.example_id,
                ))
    return deliveries


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n (1-based) that fails waits `base * 2**(n-1)` seconds, at most `max_seconds`;
    the `max_attempts`-th failure makes the delivery dead."""

    max_attempts: int
    base_seconds: float
    max_seconds: float

    def next_delay(self, attempts: int) -> float | None:
        """Seconds until the next attempt after `attempts` failed ones; None: dead."""
        if attempts >= self.max_attempts:
            return None
        return float(min(self.base_seconds * 2 ** (attempts - 1), self.max_seconds))
