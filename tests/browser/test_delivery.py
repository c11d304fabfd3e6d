"""How the widget treats ingest's answers: a 503 or 429 is retried after Retry-After with the same
event id, a 2xx whose batch result marks an item invalid is an error (not retried, not "sent"),
and the offline queue stays within its caps."""

from __future__ import annotations

import orjson
import pytest
from playwright.async_api import BrowserContext, Page, Route, expect
from playwright.async_api import Error as PlaywrightError

from tests.browser.conftest import BrowserStack
from tests.infra import eventually

pytestmark = pytest.mark.browser


def part(page: Page, response_id: str, name: str):  # type: ignore[no-untyped-def]
    return page.locator(f'[data-feedbackloop-response-id="{response_id}"] [data-fbl="{name}"]')


def status(page: Page, response_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'[data-feedbackloop-response-id="{response_id}"] [role="status"]')


async def test_busy_ingest_is_retried_with_the_same_event_id(
    browser_stack: BrowserStack, page: Page
) -> None:
    attempts: list[str] = []

    async def busy_then_through(route: Route) -> None:
        attempts.append(orjson.loads(route.request.post_data or "{}")["event_id"])
        if len(attempts) == 1:
            await route.fulfill(status=503, headers={"Retry-After": "1"},
                                content_type="application/problem+json", body='{"status": 503}')
        elif len(attempts) == 2:
            await route.fulfill(status=429, headers={"Retry-After": "1"},
                                content_type="application/problem+json", body='{"status": 429}')
        else:
            await route.continue_()

    await page.route("**/v1/feedback", busy_then_through)
    await page.goto(browser_stack.ingest_url + "/widget/demo")
    await part(page, "demo-r3", "star-2").click()
    await expect(status(page, "demo-r3")).to_have_text("Saved. It will be sent again shortly.")
    await expect(status(page, "demo-r3")).to_have_text("Thanks for your feedback.", timeout=20_000)
    assert len(attempts) == 3 and len(set(attempts)) == 1, attempts


async def test_a_2xx_with_an_invalid_item_is_an_error(browser_stack: BrowserStack, page: Page) -> None:
    async def invalid_item(route: Route) -> None:
        await route.fulfill(status=202, content_type="application/json", body=orjson.dumps({
            "accepted": 0, "invalid": 1,
            "results": [{"index": 0, "status": "invalid", "event_id": None,
                         "errors": [{"loc": ["thumb"], "msg": "bad", "type": "value_error"}]}],
        }).decode())

    await page.route("**/v1/feedback", invalid_item)
    await page.goto(browser_stack.ingest_url + "/widget/demo")
    await part(page, "demo-r3", "up").click()
    await expect(status(page, "demo-r3")).to_have_text("Your feedback could not be sent.")
    assert await page.evaluate("JSON.parse(localStorage.getItem('feedbackloop:v1:queue'))") == []


async def test_the_offline_queue_is_capped(
    browser_stack: BrowserStack, context: BrowserContext, page: Page
) -> None:
    await page.goto(browser_stack.ingest_url + "/widget/demo")
    await context.set_offline(True)
    star = part(page, "demo-r3", "star-5")
    for _ in range(60):
        await star.click()
    queue = await page.evaluate("localStorage.getItem('feedbackloop:v1:queue')")
    items = orjson.loads(queue)
    assert len(items) == 50, "at most 50 events are kept"
    assert len(queue) <= 64 * 1024
    assert len({item["id"] for item in items}) == 50
    # The newest survive: the last click (an even count, so a retraction) is the queue's tail.
    assert items[-1]["path"] == "/v1/feedback/retractions"
    await context.set_offline(False)
    await expect(status(page, "demo-r3")).to_have_text("Feedback removed.", timeout=20_000)


async def test_what_was_queued_is_sent_on_the_next_page_load(
    browser_stack: BrowserStack, page: Page
) -> None:
    async def network_lost(route: Route) -> None:
        await route.abort("internetdisconnected")

    await page.route("**/v1/feedback", network_lost)
    await page.goto(browser_stack.ingest_url + "/widget/demo")
    await part(page, "demo-r3", "down").click()
    await expect(status(page, "demo-r3")).to_have_text("Saved. It will be sent again shortly.")
    queued = await page.evaluate("JSON.parse(localStorage.getItem('feedbackloop:v1:queue'))")
    assert [item["body"].get("thumb") for item in queued] == ["down"]

    await page.unroute("**/v1/feedback")
    delivered: list[str] = []
    page.on("request", lambda request: delivered.append(orjson.loads(request.post_data or "{}")["event_id"])
            if request.method == "POST" and request.url.endswith("/v1/feedback") else None)
    await page.reload()
    # Polled with page.evaluate, not page.wait_for_function: that runs the expression through
    # the page's own eval, which this page's CSP (no 'unsafe-eval') may refuse.
    async def queue_empty() -> bool:
        try:
            return await page.evaluate("localStorage.getItem('feedbackloop:v1:queue')") == "[]"
        except PlaywrightError as error:  # the document is being replaced by the reload
            if "context was destroyed" not in str(error) and "navigat" not in str(error):
                raise
            return False

    await eventually(queue_empty, timeout=15)
    assert delivered == [queued[0]["id"]]
    await expect(part(page, "demo-r3", "down")).to_have_attribute("aria-pressed", "true")
    await browser_stack.approval_becomes("drafted_reply", (0, 1))
