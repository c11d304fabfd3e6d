"""Every console page with hostile text in it: feedback, model output, model and action-type
names, a reviewer's key name and note holding `<script>` and `<img onerror>`. Nothing runs, the
text shows as text, every answer carries the Content-Security-Policy (and the page breaks none
of it itself), and axe-core finds no serious or critical violation on any page."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, expect

from tests.browser.conftest import AXE, ConsoleStack, sign_in
from tests.infra import eventually

pytestmark = pytest.mark.browser

SCRIPT = "<script>window.__pwned = 1</script>"
IMAGE = '<img src=x onerror="window.__pwned = 2">'
MODEL = "<img src=x onerror=window.__pwned=3>"
ACTION = "<script>window.__pwned=4</script>"
AGENT = "<script>window.__pwned = 5</script> I did it properly"
COMMENT = "<img src=x onerror=window.__pwned=6> not helpful"
NOTE = "<script>window.__pwned = 7</script>"
REVIEWER = "<img src=x onerror=window.__pwned=8>"
USER = "user-<svg onload=window.__pwned=9>"

PAGES = [
    "/queue", "/queue?signal=down", "/agreement", "/failure-patterns",
    f"/users?user_id={USER}", "/analytics", "/alerts",
]


async def _seed(stack: ConsoleStack) -> str:
    for number in range(3):
        response_id = f"xss-{number}"
        await stack.send("/v1/responses", {
            "response_id": response_id, "prompt": [{"role": "user", "content": SCRIPT}],
            "output": IMAGE, "model": MODEL, "action_type": ACTION, "user_id": USER,
        })
        await stack.send("/v1/feedback", {"response_id": response_id, "thumb": "down",
                                          "user_id": USER})
    await stack.send("/v1/feedback", {"response_id": "xss-0", "user_id": USER,
                                      "comment": {"text": COMMENT, "reasons": ["<i>x</i>"]}})
    await stack.send("/v1/feedback", {
        "response_id": "xss-1", "user_id": "agent-1",
        "replay": {"ai_reply": IMAGE, "agent_reply": AGENT, "useful": False},
    })
    reviewer = await stack.key(REVIEWER, ["read", "review"])
    for response_id, value in (("xss-0", "wrong"), ("xss-1", "harmful")):
        await stack.send("/v1/reviews", {"response_id": response_id, "action": "label",
                                         "label": "verdict", "value": value, "note": NOTE},
                         key=reviewer)
    await stack.send("/v1/reviews", {"response_id": "xss-2", "action": "assigned",
                                     "assignee": SCRIPT}, key=reviewer)
    return reviewer


@pytest.fixture(scope="module")
async def hostile(console_stack: ConsoleStack) -> str:
    reviewer = await _seed(console_stack)

    async def ready() -> bool:
        async with console_stack.query() as query:
            queue = (await query.get("/v1/reviews/queue")).json()["items"]
            user = await query.get(f"/v1/users/{USER}/feedback-summary")
        return (len(queue) == 3 and any(i["labels"] for i in queue)
                and any(i["agent_reply"] for i in queue)
                and any(i["assignee"] for i in queue) and user.status_code == 200)

    await eventually(ready, timeout=60)
    return reviewer


def _watch(page: Page) -> list[str]:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or message.type == "error":
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    return problems


async def test_hostile_text_runs_nowhere_and_every_answer_has_the_csp(
    console_stack: ConsoleStack, hostile: str, browser: Browser,
) -> None:
    stack = console_stack
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    problems = _watch(page)
    policies: dict[str, str | None] = {}
    page.on("response", lambda r: policies.__setitem__(r.url, r.headers.get(
        "content-security-policy")))
    try:
        await sign_in(page, stack.console_url, hostile)
        for path in PAGES:
            answer = await page.goto(stack.console_url + path)
            assert answer is not None and answer.status == 200, path
            await page.wait_for_load_state("load")
            assert await page.evaluate("() => window.__pwned") is None, path
            assert await page.locator("img[src=x], main svg[onload]").count() == 0, path
            assert await page.locator("main script:not([type='application/json'])").count() == 0
        # The hostile strings are there, as text.
        await page.goto(stack.console_url + "/queue")
        await expect(page.get_by_text(SCRIPT, exact=False).first).to_be_visible()
        await expect(page.get_by_text(IMAGE, exact=False).first).to_be_visible()
        await expect(page.locator("ins", has_text="<script>window.__pwned").first).to_be_visible()
        await expect(page.locator(".diff.agent").first).to_have_text(AGENT)
        await expect(page.get_by_text(NOTE).first).to_be_visible()
        await expect(page.get_by_text(f"Assigned to {SCRIPT}")).to_be_visible()
        await stack.screenshot(page, "console-queue-hostile")
        await page.goto(stack.console_url + "/agreement")
        await expect(page.locator("main").get_by_text(REVIEWER, exact=False)).to_be_visible()
        await page.goto(stack.console_url + f"/users?user_id={USER}")
        await expect(page.get_by_text(COMMENT.split(" not")[0], exact=False).first).to_be_visible()
        await stack.screenshot(page, "console-user-hostile")
        await page.goto(stack.console_url + "/analytics")
        await expect(page.locator(".u-legend").first).to_contain_text(ACTION)
        await stack.screenshot(page, "console-analytics")
        assert problems == [], problems
        # An unknown page is a console page too.
        missing = await page.goto(stack.console_url + "/items/nothing")
        assert missing is not None and missing.status in (404, 405)
        assert await page.evaluate("() => window.__pwned") is None
        console_answers = {url: policy for url, policy in policies.items() if "/console" in url}
        assert console_answers and all(
            policy and "script-src 'self'" in policy and "default-src 'none'" in policy
            and "unsafe-inline" not in policy
            for policy in console_answers.values()
        ), console_answers
        assert any(url.endswith("/console/static/console.js") for url in console_answers)
        assert any(url.endswith("/console/static/console.css") for url in console_answers)
    finally:
        await context.close()


async def test_every_page_passes_axe(console_stack: ConsoleStack, hostile: str,
                                     browser: Browser, widget_dist: Path) -> None:
    """axe-core from the widget's npm lock (`widget_dist` has it installed)."""
    stack = console_stack
    # The console's CSP admits no injected script: this context bypasses it for axe alone.
    context = await browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    try:
        await page.goto(stack.console_url + "/sign-in")
        found = {"/sign-in": await _axe(page)}
        await sign_in(page, stack.console_url, hostile)
        for path in PAGES:
            await page.goto(stack.console_url + path)
            await page.wait_for_load_state("load")
            found[path] = await _axe(page)
        await page.goto(stack.console_url + "/items/nothing")
        found["error page"] = await _axe(page)
        for path, violations in found.items():
            for violation in violations:
                print(f"axe {path}: {violation['impact']}: {violation['id']}: {violation['help']}",
                      violation["targets"])
        serious = {path: [v for v in violations if v["impact"] in ("serious", "critical")]
                   for path, violations in found.items()}
        assert all(not v for v in serious.values()), serious
    finally:
        await context.close()


async def _axe(page: Page) -> list[dict]:
    await page.add_script_tag(path=str(AXE))
    result: list[dict] = await page.evaluate("""async () => {
      const result = await axe.run(document, { resultTypes: ['violations'] });
      return result.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
        targets: v.nodes.map(n => JSON.stringify(n.target)) }));
    }""")
    return result
