"""The review console in a real browser: a reviewer signs in, finds a down-voted response in
the queue with the AI's and the agent's replies side by side, uses the agent's reply as the
correction and the pair reaches the training export; two reviewers label the same responses
and the agreement page shows the kappa a hand count gives; sign-out leaves no key behind."""

from __future__ import annotations

import uuid

import orjson
import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import ConsoleStack, sign_in
from tests.infra import eventually

pytestmark = pytest.mark.browser

PROMPT = "Add oat milk and eggs to my shopping list"
AI_REPLY = "I added milk to your todo list."
AGENT_REPLY = "I added oat milk and eggs to your shopping list."
# The suggestion the agent's tool showed (a regenerated draft): the replay's own pair is the
# agent's reply against it; the reviewer's correction pairs the agent's reply with AI_REPLY.
AGENT_SAW = "Which list should they go on: groceries or household?"

# Five down-voted responses, and what each reviewer answers to "verdict" on each.
LABELLED = ["lab-1", "lab-2", "lab-3", "lab-4", "fix-1"]
ALICE = {"lab-1": "wrong", "lab-2": "wrong", "lab-3": "acceptable", "lab-4": "harmful",
         "fix-1": "wrong"}
BOB = {"lab-1": "wrong", "lab-2": "acceptable", "lab-3": "acceptable", "lab-4": "harmful",
       "fix-1": "wrong"}


def hand_counted_kappa() -> float:
    """Cohen's kappa of ALICE and BOB, counted by hand: they agree on 4 of 5 (p_o = 0.8);
    Alice answered wrong 3, acceptable 1, harmful 1; Bob wrong 2, acceptable 2, harmful 1, so
    chance agreement p_e = (3*2 + 1*2 + 1*1) / 5^2 = 9/25 = 0.36; kappa = (0.8 - 0.36) /
    (1 - 0.36) = 0.44 / 0.64 = 0.6875."""
    p_o = 4 / 5
    p_e = (3 * 2 + 1 * 2 + 1 * 1) / 25
    return (p_o - p_e) / (1 - p_e)


async def _seed(stack: ConsoleStack) -> None:
    for number, response_id in enumerate(LABELLED):
        fix = response_id == "fix-1"
        await stack.send("/v1/responses", {
            "response_id": response_id,
            "prompt": [{"role": "user", "content": PROMPT if fix else f"Question {number}"}],
            "output": AI_REPLY if fix else f"Answer number {number}.",
            "model": "model-a" if number % 2 else "model-b",
            "action_type": "shopping" if fix else "todo",
        })
        await stack.send("/v1/feedback", {"response_id": response_id, "thumb": "down",
                                          "user_id": f"user-{number}"})
    await stack.send("/v1/feedback", {
        "response_id": "fix-1", "user_id": "agent-7",
        "replay": {"ai_reply": AGENT_SAW, "agent_reply": AGENT_REPLY, "useful": False},
    })


async def _queue_has(stack: ConsoleStack, count: int) -> bool:
    async with stack.query() as query:
        answer = await query.get("/v1/reviews/queue")
    items = answer.json()["items"]
    return len(items) >= count and any(i["agent_reply"] for i in items)


async def _export(stack: ConsoleStack, export_format: str) -> list[dict]:
    async with stack.query() as query:
        answer = await query.get("/v1/training/export", params={"format": export_format})
    assert answer.status_code == 200, answer.text
    return [orjson.loads(line) for line in answer.text.splitlines() if line.strip()]


