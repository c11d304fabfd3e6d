"""Experiments over real processes on the session's broker and PostgreSQL: define and start
an experiment through the query API, assign users through ingest (sticky, timed), send
responses and thumbs through the variants, and read a verdict of `ship` for the variant that
is really better; skew an experiment's exposures on purpose and see the sample-ratio check
fire, in the results and on the gauges; stop and conclude; run a ranker experiment through
the ranking API; and refuse what is wrong without changing anything."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
import uuid
from typing import Any

import httpx
import pytest

from feedbackloop.client import AsyncFeedbackClient, FeedbackClient, FeedbackError
from services.cli.main import main as cli
from tests.e2e.conftest import Stack
from tests.infra import eventually

pytestmark = pytest.mark.e2e


def _spec(name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": name, "unit": "user",
        "variants": [{"name": "control", "weight": 1}, {"name": "concise", "weight": 1}],
        "primary_metric": "approval", "guardrail_metrics": ["mean_rating"],
        "minimum_detectable_effect": 0.1, "planned_units": 5_000,
    } | overrides


async def _send(ingest: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 500):
        answer = await ingest.post("/v1/events", json={"events": events[start:start + 500]})
        assert answer.status_code == 202, answer.text
        assert answer.json()["invalid"] == 0, answer.text


async def _results(query: httpx.AsyncClient, name: str) -> dict[str, Any]:
    answer = await query.get(f"/v1/experiments/{name}/results")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_an_experiment_from_definition_to_verdict(
    stack: Stack, ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    name = f"prompt-{uuid.uuid4().hex[:8]}"
    created = await query.post("/v1/experiments", json=_spec(name))
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "draft"
    assert (await query.post("/v1/experiments", json=_spec(name))).status_code == 409
    # A draft assigns nobody.
    refused = await ingest.post(f"/v1/experiments/{name}/assign", json={"user_id": "u-0"})
    assert refused.status_code == 409, refused.text
    started = await query.post(f"/v1/experiments/{name}/start", json={"note": "go"})
    assert started.status_code == 200 and started.json()["status"] == "running"

    users = [f"user-{i}" for i in range(400)]
    variants: dict[str, str] = {}
    timings: list[float] = []

    async def assigned() -> bool:  # ingest's cache sees the start within its TTL
        answer = await ingest.post(f"/v1/experiments/{name}/assign",
                                   json={"user_id": users[0], "log_exposure": False})
        return answer.status_code == 200 and answer.json()["in_experiment"]

    assert await eventually(assigned, timeout=10)
    for user in users:
        began = time.perf_counter()
        answer = await ingest.post(f"/v1/experiments/{name}/assign", json={"user_id": user})
        timings.append(time.perf_counter() - began)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["in_experiment"] and body["exposure_event_id"]
        variants[user] = body["variant"]
    pure: list[float] = []
    for user in users[:100]:  # sticky
        began = time.perf_counter()
        again = await ingest.post(f"/v1/experiments/{name}/assign",
                                  json={"user_id": user, "log_exposure": False})
        pure.append(time.perf_counter() - began)
        assert again.json()["variant"] == variants[user]
    for label, measured in (("exposure acknowledged by the broker", timings),
                            ("log_exposure false", pure)):
        measured.sort()
        print(f"assign over HTTP, {label}: p50 {statistics.median(measured) * 1000:.1f} ms, "
              f"p95 {measured[int(len(measured) * 0.95)] * 1000:.1f} ms, "
              f"max {measured[-1] * 1000:.1f} ms")
    assert statistics.median(timings) < 0.010 and statistics.median(pure) < 0.010
    split = sum(v == "concise" for v in variants.values())
    assert 140 < split < 260

    # The truth: concise is approved 85% of the time, control 45%; ratings alike.
    rng = random.Random(16)
    events: list[dict[str, Any]] = []
    for user, variant in variants.items():
        rate = 0.85 if variant == "concise" else 0.45
        response_id = f"{name}-{user}"
        events.append({"type": "response.logged", "response_id": response_id, "user_id": user,
                       "output": "Done.", "model": "m", "action_type": "todo",
                       "prompt": [{"role": "user", "content": "do it"}],
                       "experiment": name, "variant": variant})
        events.append({"type": "feedback.submitted", "response_id": response_id,
                       "user_id": user, "thumb": "up" if rng.random() < rate else "down"})
        events.append({"type": "feedback.submitted", "response_id": response_id,
                       "user_id": user, "rating": rng.choice((3, 4, 4, 5))})
    await _send(ingest, events)

    async def complete() -> dict[str, Any] | None:
        results = await _results(query, name)
        approval = results["metrics"][0]["variants"]
        ratings = results["metrics"][1]["variants"]
        counted = sum(v["observations"] for v in approval)
        rated = sum(v["observations"] for v in ratings)
        return results if results["units"] == 400 and counted == 400 and rated == 400 else None

    results = await eventually(complete, timeout=60)
    assert results["sample_ratio"]["units"]["concise"] == split
    assert not results["sample_ratio"]["mismatch"]
    concise = results["metrics"][0]["variants"][1]
    assert concise["variant"] == "concise" and concise["side"] == "better"
    assert concise["lower"] > 0 and concise["p_value"] < 0.05
    assert results["guardrail_breaches"] == []
    assert results["verdict"]["decision"] == "ship"
    assert results["verdict"]["variant"] == "concise"
    assert concise["curve"] and concise["curve"][-1]["p_value"] == concise["p_value"]

    # Stopped: the control for everyone and nothing logged; concluded: the winner.
    assert (await query.post(f"/v1/experiments/{name}/stop")).status_code == 200

    async def shows(variant: str, in_experiment: bool) -> bool:
        answer = (await ingest.post(f"/v1/experiments/{name}/assign",
                                    json={"user_id": "someone-new"})).json()
        return answer["variant"] == variant and answer["in_experiment"] is in_experiment \
            and answer["exposure_event_id"] is None

    assert await eventually(lambda: shows("control", False), timeout=10)
    conclude = await query.post(f"/v1/experiments/{name}/conclude",
                                json={"winner": "concise", "note": "ship it"})
    assert conclude.status_code == 200 and conclude.json()["winner"] == "concise"
    assert await eventually(lambda: shows("concise", False), timeout=10)
    again = await query.post(f"/v1/experiments/{name}/start")
    assert again.status_code == 409
    history = (await query.get(f"/v1/experiments/{name}/transitions")).json()
    assert [h["action"] for h in history] == ["start", "stop", "conclude"]


async def test_a_skewed_assignment_fires_the_sample_ratio_check(
    stack: Stack, ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    """A client that drops half of one variant's exposures (say, a page that fails to load
    in it): the split of units departs from 50/50 and the experiment must not be trusted."""
    name = f"skewed-{uuid.uuid4().hex[:8]}"
    assert (await query.post("/v1/experiments", json=_spec(name))).status_code == 201
    assert (await query.post(f"/v1/experiments/{name}/start")).status_code == 200

    async def running() -> bool:
        answer = await ingest.post(f"/v1/experiments/{name}/assign",
                                   json={"user_id": "probe", "log_exposure": False})
        return answer.status_code == 200 and answer.json()["in_experiment"]

    assert await eventually(running, timeout=10)
    exposures: list[dict[str, Any]] = []
    kept = {"control": 0, "concise": 0}
    for i in range(800):
        user = f"skew-{i}"
        answer = await ingest.post(f"/v1/experiments/{name}/assign",
                                   json={"user_id": user, "log_exposure": False})
        variant = answer.json()["variant"]
        if variant == "concise" and i % 2:
            continue  # the exposure that never reaches us
        kept[variant] += 1
        exposures.append({"type": "experiment.exposure", "user_id": user, "unit": "user",
                          "experiment": name, "variant": variant})
    await _send(ingest, exposures)

    async def counted() -> dict[str, Any] | None:
        results = await _results(query, name)
        return results if results["units"] == len(exposures) else None

    results = await eventually(counted, timeout=60)
    assert results["sample_ratio"]["units"] == kept
    assert results["sample_ratio"]["mismatch"], results["sample_ratio"]
    assert results["sample_ratio"]["p_value"] < 0.001
    assert results["verdict"]["decision"] == "sample_ratio_mismatch"

    experiment_id = (await query.get(f"/v1/experiments/{name}")).json()["experiment_id"]
    line = f'feedbackloop_experiment_sample_ratio_mismatch{{experiment_id="{experiment_id}"}} 1.0'

    async def gauge() -> bool:
        return line in (await query.get("/metrics")).text

    assert await eventually(gauge, timeout=40, interval=1)
    units = (await query.get("/metrics")).text
    assert (f'feedbackloop_experiment_units{{arm="variant-1",experiment_id="{experiment_id}"}} '
            f'{float(kept["concise"])}') in units
    assert name not in units  # the tenant's names stay out of the operator's series


async def test_a_ranker_experiment_tags_the_sessions_it_ranks(
    stack: Stack, ingest: httpx.AsyncClient, query: httpx.AsyncClient
) -> None:
    name = f"ranker-{uuid.uuid4().hex[:8]}"
    spec = _spec(name, kind="ranker", unit="session", primary_metric="conversion",
                 guardrail_metrics=["satisfaction"], minimum_detectable_effect=0.05,
                 variants=[{"name": "learned", "weight": 1, "ranker": {"policy": "learned"}},
                           {"name": "defaults", "weight": 1, "ranker": {"policy": "defaults"}},
                           {"name": "candidate", "weight": 1,
                            "ranker": {"policy": "version", "weights_version": 3}}])
    assert (await query.post("/v1/experiments", json=spec)).status_code == 201
    assert (await query.post(f"/v1/experiments/{name}/start")).status_code == 200
    candidates = [{"item_id": f"item-{k}", "scores": {"price": k / 4, "quality": 1 - k / 4}}
                  for k in range(4)]

    async def rank(session_id: str) -> httpx.Response:
        return await ingest.post("/v1/recommendations/rank", json={
            "session_id": session_id, "experiment": name, "candidates": candidates,
            "customer": {"id": f"customer-{session_id}"}})

    first = await eventually(lambda: _ranked(rank, "s-probe"), timeout=10)
    assert first["experiment"] == name
    assert first["variant"] in ("learned", "defaults", "candidate")
    shown: dict[str, str] = {}
    for i in range(60):
        answer = await rank(f"{name}-s{i}")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        shown[body["session_id"]] = body["variant"]
        if body["variant"] == "defaults":
            assert body["weights"]["source"] == "default"
    choices = [{"type": "recommendation.choice", "session_id": session, "chosen_item_id": "item-0",
                "chosen_rank": 1, "satisfaction": 4} for session in shown]
    await _send(ingest, choices)
    sessions = len(shown) + 1

    async def counted() -> dict[str, Any] | None:
        results = await _results(query, name)
        conversion = results["metrics"][0]["variants"]
        total = sum(v["observations"] for v in conversion)
        return results if results["units"] == sessions and total == sessions else None

    results = await eventually(counted, timeout=60)
    by_variant = {v["variant"]: v for v in results["metrics"][0]["variants"]}
    defaults = sum(v == "defaults" for v in shown.values()) + (first["variant"] == "defaults")
    assert by_variant["defaults"]["observations"] == defaults
    assert results["sample_ratio"]["units"]["defaults"] == defaults
    assert set(shown.values()) == {"learned", "defaults", "candidate"}
    # No segment has a version 3 yet: the candidate ranks with the current weights (defaults).
    assert by_variant["candidate"]["observations"] > 0


async def _ranked(rank: Any, session_id: str) -> dict[str, Any] | None:
    answer = await rank(session_id)
    body: dict[str, Any] = answer.json()
    return body if answer.status_code == 200 and body.get("variant") else None


async def test_bad_requests_change_nothing(stack: Stack, ingest: httpx.AsyncClient,
                                           query: httpx.AsyncClient) -> None:
    reader = await stack.key("acme", ["read"])
    async with stack.query(reader) as read_only:
        refused = await read_only.post("/v1/experiments", json=_spec("not-allowed"))
        assert refused.status_code == 403
    bad = [
        _spec("bad-1", variants=[{"name": "a", "weight": 1}]),
        _spec("bad-2", primary_metric="clicks"),
        _spec("bad-3", guardrail_metrics=["approval"]),
        _spec("bad 4"),
        _spec("bad-5", minimum_detectable_effect=0),
        _spec("bad-6", kind="ranker"),
    ]
    for spec in bad:
        answer = await query.post("/v1/experiments", json=spec)
        assert answer.status_code == 422, (spec, answer.text)
    names = {e["name"] for e in (await query.get("/v1/experiments")).json()}
    assert not names & {"not-allowed", "bad-1", "bad-2", "bad-3", "bad 4", "bad-5", "bad-6"}
    assert (await ingest.post("/v1/experiments/nothing-here/assign",
                              json={"user_id": "u"})).status_code == 404
    name = f"units-{uuid.uuid4().hex[:8]}"
    assert (await query.post("/v1/experiments", json=_spec(name))).status_code == 201
    assert (await query.post(f"/v1/experiments/{name}/stop")).status_code == 409
    assert (await query.post(f"/v1/experiments/{name}/conclude",
                             json={"winner": "nobody"})).status_code == 409
    assert (await query.get(f"/v1/experiments/{name}")).json()["status"] == "draft"
    assert (await query.post(f"/v1/experiments/{name}/start")).status_code == 200

    async def needs_user() -> bool:
        answer = await ingest.post(f"/v1/experiments/{name}/assign",
                                   json={"session_id": "s"})
        return answer.status_code == 422

    assert await eventually(needs_user, timeout=10)
    other = await stack.key("globex", ["read", "admin"])
    async with stack.query(other) as globex:
        assert (await globex.get(f"/v1/experiments/{name}")).status_code == 404
        assert (await globex.post(f"/v1/experiments/{name}/stop")).status_code == 404


async def test_the_cli_defines_runs_and_reads_an_experiment(
    stack: Stack, ingest: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FEEDBACKLOOP_DATABASE_URL", stack.database_url)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    create = ["experiments", "create", "--tenant", "acme", "--name", name,
              "--variants", "control=2,bold=1", "--primary", "mean_rating",
              "--guardrails", "approval", "--mde", "0.3", "--planned-units", "1000"]
    assert await asyncio.to_thread(cli, create) == 0
    assert f"created {name}" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="already has an experiment"):
        await asyncio.to_thread(cli, create)
    with pytest.raises(SystemExit, match="invalid experiment"):
        await asyncio.to_thread(cli, [*create[:5], "other", "--variants", "only=1",
                                      *create[8:]])
    assert await asyncio.to_thread(cli, ["experiments", "start", "--tenant", "acme", name]) == 0
    assert await asyncio.to_thread(cli, ["experiments", "list", "--tenant", "acme",
                                         "--status", "running"]) == 0
    listed = capsys.readouterr().out
    assert name in listed and "control=2,bold=1" in listed
    with pytest.raises(SystemExit, match="cannot start an experiment that is running"):
        await asyncio.to_thread(cli, ["experiments", "start", "--tenant", "acme", name])

    async def bold() -> str | None:
        for i in range(60):
            answer = await ingest.post(f"/v1/experiments/{name}/assign",
                                       json={"user_id": f"c-{i}"})
            if answer.status_code != 200:
                return None
        return "assigned"

    assert await eventually(bold, timeout=10)

    async def results() -> dict[str, Any] | None:
        capsys.readouterr()
        assert await asyncio.to_thread(cli, ["experiments", "results", "--tenant", "acme",
                                             name]) == 0
        body: dict[str, Any] = json.loads(capsys.readouterr().out)
        return body if body["units"] == 60 else None

    body = await eventually(results, timeout=60)
    assert body["sample_ratio"]["expected_shares"] == {"control": 2 / 3, "bold": 1 / 3}
    assert body["verdict"]["decision"] == "keep_running"
    assert await asyncio.to_thread(cli, ["experiments", "conclude", "--tenant", "acme", name,
                                         "--winner", "control", "--note", "no change"]) == 0
    assert await asyncio.to_thread(cli, ["experiments", "show", "--tenant", "acme", name]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown["status"] == "concluded" and shown["winner"] == "control"
    assert [h["actor"] for h in shown["history"]] == ["cli", "cli"]


async def test_the_python_clients_assign(stack: Stack, query: httpx.AsyncClient) -> None:
    name = f"client-{uuid.uuid4().hex[:8]}"
    assert (await query.post("/v1/experiments", json=_spec(name, unit="session"))).status_code == 201
    assert (await query.post(f"/v1/experiments/{name}/start")).status_code == 200
    url = stack.services.url("ingest")
    async with AsyncFeedbackClient(url, stack.api_key) as client:
        async def running() -> dict[str, Any] | None:
            answer = await client.assign(name, session_id="s-1")
            return answer if answer["in_experiment"] else None

        first = await eventually(running, timeout=10)
        assert first["variant"] in ("control", "concise") and first["exposure_event_id"]
        with pytest.raises(FeedbackError) as refused:
            await client.assign(name, user_id="not-a-session")
        assert refused.value.status == 422
    with FeedbackClient(url, stack.api_key) as blocking:
        again = await asyncio.to_thread(blocking.assign, name, session_id="s-1",
                                        log_exposure=False)
        assert again["variant"] == first["variant"] and again["exposure_event_id"] is None
        with pytest.raises(FeedbackError) as missing:
            await asyncio.to_thread(blocking.assign, "no-such-experiment", session_id="s")
        assert missing.value.status == 404
