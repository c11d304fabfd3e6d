"""Tenant isolation on every endpoint of ingest and query.

Tenant B fills every read model (responses, feedback, a correction that becomes training data,
down-votes, ranked sessions and choices enough for learned weights). Then:
- a key of tenant A calls every read endpoint, aimed at B's identifiers, and sees nothing of B
  (404, or an answer without any of B's values), while B's own key sees its data (the control);
- a key of tenant W writes through every write endpoint using B's identifiers (the same
  response ids, session ids and user id, B's tenant id in the body), and B's views are unchanged.
The endpoints are listed from the running services' OpenAPI documents: an endpoint with no case
here fails `test_every_endpoint_has_an_isolation_case`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from services.learner.handlers import SPEC as LEARNER
from services.metrics.handlers import SPEC as METRICS
from services.profiles.handlers import SPEC as PROFILES
from services.trainer.handlers import SPEC as TRAINER
from services.webhooks.handlers import SPEC as WEBHOOKS
from tests.e2e.conftest import Stack
from tests.infra import eventually, group_lag

pytestmark = pytest.mark.e2e

MARK = "bsecret"  # in every value B sends, and in B's tenant id
USER = f"{MARK}-user"
ACTION = f"{MARK}-action"
MODEL = f"{MARK}-model"
CHOICES = 22  # above the stack's learner minimum and refit batch (20)
SPECS = (PROFILES, LEARNER, TRAINER, METRICS, WEBHOOKS)
# B's webhook endpoint: nothing listens there, so its deliveries stay pending and retry.
HOOK_URL = f"http://127.0.0.1:9/{MARK}-hook"
EXPERIMENT = f"{MARK}-experiment"


@dataclass
class Seeded:
    tenant_b: str
    key_a: str
    key_b: str
    key_w: str
    response_ids: list[str]
    session_ids: list[str]
    webhook_endpoint_id: str = ""


def _rank_request(item_prefix: str = f"{MARK}-item") -> dict[str, Any]:
    return {
        "customer": {"id": USER, "segment": "price_sensitive"},
        "candidates": [
            {"item_id": f"{item_prefix}-{n}", "category": f"{item_prefix}-category",
             "scores": {"price": price, "quality": 1 - price}}
            for n, price in enumerate((0.9, 0.5, 0.1))
        ],
        "complexity": f"{MARK}-complexity",
    }


def _experiment_spec() -> dict[str, Any]:
    return {"name": EXPERIMENT, "description": f"{MARK} description",
            "variants": [{"name": f"{MARK}-a", "weight": 1}, {"name": f"{MARK}-b", "weight": 1}],
            "primary_metric": "approval", "minimum_detectable_effect": 0.05,
            "planned_units": 1_000}


async def _ok(response: Awaitable[httpx.Response], status: int = 202) -> dict[str, Any]:
    answer = await response
    assert answer.status_code == status, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def _drained(stack: Stack) -> None:
    """Every consumer group has committed everything published so far."""
    lags: dict[str, int] = {}

    async def no_lag() -> bool:
        for spec in SPECS:
            topics = [stack.names.physical(topic) for topic in spec.topics]
            group = f"{stack.names.prefix}.{spec.name}"
            lags[spec.name] = await group_lag(stack.bootstrap, group, topics)
        return all(lag == 0 for lag in lags.values())

    try:
        await eventually(no_lag, timeout=60, interval=0.5)
    except AssertionError as error:
        raise AssertionError(f"consumer lag stays {lags}") from error


@pytest.fixture(scope="module")
async def seeded(stack: Stack) -> Seeded:
    tenant_b = f"{MARK}-{uuid.uuid4().hex[:8]}"
    scopes = ["ingest", "read", "review", "admin"]
    seeded = Seeded(
        tenant_b=tenant_b,
        key_a=await stack.key(f"a-{uuid.uuid4().hex[:8]}", scopes),
        key_b=await stack.key(tenant_b, scopes),
        key_w=await stack.key(f"w-{uuid.uuid4().hex[:8]}", scopes),
        response_ids=[f"{MARK}-r{n}" for n in range(3)],
        session_ids=[],
    )
    async with stack.query(seeded.key_b) as query:
        endpoint = await _ok(query.post("/v1/webhooks/endpoints", json={
            "url": HOOK_URL, "description": f"{MARK} endpoint",
            "event_types": ["feedback.submitted", "feedback.changed", "feedback.retracted"]}), 201)
        seeded.webhook_endpoint_id = endpoint["endpoint_id"]
        await _ok(query.post("/v1/experiments", json=_experiment_spec()), 201)
        await _ok(query.post(f"/v1/experiments/{EXPERIMENT}/start",
                             json={"note": f"{MARK} note"}), 200)
    async with stack.ingest(seeded.key_b) as ingest:
        for response_id in seeded.response_ids:
            await _ok(ingest.post("/v1/responses", json={
                "response_id": response_id,
                "prompt": [{"role": "user", "content": f"{MARK} prompt: pay my invoice"}],
                "output": f"{MARK} output: invoice paid", "model": MODEL,
                "action_type": ACTION, "user_id": USER,
            }))
            await _ok(ingest.post("/v1/feedback", json={
                "response_id": response_id, "thumb": "down", "user_id": USER}))
        await _ok(ingest.post("/v1/feedback", json={
            "response_id": seeded.response_ids[0], "user_id": USER,
            "correction": {"text": f"{MARK} correction: I scheduled the payment for Friday"}}))
        for response_id in seeded.response_ids[:2]:
            await _ok(ingest.post("/v1/reviews", json={
                "response_id": response_id, "action": "label", "label": f"{MARK}-label",
                "value": f"{MARK}-value", "note": f"{MARK} note"}))
        async def assigned() -> bool:  # ingest's definitions cache sees the start
            answer = await ingest.post(f"/v1/experiments/{EXPERIMENT}/assign",
                                       json={"user_id": USER})
            return answer.status_code == 200 and answer.json()["in_experiment"]

        await eventually(assigned, timeout=10)
        for _ in range(CHOICES):
            ranked = await _ok(ingest.post("/v1/recommendations/rank", json=_rank_request()), 200)
            seeded.session_ids.append(ranked["session_id"])
            await _ok(ingest.post("/v1/recommendations/interactions", json={
                "session_id": ranked["session_id"], "user_id": USER,
                "item_id": ranked["ranked"][0]["item_id"], "interaction": "expanded"}))
            await _ok(ingest.post("/v1/recommendations/choices", json={
                "session_id": ranked["session_id"], "user_id": USER,
                "chosen_item_id": f"{MARK}-item-0", "chosen_rank": 1,
                "important_factors": ["price"], "satisfaction": 4}))

    async with stack.query(seeded.key_b) as query:
        async def everything_materialized() -> bool:
            weights = (await query.get("/v1/segments/weights")).json()
            learned = [s for s in weights["segments"] if s["segment"] == "price_sensitive"
                       and (s.get("current") or {}).get("sample_size") == CHOICES]
            export = await query.get("/v1/training/export", params={"format": "openai-sft"})
            summary = await query.get(f"/v1/users/{USER}/feedback-summary")
            labels = (await query.get("/v1/reviews/agreement")).json()["labels"]
            return (bool(learned) and MARK in export.text and summary.status_code == 200
                    and bool(labels))

        await eventually(everything_materialized, timeout=90, interval=0.5)
    await _drained(stack)
    return seeded


# --- reads ----------------------------------------------------------------------------------

ReadCase = Callable[[httpx.AsyncClient, Seeded], Awaitable[httpx.Response]]
PATTERNS = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}


async def _approval(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/analytics/approval", params={"group_by": "action_type"})


async def _trends(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/analytics/trends", params={
        "metric": "approval", "interval": "day", "group_by": "action_type"})


async def _compare(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/analytics/models/compare", params={"a": MODEL, "b": "other"})


async def _recommendations(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/analytics/recommendations", params={"group_by": "complexity"})


async def _alerts(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/alerts")


async def _weights(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/segments/weights")


async def _summary(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get(f"/v1/users/{USER}/feedback-summary")


async def _export(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/training/export", params={"format": "openai-sft"})


async def _failures(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/training/failure-patterns", params={"min_count": 1} | PATTERNS)


async def _review_queue(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/reviews/queue", params=PATTERNS)


async def _agreement(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/reviews/agreement")
async def _webhook_endpoints(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/webhooks/endpoints")


async def _webhook_deliveries(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/webhooks/deliveries", params={"limit": 1_000})


async def _experiments(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get("/v1/experiments")


async def _experiment(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get(f"/v1/experiments/{EXPERIMENT}")


async def _experiment_results(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get(f"/v1/experiments/{EXPERIMENT}/results")


async def _experiment_transitions(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.get(f"/v1/experiments/{EXPERIMENT}/transitions")


async def _assign(client: httpx.AsyncClient, _: Seeded) -> httpx.Response:
    return await client.post(f"/v1/experiments/{EXPERIMENT}/assign",
                             json={"user_id": USER, "log_exposure": False})


async def _rank(client: httpx.AsyncClient, seeded: Seeded) -> httpx.Response:
    # Neutral values: the answer echoes the request, and the session is logged in the caller's
    # tenant; what must not reach A are B's learned weights.
    request = _rank_request("item") | {"customer": {"id": "a-customer",
                                                    "segment": "price_sensitive"},
                                       "complexity": "simple"}
    return await client.post("/v1/recommendations/rank", json=request)


# (service, method, path) -> the request; B's answer must show B's data, A's none of it.
READS: dict[tuple[str, str, str], ReadCase] = {
    ("query", "GET", "/v1/analytics/approval"): _approval,
    ("query", "GET", "/v1/analytics/trends"): _trends,
    ("query", "GET", "/v1/analytics/models/compare"): _compare,
    ("query", "GET", "/v1/analytics/recommendations"): _recommendations,
    ("query", "GET", "/v1/segments/weights"): _weights,
    ("query", "GET", "/v1/users/{user_id}/feedback-summary"): _summary,
    ("query", "GET", "/v1/training/export"): _export,
    ("query", "GET", "/v1/training/failure-patterns"): _failures,
    ("query", "GET", "/v1/reviews/queue"): _review_queue,
    ("query", "GET", "/v1/reviews/agreement"): _agreement,
    ("ingest", "POST", "/v1/recommendations/rank"): _rank,
    ("query", "GET", "/v1/webhooks/endpoints"): _webhook_endpoints,
    ("query", "GET", "/v1/webhooks/deliveries"): _webhook_deliveries,
    ("query", "GET", "/v1/experiments"): _experiments,
    ("query", "GET", "/v1/experiments/{name}"): _experiment,
    ("query", "GET", "/v1/experiments/{name}/results"): _experiment_results,
    ("query", "GET", "/v1/experiments/{name}/transitions"): _experiment_transitions,
    ("ingest", "POST", "/v1/experiments/{name}/assign"): _assign,
}
# Alert state is evaluated on a schedule (a minute by default), so B may have none yet: A's
# answer is still checked for B's values, without a control.
READS_WITHOUT_CONTROL: dict[tuple[str, str, str], ReadCase] = {
    ("query", "GET", "/v1/alerts"): _alerts,
}
# Per-endpoint evidence that B's answer holds B's data even where the values are numbers.
CONTROLS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "/v1/analytics/models/compare": lambda body: body["a"]["total"] == 3,
    "/v1/segments/weights": lambda body: any(
        (s.get("current") or {}).get("sample_size") == CHOICES for s in body["segments"]),
    "/v1/recommendations/rank": lambda body: body["weights"]["source"] == "learned",
}
# Operator endpoints without a key: they must not carry any tenant's values either.
OPS = {
    (service, "GET", path)
    for service in ("ingest", "query")
    for path in ("/healthz", "/readyz", "/metrics", "/asyncapi.json")
}
WRITES = {
    ("ingest", "POST", path)
    for path in (
        "/v1/responses", "/v1/feedback", "/v1/feedback/retractions", "/v1/feedback/tokens",
        "/v1/recommendations/sessions", "/v1/recommendations/interactions", "/v1/recommendations/choices",
        "/v1/users/{user_id}/consent", "/v1/users/{user_id}/erasure", "/v1/events",
        "/v1/reviews", "/v1/traces",
    )
} | {
    ("query", "POST", "/v1/webhooks/endpoints"),
    ("query", "DELETE", "/v1/webhooks/endpoints/{endpoint_id}"),
    ("query", "POST", "/v1/webhooks/deliveries/replay"),
    ("query", "POST", "/v1/webhooks/deliveries/{delivery_id}/replay"),
    ("query", "POST", "/v1/experiments"),
    ("query", "POST", "/v1/experiments/{name}/start"),
    ("query", "POST", "/v1/experiments/{name}/stop"),
    ("query", "POST", "/v1/experiments/{name}/conclude"),
}


async def test_every_endpoint_has_an_isolation_case(stack: Stack) -> None:
    listed = set()
    for service in ("ingest", "query"):
        async with httpx.AsyncClient(base_url=stack.services.url(service)) as client:
            document = (await client.get("/openapi.json")).json()
        listed |= {
            (service, method.upper(), path)
            for path, operations in document["paths"].items()
            for method in operations
        }
    covered = set(READS) | set(READS_WITHOUT_CONTROL) | OPS | WRITES
    assert listed - covered == set(), "endpoints without a tenant isolation case"
    assert covered - listed == set(), "cases for endpoints that no longer exist"


@pytest.mark.parametrize("endpoint", sorted(READS | READS_WITHOUT_CONTROL), ids=" ".join)
async def test_a_key_of_tenant_a_reads_nothing_of_tenant_b(
    stack: Stack, seeded: Seeded, endpoint: tuple[str, str, str]
) -> None:
    service, _, path = endpoint
    case = (READS | READS_WITHOUT_CONTROL)[endpoint]
    connect = stack.ingest if service == "ingest" else stack.query
    if endpoint in READS:
        async with connect(seeded.key_b) as as_b:
            control = await case(as_b, seeded)
        assert control.status_code == 200, control.text
        if path in CONTROLS:
            assert CONTROLS[path](control.json()), control.text
        else:
            assert MARK in control.text, control.text  # the check below can fail
    async with connect(seeded.key_a) as as_a:
        answer = await case(as_a, seeded)
    assert answer.status_code in (200, 403, 404), answer.text
    if path == "/v1/analytics/models/compare":
        compared = answer.json()
        assert compared["a"].pop("model") == MODEL  # A's own query parameter, echoed
        assert compared["a"]["total"] == 0
        assert MARK not in str(compared)
    else:
        assert MARK not in answer.text, answer.text
    if path == "/v1/segments/weights":
        assert all(s.get("current") is None or s["current"]["sample_size"] != CHOICES
                   for s in answer.json()["segments"])
    if path == "/v1/recommendations/rank":
        assert answer.json()["weights"]["source"] == "default"


@pytest.mark.parametrize("endpoint", sorted(OPS), ids=" ".join)
async def test_operator_endpoints_carry_no_tenant_values(
    stack: Stack, seeded: Seeded, endpoint: tuple[str, str, str]
) -> None:
    service, _, path = endpoint
    async with httpx.AsyncClient(base_url=stack.services.url(service)) as client:
        answer = await client.get(path)
    assert answer.status_code == 200, answer.text
    assert MARK not in answer.text


# --- writes ---------------------------------------------------------------------------------


async def _snapshot_of_b(stack: Stack, seeded: Seeded) -> dict[str, Any]:
    """Everything B can read, without the parts that move by themselves (evaluation times)."""
    async with stack.query(seeded.key_b) as query:
        snapshot: dict[str, Any] = {}
        for endpoint, case in READS.items():
            if endpoint[0] == "query":
                answer = await case(query, seeded)
                assert answer.status_code == 200, answer.text
                snapshot[endpoint[2]] = answer.text if "export" in endpoint[2] else answer.json()
    for answer in snapshot.values():
        if isinstance(answer, dict):  # default time ranges end at "now"
            answer.pop("start", None)
            answer.pop("end", None)
    # B's deliveries keep being attempted: what they are, not how their attempts went.
    snapshot["/v1/webhooks/deliveries"] = sorted(
        (d["delivery_id"], d["endpoint_id"], d["event_type"], str(d["body"]))
        for d in snapshot["/v1/webhooks/deliveries"]
    )
    return snapshot


async def test_a_key_of_another_tenant_cannot_write_into_tenant_b(
    stack: Stack, seeded: Seeded
) -> None:
    await _drained(stack)  # B's own sessions logged by the rank controls above, if any
    before = await _snapshot_of_b(stack, seeded)
    response_id, session_id = seeded.response_ids[0], seeded.session_ids[0]
    async with stack.ingest(seeded.key_w) as ingest:
        # The tenant comes from the key only: naming B's tenant in a body is refused outright.
        named = await ingest.post("/v1/feedback", json={
            "response_id": response_id, "thumb": "up", "tenant_id": seeded.tenant_b})
        assert named.status_code == 422, named.text

        writes = {
            "/v1/responses": {"response_id": response_id, "model": MODEL, "action_type": ACTION,
                              "prompt": [{"role": "user", "content": "w"}], "output": "w",
                              "user_id": USER},
            "/v1/feedback": {"response_id": response_id, "thumb": "up", "user_id": USER},
            # Names B's response and user, and is later than B's votes: still W's own signal.
            "/v1/feedback/retractions": {"response_id": response_id, "kind": "thumb",
                                         "user_id": USER},
            "/v1/recommendations/sessions": {
                "session_id": session_id, "user_id": USER, "algorithm_version": "w",
                "segment": "price_sensitive",
                "options": [{"item_id": f"{MARK}-item-2", "rank": 1, "scores": {"price": 1.0}}]},
            "/v1/recommendations/interactions": {
                "session_id": session_id, "user_id": USER, "item_id": f"{MARK}-item-2",
                "interaction": "contacted"},
            "/v1/recommendations/choices": {
                "session_id": session_id, "user_id": USER, "chosen_item_id": f"{MARK}-item-2",
                "chosen_rank": 1, "important_factors": ["quality"], "satisfaction": 1},
            f"/v1/users/{USER}/consent": {"training_allowed": False},
            f"/v1/users/{USER}/erasure": {},
            "/v1/reviews": {"response_id": response_id, "action": "label",
                            "label": f"{MARK}-label", "value": "w-value"},
            "/v1/events": {"events": [
                {"type": "feedback.submitted", "response_id": rid, "thumb": "up",
                 "user_id": USER} for rid in seeded.response_ids
            ]},
        }
        written = set()
        for path, body in writes.items():
            await _ok(ingest.post(path, json=body))
            written.add(("ingest", "POST", path.replace(USER, "{user_id}")))
        # A GenAI span sent with W's key, naming B's response id: a response of W's alone.
        span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
                "name": "chat", "endTimeUnixNano": "1700000000000000000", "attributes": [
                    {"key": "gen_ai.request.model", "value": {"stringValue": "w-model"}},
                    {"key": "gen_ai.input.messages", "value": {"stringValue": orjson.dumps(
                        [{"role": "user", "content": "w"}]).decode()}},
                    {"key": "gen_ai.output.messages", "value": {"stringValue": orjson.dumps(
                        [{"role": "assistant", "content": "w"}]).decode()}},
                    {"key": "feedbackloop.action_type", "value": {"stringValue": "w"}}]}
        traced = await ingest.post("/v1/traces", json={"resourceSpans": [
            {"scopeSpans": [{"spans": [span]}]}]})
        assert traced.status_code == 200 and traced.json() == {}, traced.text
        written.add(("ingest", "POST", "/v1/traces"))
        # A feedback token W mints for B's response id grants W's tenant only.
        minted = await _ok(ingest.post("/v1/feedback/tokens", json={"response_id": response_id}),
                           status=201)
        written.add(("ingest", "POST", "/v1/feedback/tokens"))
    async with stack.ingest(minted["token"]) as page:
        await _ok(page.post("/v1/feedback", json={"response_id": response_id, "thumb": "down",
                                                  "user_id": USER}))
    async with stack.query(seeded.key_b) as as_b:
        b_delivery = (await as_b.get("/v1/webhooks/deliveries")).json()[0]["delivery_id"]
    async with stack.query(seeded.key_w) as query:
        # W's own endpoint, and W's replays and deletes aimed at B's ids, which W cannot see.
        await _ok(query.post("/v1/webhooks/endpoints", json={
            "url": HOOK_URL, "event_types": ["feedback.submitted"]}), 201)
        assert (await query.post("/v1/webhooks/deliveries/replay", json={})).json() == {"replayed": []}
        replay = await query.post(f"/v1/webhooks/deliveries/{b_delivery}/replay")
        deleted = await query.delete(f"/v1/webhooks/endpoints/{seeded.webhook_endpoint_id}")
        assert (replay.status_code, deleted.status_code) == (404, 404), (replay.text, deleted.text)
        # W's experiment of the same name is W's own: B's stays as it was.
        await _ok(query.post("/v1/experiments", json=_experiment_spec()), 201)
        for action in ("start", "stop", "conclude"):
            await _ok(query.post(f"/v1/experiments/{EXPERIMENT}/{action}"), 200)
        written |= {
            ("query", "POST", "/v1/experiments"),
            *(("query", "POST", f"/v1/experiments/{{name}}/{action}")
              for action in ("start", "stop", "conclude")),
            ("query", "POST", "/v1/webhooks/endpoints"),
            ("query", "POST", "/v1/webhooks/deliveries/replay"),
            ("query", "POST", "/v1/webhooks/deliveries/{delivery_id}/replay"),
            ("query", "DELETE", "/v1/webhooks/endpoints/{endpoint_id}"),
        }
    assert written == WRITES
    await _drained(stack)
    assert await _snapshot_of_b(stack, seeded) == before