async def test_a_reviewer_uses_the_agents_reply_as_the_correction(
    console_stack: ConsoleStack, browser: Browser,
) -> None:
    stack = console_stack
    await _seed(stack)
    await eventually(lambda: _queue_has(stack, len(LABELLED)), timeout=60)
    alice = await stack.key("alice", ["read", "review"])
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    try:
        await sign_in(page, stack.console_url, alice)
        item = page.locator('article[data-response-id="fix-1"]')
        await expect(item).to_be_visible()
        # Side by side, the differences marked word by word: the AI's "milk" and "todo" struck,
        # the agent's "oat milk and eggs" and "shopping" inserted.
        await expect(item.locator(".diff.ai del").first).to_be_visible()
        deleted = await item.locator(".diff.ai del").all_text_contents()
        inserted = await item.locator(".diff.agent ins").all_text_contents()
        assert "todo" in " ".join(deleted)
        assert "shopping" in " ".join(inserted) and "eggs" in " ".join(inserted)
        assert await item.locator(".diff.ai").text_content() == AI_REPLY
        assert await item.locator(".diff.agent").text_content() == AGENT_REPLY
        assert await item.locator(".prompt").text_content() == f"user: {PROMPT}"

        async def explained() -> bool:
            await page.reload()
            return await item.locator(".explanation").count() > 0

        # The trainer's failure explanation (from the model the stack's trainer asks).
        await eventually(explained, timeout=60, interval=1)
        await expect(item.locator(".explanation")).to_contain_text("the user asked for groceries")
        await stack.screenshot(page, "console-queue")
        wanted = {
            "input": {"messages": [{"role": "user", "content": PROMPT}]},
            "preferred_output": [{"role": "assistant", "content": AGENT_REPLY}],
            "non_preferred_output": [{"role": "assistant", "content": AI_REPLY}],
        }
        assert wanted not in await _export(stack, "openai-preference")

        await item.get_by_role("button", name="Use the agent's reply as the correction").click()
        await expect(page.get_by_role("status")).to_contain_text("sent as the correction")

        async def corrected_pair() -> list[dict]:
            rows = await _export(stack, "raw")
            return [r for r in rows if r["response_id"] == "fix-1" and r["kind"] == "preference"
                    and r["provenance"]["feedback_kind"] == "correction"]

        pairs = await eventually(corrected_pair, timeout=60)
        assert pairs[0]["chosen"] == AGENT_REPLY and pairs[0]["rejected"] == AI_REPLY
        openai = await _export(stack, "openai-preference")
        assert wanted in openai, openai
        trl = await _export(stack, "trl-preference")
        assert {"prompt": [{"role": "user", "content": PROMPT}],
                "chosen": [{"role": "assistant", "content": AGENT_REPLY}],
                "rejected": [{"role": "assistant", "content": AI_REPLY}]} in trl, trl
        # The queue shows the correction once the trainer applied it.
        await page.goto(stack.console_url + "/queue?signal=corrected")
        await expect(
            page.locator('article[data-response-id="fix-1"] .tag.corrected')
        ).to_be_visible()
    finally:
        await context.close()


async def _label_all(page: Page, answers: dict[str, str]) -> None:
    for response_id, value in answers.items():
        item = page.locator(f'article[data-response-id="{response_id}"]')
        form = item.locator("form.label-form").filter(has=page.locator('input[value="verdict"]'))
        await form.locator("select").select_option(value)
        await form.get_by_role("button", name="Label verdict").click()
        await expect(page.get_by_role("status")).to_contain_text("Label saved")


async def test_two_reviewers_agreement_equals_a_hand_count(
    console_stack: ConsoleStack, browser: Browser,
) -> None:
    stack = console_stack
    if not await _queue_has(stack, len(LABELLED)):
        await _seed(stack)
        await eventually(lambda: _queue_has(stack, len(LABELLED)), timeout=60)
    keys = {"alice": await stack.key("alice", ["read", "review"]),
            "bob": await stack.key("bob", ["read", "review"])}
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    try:
        for name, answers in (("alice", ALICE), ("bob", BOB)):
            await sign_in(page, stack.console_url, keys[name])
            await _label_all(page, answers)
            await page.get_by_role("button", name="Sign out").click()
            await page.wait_for_url("**/console/sign-in")

        await sign_in(page, stack.console_url, keys["alice"])
        expected = hand_counted_kappa()
        assert expected == pytest.approx(0.6875)

        async def shown() -> float | None:
            await page.goto(stack.console_url + "/agreement")
            verdict = page.locator('section[data-label="verdict"]')
            if not await verdict.count():
                return None
            items = await verdict.locator(".items").text_content()
            if items != str(len(LABELLED)):
                return None
            return float(await verdict.locator(".kappa").get_attribute("data-value") or "nan")

        kappa = await eventually(shown, timeout=60)
        assert kappa == pytest.approx(expected, abs=1e-12)
        verdict = page.locator('section[data-label="verdict"]')
        await expect(verdict.locator(".method")).to_have_text("Cohen's kappa")
        await expect(verdict.locator(".kappa")).to_have_text("0.688")
        await expect(verdict.locator(".observed")).to_have_text("80.0%")
        assert await verdict.locator(".disagreements li").all_text_contents() == ["lab-2"]
        await stack.screenshot(page, "console-agreement")
    finally:
        await context.close()


