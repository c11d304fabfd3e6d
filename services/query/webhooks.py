"""Webhook routes: a tenant's endpoints (`admin` to create and delete, `read` to list) and
their deliveries (`read` to list, `admin` to replay). Every query is scoped to the caller's
tenant; another tenant's endpoint or delivery is 404, as if it did not exist."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from feedbackloop.http.problems import ProblemException
from services.query.deps import Admin, Reader, State
from services.webhooks import admin, reads
from services.webhooks.admin import SecretBox
from services.webhooks.reads import WEBHOOK_EVENT_TYPES, WebhookEventType

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

DeliveryState = Literal["pending", "delivered", "dead"]


class EndpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="http(s); a public address unless the operator allows "
                         "private networks (FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS).")
    event_types: list[WebhookEventType] = Field(min_length=1, max_length=len(WEBHOOK_EVENT_TYPES))
    description: str = Field(default="", max_length=500, pattern=r"^[^\x00]*$")
    secret: str | None = Field(
        default=None, max_length=200,
        description="A Standard Webhooks secret (`whsec_` + base64 of 24-64 bytes); generated "
        "when absent. Returned once, in this response.",
    )


class EndpointOut(BaseModel):
    endpoint_id: UUID
    url: str
    event_types: list[str]
    description: str
    source: str
    created_at: datetime


class CreatedEndpoint(EndpointOut):
    secret: str = Field(description="Verify each delivery's signature with it; shown only now.")


class DeliveryOut(BaseModel):
    delivery_id: UUID = Field(description="The `webhook-id` header: the same on every attempt.")
    endpoint_id: UUID
    event_type: str
    state: DeliveryState
    attempts: int
    replays: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    body: dict[str, Any]


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint_id: UUID | None = None
    state: Literal["dead", "delivered"] = "dead"
    limit: int = Field(default=1_000, ge=1, le=10_000)


class Replayed(BaseModel):
    replayed: list[UUID]


def _endpoint(view: reads.EndpointView) -> EndpointOut:
    return EndpointOut(**view.__dict__)


@router.get("/endpoints")
async def list_endpoints(state: State, caller: Reader) -> list[EndpointOut]:
    """The tenant's endpoints (secrets are never shown again)."""
    async with state.pool.acquire() as connection:
        return [_endpoint(v) for v in await reads.endpoints(connection, tenant_id=caller.tenant_id)]


@router.post("/endpoints", status_code=201)
async def create_endpoint(
    request: Request, state: State, caller: Admin, body: EndpointRequest
) -> CreatedEndpoint:
    """A new endpoint, subscribed to `event_types`; messages consumed from now on are
    delivered to it, signed with its secret. 422 for a URL whose host is a literal address
    outside the public internet, or `localhost`, unless
    FEEDBACKLOOP_WEBHOOKS_ALLOW_PRIVATE_NETWORKS is true (names are checked again, resolved,
    at every delivery)."""
    allow_private = bool(getattr(request.app.state, "webhooks_allow_private_networks", False))
    box: SecretBox = request.app.state.webhook_secrets
    try:
        async with state.pool.acquire() as connection:
            view, secret = await admin.create_endpoint(
                connection, tenant_id=caller.tenant_id, url=str(body.url),
                event_types=body.event_types, box=box, description=body.description,
                secret=body.secret, allow_private_networks=allow_private,
            )
    except ValueError as error:
        raise ProblemException(422, str(error), errors=[
            {"loc": ["body"], "msg": str(error), "type": "value_error"}
        ]) from None
    return CreatedEndpoint(**view.__dict__, secret=secret)


@router.delete("/endpoints/{endpoint_id}", status_code=204)
async def delete_endpoint(state: State, caller: Admin, endpoint_id: UUID) -> Response:
    """Deletes the endpoint; its pending deliveries become dead."""
    async with state.pool.acquire() as connection:
        if not await admin.delete_endpoint(connection, tenant_id=caller.tenant_id,
                                           endpoint_id=endpoint_id):
            raise ProblemException(404, f"no endpoint {endpoint_id}")
    return Response(status_code=204)


@router.get("/deliveries")
async def list_deliveries(
    state: State,
    caller: Reader,
    endpoint_id: UUID | None = None,
    delivery_state: Annotated[DeliveryState | None, Query(alias="state")] = None,
    event_type: WebhookEventType | None = None,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
) -> list[DeliveryOut]:
    """The tenant's deliveries, newest first: state, attempts, the last answer, the body."""
    async with state.pool.acquire() as connection:
        found = await reads.deliveries(
            connection, tenant_id=caller.tenant_id, endpoint_id=endpoint_id,
            state=delivery_state, event_type=event_type, limit=limit,
        )
    return [DeliveryOut(**d.__dict__) for d in found]


@router.post("/deliveries/{delivery_id}/replay", status_code=202)
async def replay_delivery(state: State, caller: Admin, delivery_id: UUID) -> Replayed:
    """Sends a dead or delivered delivery again, same `webhook-id` and body, with a fresh set
    of attempts. 404 when the tenant has no such delivery that is not pending."""
    async with state.pool.acquire() as connection:
        replayed = await admin.replay_deliveries(
            connection, tenant_id=caller.tenant_id, delivery_ids=[delivery_id]
        )
    if not replayed:
        raise ProblemException(404, f"no replayable delivery {delivery_id}")
    return Replayed(replayed=replayed)


@router.post("/deliveries/replay", status_code=202)
async def replay_deliveries(state: State, caller: Admin, body: ReplayRequest) -> Replayed:
    """Sends again up to `limit` of the tenant's deliveries in `state` (dead by default), of
    one endpoint if given, oldest first."""
    async with state.pool.acquire() as connection:
        replayed = await admin.replay_deliveries(
            connection, tenant_id=caller.tenant_id, endpoint_id=body.endpoint_id,
            state=body.state, limit=body.limit,
        )
    return Replayed(replayed=replayed)
