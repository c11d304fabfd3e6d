"""The experiment pages, as a person uses them: open Experiments, pick one, read its verdict,
its units and the curves of its effect and p-value, drawn by uPlot; the experiment's own text
(a hostile description) shows as text; axe-core finds no serious or critical violation."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import AXE, ConsoleStack, sign_in
from tests.infra import eventually

pytestmark = pytest.mark.browser

DESCRIPTION = "<img src=x onerror=window.__pwned=1> shorter replies"


async def _experiment(stack: ConsoleStack) -> str:
    name = f"concise-{uuid.uuid4().hex[:6]}"
    async with stack.query() as query, stack.ingest() as ingest:
        created = await query.post("/v1/experiments", json={
            "name": name, "description": DESCRIPTION, "unit": "user",
            "variants": [{"name": "control", "weight": 1}, {"name": "concise", "weight": 1}],
            "primary_metric": "approval", "minimum_detectable_effect": 0.1,
            "planned_units": 1_000})
        assert created.status_code == 201, created.text
        assert (await query.post(f"/v1/experiments/{name}/start")).status_code == 200

        async def assign(user: str) -> str | None:
            answer = await ingest.post(f"/v1/experiments/{name}/assign", json={"user_id": user})
            return answer.json()["variant"] if answer.status_code == 200 else None

        rng = random.Random(4)
        now = datetime.now(UTC)
        events = []
        for i in range(240):
            user = f"person-{i}"
            variant = await eventually(lambda user=user: assign(user), timeout=10)
            response_id = f"{name}-{i}"
            # Spread over the last six hours: six hourly looks, so the curves have a shape.
            at = (now - timedelta(hours=i % 6, minutes=1)).isoformat()
            events.append({"type": "response.logged", "response_id": response_id,
                           "occurred_at": at,
                           "user_id": user, "output": "Done.", "model": "m",
                           "action_type": "todo", "prompt": [{"role": "user", "content": "x"}],
                           "experiment": name, "variant": variant})
            rate = 0.9 if variant == "concise" else 0.4
            events.append({"type": "feedback.submitted", "response_id": response_id,
                           "occurred_at": at, "user_id": user,
                           "thumb": "up" if rng.random() < rate else "down"})
        answer = await ingest.post("/v1/events", json={"events": events})
        assert answer.status_code == 202 and answer.json()["invalid"] == 0

        async def counted() -> bool:
            results = (await query.get(f"/v1/experiments/{name}/results")).json()
            return sum(v["observations"] for v in results["metrics"][0]["variants"]) == 240

        await eventually(counted, timeout=60)
    return name


async def test_an_experiment_page_shows_its_verdict_and_curves(
    console_stack: ConsoleStack, browser: Browser,
) -> None:
    stack = console_stack
    name = await _experiment(stack)
    reader = await stack.key("analyst", ["read"])
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        await sign_in(page, stack.console_url, reader)
        await page.get_by_role("link", name="Experiments").click()
        await page.get_by_role("link", name=name).click()
        await expect(page.get_by_role("heading", name=f"Experiment {name}")).to_be_visible()
        await expect(page.get_by_role("heading", name="Verdict: ship (concise)")).to_be_visible()
        await expect(page.get_by_text(DESCRIPTION)).to_be_visible()
        assert await page.evaluate("() => window.__pwned") is None
        await expect(page.locator("table.sample-ratio tbody tr")).to_have_count(2)
        # Two curves, effect and p-value, each drawn as a uPlot canvas with its legend.
        await expect(page.locator(".chart-area canvas")).to_have_count(2)
        await expect(page.locator(".u-legend").first).to_contain_text("concise - control")
        points = await page.evaluate(
            "() => JSON.parse(document.getElementById('chart-effect-1').textContent).x.length")
        assert points >= 4, points  # a look per hour once both arms have 30 thumbs
        await page.get_by_role("link", name="by minute").click()
        await expect(page.get_by_text("looks: one per minute")).to_be_visible()
        await stack.screenshot(page, "console-experiment")
        assert problems == [], problems
        missing = await page.goto(stack.console_url + "/experiments/nothing-here")
        assert missing is not None and missing.status == 404
    finally:
        await context.close()
    # axe-core is injected as a script: only a context that bypasses the page's CSP runs it.
    context = await browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    try:
        await sign_in(page, stack.console_url, reader)
        for path in ("/experiments", f"/experiments/{name}"):
            await page.goto(stack.console_url + path)
            await page.wait_for_load_state("load")
            await page.add_script_tag(path=str(Path(AXE)))
            found = await page.evaluate("async () => (await axe.run()).violations"
                                        ".filter(v => ['serious', 'critical'].includes(v.impact))"
                                        ".map(v => v.id + ': ' + v.help)")
            assert found == [], (path, found)
    finally:
        await context.close()
