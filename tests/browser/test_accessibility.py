"""axe-core (the npm package in libs/widget's lock) over the demo chat with the widget open:
the reasons panel, a rating and the replay panel. No serious or critical violation."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import AXE, BrowserStack

pytestmark = pytest.mark.browser


async def test_no_serious_or_critical_violations(browser_stack: BrowserStack, browser: Browser) -> None:
    # The demo's own CSP allows no injected script: the test context bypasses it for axe alone.
    context = await browser.new_context(bypass_csp=True, viewport={"width": 900, "height": 900})
    try:
        page = await context.new_page()
        await page.goto(browser_stack.ingest_url + "/widget/demo")
        second = page.locator('[data-feedbackloop-response-id="demo-r2"]')
        await second.locator('[data-fbl="down"]').click()
        await expect(second.locator('[data-fbl="reasons"]')).to_be_visible()
        await page.locator('[data-feedbackloop-response-id="demo-r1"] [data-fbl="star-4"]').click()
        await page.get_by_role("button", name="Send reply").click()
        await expect(page.locator('#assist-replay [data-fbl="useful"]')).to_be_visible()
        await page.add_script_tag(path=str(AXE))
        results = await page.evaluate("""async () => {
          const result = await axe.run(document, { resultTypes: ['violations'] });
          return result.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
            targets: v.nodes.map(n => JSON.stringify(n.target)) }));
        }""")
        await browser_stack.screenshot(page, "axe-scanned-demo")
        for violation in results:
            print(f"axe: {violation['impact']}: {violation['id']}: {violation['help']}",
                  violation["targets"])
        serious = [v for v in results if v["impact"] in ("serious", "critical")]
        assert serious == [], serious
        checked = await page.evaluate("document.querySelectorAll('[data-feedbackloop-widget]').length")
        assert checked >= 4, "the widgets were on the page that was scanned"
        # The scan reaches into the widgets' shadow roots: an unlabeled icon button is found.
        canary = await page.evaluate("""async () => {
          const button = document.querySelector('[data-feedbackloop-widget]').shadowRoot
            .querySelector('[data-fbl="up"]');
          button.removeAttribute('aria-label');
          button.removeAttribute('title');
          const result = await axe.run(document, { runOnly: ['button-name'] });
          return result.violations.map(v => v.id);
        }""")
        assert canary == ["button-name"]
    finally:
        await context.close()
