"""A person on the demo chat: thumbs down with a reason, a flip, a retraction, a reload, going
offline and coming back, the edit-to-final box and the replay; each seen in the query API."""

from __future__ import annotations

import orjson
import pytest
from playwright.async_api import BrowserContext, Page, Request, expect

from tests.browser.conftest import BrowserStack

pytestmark = pytest.mark.browser


def widget(page: Page, response_id: str, part: str):  # type: ignore[no-untyped-def]
    """A part of the widget on one response (Playwright's CSS pierces the open shadow root)."""
    return page.locator(f'[data-feedbackloop-response-id="{response_id}"] [data-fbl="{part}"]')


def status(page: Page, response_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'[data-feedbackloop-response-id="{response_id}"] [role="status"]')


async def test_thumbs_down_with_a_reason_then_flip_retract_and_reload(
    browser_stack: BrowserStack, page: Page
) -> None:
    await page.goto(browser_stack.ingest_url + "/widget/demo")
    down = widget(page, "demo-r1", "down")
    up = widget(page, "demo-r1", "up")
    await expect(down).to_have_attribute("aria-pressed", "false")

    await down.click()
    await expect(down).to_have_attribute("aria-pressed", "true")
    panel = widget(page, "demo-r1", "reasons")
    await expect(panel).to_be_visible()
    await panel.get_by_role("button", name="Inaccurate").click()
    await expect(panel.get_by_role("button", name="Inaccurate")).to_have_attribute("aria-pressed", "true")
    await panel.get_by_label("Tell us more (optional)").fill("The link expires after 15 minutes.")
    await browser_stack.screenshot(page, "demo-thumbs-down-reasons")
    await panel.get_by_role("button", name="Send feedback").click()
    await expect(status(page, "demo-r1")).to_have_text("Thanks for your feedback.")
    await expect(panel).to_be_hidden()
    await browser_stack.approval_becomes("support_answer", (0, 1))

    # Flip with the keyboard: focus the thumb up, press Enter.
    await up.focus()
    await page.keyboard.press("Enter")
    await expect(up).to_have_attribute("aria-pressed", "true")
    await expect(down).to_have_attribute("aria-pressed", "false")
    outline = await up.evaluate("b => getComputedStyle(b).outlineStyle")
    assert outline == "solid", "keyboard focus is visible"
    await browser_stack.approval_becomes("support_answer", (1, 0))

    # A second press on the same thumb (Space this time) takes it back.
    await page.keyboard.press(" ")
    await expect(up).to_have_attribute("aria-pressed", "false")
    await expect(status(page, "demo-r1")).to_have_text("Feedback removed.")
    await browser_stack.approval_becomes("support_answer", (0, 0))

    await down.click()
    await expect(status(page, "demo-r1")).to_have_text("Thanks for your feedback.")
    await page.reload()
    await expect(widget(page, "demo-r1", "down")).to_have_attribute("aria-pressed", "true")
    await expect(widget(page, "demo-r1", "up")).to_have_attribute("aria-pressed", "false")
    await browser_stack.approval_becomes("support_answer", (0, 1))
    await browser_stack.screenshot(page, "demo-after-reload")


async def test_offline_click_is_delivered_once_with_the_same_event_id(
    browser_stack: BrowserStack, context: BrowserContext, page: Page
) -> None:
    sent: list[str] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/v1/feedback"):
            sent.append(orjson.loads(request.post_data or "{}")["event_id"])

    page.on("request", record)
    await page.goto(browser_stack.ingest_url + "/widget/demo")
    up = widget(page, "demo-r2", "up")

    await context.set_offline(True)
    await up.click()
    await expect(up).to_have_attribute("aria-pressed", "true")
    await expect(status(page, "demo-r2")).to_have_text("Saved. It will be sent when you are back online.")
    queued = await page.evaluate("JSON.parse(localStorage.getItem('feedbackloop:v1:queue'))")
    assert [item["body"]["thumb"] for item in queued] == ["up"]
    queued_id = queued[0]["id"]
    await browser_stack.screenshot(page, "demo-offline-queued")

    await context.set_offline(False)
    await expect(status(page, "demo-r2")).to_have_text("Thanks for your feedback.", timeout=20_000)
    assert await page.evaluate("JSON.parse(localStorage.getItem('feedbackloop:v1:queue'))") == []
    assert sent and set(sent) == {queued_id}, f"every attempt carried the queued event id: {sent}"
    await browser_stack.approval_becomes("billing_answer", (1, 0))


async def test_edit_to_final_and_replay(browser_stack: BrowserStack, page: Page) -> None:
    bodies: list[dict[str, object]] = []
    page.on("request", lambda request: bodies.append(orjson.loads(request.post_data or "{}"))
            if request.method == "POST" and request.url.endswith("/v1/feedback") else None)
    await page.goto(browser_stack.ingest_url + "/widget/demo")
    reply = page.get_by_label("Your reply")
    await reply.fill("You can change the address until the parcel ships: Orders > your order > "
                     "Change address. I've updated it for you this time.")
    await page.get_by_role("button", name="Send reply").click()
    useful = page.locator('#assist-replay [data-fbl="useful"]')
    await expect(useful).to_be_visible()
    await expect(page.locator("#assist-replay")).to_contain_text("I've updated it for you this time.")
    await useful.click()
    await expect(useful).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("#assist-replay [role=status]")).to_have_text("Thanks for your feedback.")
    await browser_stack.screenshot(page, "demo-replay")
    kinds = sorted(next(k for k in ("correction", "replay") if k in body) for body in bodies)
    assert kinds == ["correction", "replay"]
    correction = next(body for body in bodies if "correction" in body)
    assert correction["response_id"] == "demo-r4"
    assert "I've updated it" in str(correction["correction"])
    assert "feedback_key" in correction and "user_id" not in correction