async def test_the_key_is_never_in_the_page_and_sign_out_forgets_it(
    console_stack: ConsoleStack, browser: Browser,
) -> None:
    stack = console_stack
    key = await stack.key(f"reader-{uuid.uuid4().hex[:6]}", ["read"])
    context = await browser.new_context(viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    seen_urls: list[str] = []
    page.on("request", lambda request: seen_urls.append(request.url))
    try:
        await sign_in(page, stack.console_url, key)
        cookies = await context.cookies()
        session = [c for c in cookies if c["name"] == "fbl_console"]
        assert len(session) == 1
        assert session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
        assert session[0]["path"] == "/console"
        assert key not in session[0]["value"]
        storage = await page.evaluate(
            "() => JSON.stringify([document.cookie, {...localStorage}, {...sessionStorage}])"
        )
        assert key not in storage and "fbl_console" not in storage
        assert key not in await page.content()
        # A read-only key sees the queue but no actions.
        await expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
        assert await page.get_by_role("button", name="Mark reviewed").count() == 0
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url("**/console/sign-in")
        assert [c for c in await context.cookies() if c["name"] == "fbl_console"] == []
        await page.goto(stack.console_url + "/queue")
        assert page.url.endswith("/console/sign-in")
        assert not any(key in url for url in seen_urls)
        # The old cookie no longer opens anything: the server forgot the session.
        await context.add_cookies([session[0]])
        await page.goto(stack.console_url + "/queue")
        assert page.url.endswith("/console/sign-in")
    finally:
        await context.close()


async def test_a_key_of_another_tenant_sees_none_of_the_items(
    console_stack: ConsoleStack, browser: Browser,
) -> None:
    stack = console_stack
    if not await _queue_has(stack, len(LABELLED)):
        await _seed(stack)
        await eventually(lambda: _queue_has(stack, len(LABELLED)), timeout=60)
    other = await stack.key("eve", ["read", "review"], tenant="other-tenant")
    context = await browser.new_context(viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    try:
        await sign_in(page, stack.console_url, other)
        await expect(page.get_by_text("Nothing to review in this range.")).to_be_visible()
        assert await page.locator("article.item").count() == 0
        await page.goto(stack.console_url + "/agreement")
        await expect(page.get_by_text("No labels yet.")).to_be_visible()
        await page.goto(stack.console_url + "/users?user_id=user-0")
        await expect(page.get_by_text("No feedback is recorded for this user.")).to_be_visible()
        # Acting on tenant acme's response id is refused: it is not in this tenant's queue.
        csrf = await page.locator('input[name="csrf_token"]').first.get_attribute("value")
        answer = await page.request.post(
            stack.console_url + "/items/fix-1/correction",
            form={"csrf_token": csrf or "", "next": "/console/queue"},
            headers={"Origin": stack.services.url("query")}, max_redirects=0,
        )
        assert answer.status == 404, await answer.text()
    finally:
        await context.close()


async def test_an_admin_key_without_the_review_scope_sees_no_actions(
    console_stack: ConsoleStack, browser: Browser,
) -> None:
    """Ingest takes reviews and corrections from `review` keys only, so the console offers an
    admin key none of the buttons ingest would refuse, and refuses the action itself."""
    stack = console_stack
    response_id = f"r-admin-{uuid.uuid4().hex[:6]}"
    await stack.send("/v1/responses", {
        "response_id": response_id, "output": "An answer.", "model": "model-a",
        "prompt": [{"role": "user", "content": "A question"}],
    })
    await stack.send("/v1/feedback", {"response_id": response_id, "thumb": "down",
                                      "user_id": "user-admin-check"})

    async def queued() -> bool:
        async with stack.query() as query:
            answer = await query.get("/v1/reviews/queue", params={"limit": 100})
        return any(item["response_id"] == response_id for item in answer.json()["items"])

    await eventually(queued)
    queue = f"{stack.console_url}/queue"
    reviewer = await browser.new_context(viewport={"width": 1100, "height": 800})
    try:
        page = await reviewer.new_page()
        await sign_in(page, stack.console_url, await stack.key("carol", ["read", "review"]))
        await page.goto(queue)
        assert await page.get_by_role("button", name="Mark reviewed").count() > 0
    finally:
        await reviewer.close()
    key = await stack.key(f"admin-{uuid.uuid4().hex[:6]}", ["read", "admin"])
    context = await browser.new_context(viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    try:
        await sign_in(page, stack.console_url, key)
        await page.goto(queue)
        await expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
        for name in ("Mark reviewed", "Assign", "Use the agent's reply as the correction"):
            assert await page.get_by_role("button", name=name).count() == 0, name
        csrf = await page.evaluate(
            "() => document.querySelector('input[name=csrf_token]')?.value ?? ''")
        answer = await page.request.post(
            stack.console_url + "/items/r-any/reviewed",
            form={"csrf_token": csrf, "next": "/console/queue"},
            headers={"Origin": stack.console_url.rsplit("/console", 1)[0]},
        )
        assert answer.status == 403
        assert "review scope" in await answer.text()
    finally:
        await context.close()
