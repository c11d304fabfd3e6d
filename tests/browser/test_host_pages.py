"""The widget on a product's own pages, from another origin: a page whose scripts throw, a page
under a strict Content-Security-Policy, hostile text, a token for another response. The host page
keeps working, the widget keeps working, and nothing the widget shows is ever markup."""

from __future__ import annotations

import html
import json
import time
import uuid
from typing import Any

import pytest
from playwright.async_api import Page, expect

from feedbackloop.http.tokens import FeedbackTokenSigner
from tests.browser.conftest import TENANT, TOKEN_SECRET, BrowserStack

pytestmark = pytest.mark.browser

XSS = '<script>window.__pwned = "script"</script><img src=x onerror="window.__pwned = \'img\'">'


def response_id() -> str:
    return f"host-{uuid.uuid4().hex[:10]}"


async def test_a_host_page_that_throws_still_gets_a_working_widget(
    browser_stack: BrowserStack, page: Page
) -> None:
    rid = response_id()
    await browser_stack.log_response(rid, "host_throws")
    token = await browser_stack.token(rid)
    ingest = browser_stack.ingest_url
    url = browser_stack.host.put("/throws.html", f"""<!doctype html>
<html lang="en"><head><title>A page with bugs</title></head><body><main>
<h1>A page with bugs</h1>
<div id="answer" style="--feedbackloop-accent: rgb(200, 0, 0)"><p>An AI answer.</p></div>
<p id="host-alive">not yet</p>
<script>throw new Error("host bug before the widget");</script>
<script type="module">
  import {{ configure, mount, mountReplay, captureCorrection }}
    from "{ingest}/widget/v1/feedbackloop.mjs";
  configure({{ endpoint: "{ingest}" }});
  mount(null);
  mount(document.body);
  mountReplay(document.body, {{}});
  captureCorrection(null, null);
  configure({{ onError: () => {{ throw new Error("host hook that throws"); }} }});
  window.handle = mount(document.getElementById("answer"), {{ responseId: "{rid}", token: "{token}" }});
  window.again = mount(document.getElementById("answer")) === window.handle;
  document.getElementById("host-alive").textContent = "alive";
  throw new Error("host bug after the widget");
</script></main></body></html>""")
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(error.message))
    await page.goto(url)
    await expect(page.locator("#host-alive")).to_have_text("alive")
    assert await page.evaluate("window.again") is True
    assert sorted(errors) == ["host bug after the widget", "host bug before the widget"]
    assert await page.evaluate("typeof window.feedbackloop") == "undefined", "the ES module sets no global"

    down = page.locator('#answer [data-fbl="down"]')
    await down.click()
    await expect(down).to_have_attribute("aria-pressed", "true")
    # Themed by the host's CSS variable, which reaches into the shadow root.
    assert await down.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(200, 0, 0)"
    await expect(page.locator("#answer [role=status]")).to_have_text("Thanks for your feedback.")
    await browser_stack.approval_becomes("host_throws", (0, 1))
    assert len(errors) == 2, errors
    await browser_stack.screenshot(page, "host-throws")


async def test_strict_csp_page_with_the_script_tag(browser_stack: BrowserStack, page: Page) -> None:
    rid = response_id()
    await browser_stack.log_response(rid, "host_csp")
    token = await browser_stack.token(rid)
    ingest = browser_stack.ingest_url
    csp = (f"default-src 'none'; script-src {ingest}; connect-src {ingest}; style-src 'none'; "
           "img-src 'none'; base-uri 'none'; form-action 'none'")
    url = browser_stack.host.put("/csp.html", f"""<!doctype html>
<html lang="en"><head><title>Strict CSP</title>
<script src="{ingest}/widget/v1/feedbackloop.js" data-endpoint="{ingest}" defer></script>
</head><body><main><h1>Strict CSP</h1>
<div data-feedbackloop-response-id="{rid}" data-feedbackloop-token="{token}" data-feedbackloop-rating="true">
<p>An AI answer.</p></div></main></body></html>""", {"Content-Security-Policy": csp})
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    blank = browser_stack.host.put("/csp-blank.html", "<!doctype html><title>Blank</title>",
                                   {"Content-Security-Policy": csp})
    await page.goto(blank)
    before = set(await page.evaluate("Object.keys(window)"))
    await page.goto(url)
    up = page.locator(f'[data-feedbackloop-response-id="{rid}"] [data-fbl="up"]')
    await expect(up).to_be_visible()
    # Styled under style-src 'none': the constructable stylesheet applies, no style is blocked.
    radius = await up.evaluate("b => getComputedStyle(b).borderTopLeftRadius")
    assert radius == "999px"
    added = sorted(set(await page.evaluate("Object.keys(window)")) - before)
    assert added == ["feedbackloop"], f"one namespace only, got {added}"

    await up.click()
    await expect(page.locator(f'[data-feedbackloop-response-id="{rid}"] [role=status]')).to_have_text(
        "Thanks for your feedback.")
    # An answer added later (a chat streaming in) gets its widget too.
    await page.evaluate("""() => {
      const later = document.createElement('div');
      later.setAttribute('data-feedbackloop-response-id', 'later-answer');
      later.textContent = 'A later answer.';
      document.querySelector('main').appendChild(later);
    }""")
    later = page.locator('[data-feedbackloop-response-id="later-answer"] [data-fbl="up"]')
    await expect(later).to_be_visible()
    await page.locator(f'[data-feedbackloop-response-id="{rid}"] [data-fbl="star-4"]').click()
    await browser_stack.approval_becomes("host_csp", (1, 0))
    assert violations == []
    await browser_stack.screenshot(page, "host-strict-csp")


async def test_hostile_text_is_shown_as_text_and_runs_nothing(
    browser_stack: BrowserStack, page: Page
) -> None:
    rid = response_id()
    token = await browser_stack.token(rid)
    ingest = browser_stack.ingest_url
    # The host page embeds the options in its own script: `</` escaped so they stay data there.
    options = _script_json({
        "responseId": rid, "token": token, "reasons": [{"id": "xss", "label": XSS}],
        "labels": {"reasonsTitle": XSS},
    })
    replay = _script_json({"responseId": rid, "token": token, "aiReply": XSS, "agentReply": XSS})
    url = browser_stack.host.put("/xss.html", f"""<!doctype html>
<html lang="en"><head><title>Hostile text</title></head><body><main><h1>Hostile text</h1>
<div id="answer" data-feedbackloop-response-id="{html.escape(rid)}"><p>An AI answer.</p></div>
<div id="replay"></div>
<script type="module">
  import {{ configure, mount, mountReplay }} from "{ingest}/widget/v1/feedbackloop.mjs";
  configure({{ endpoint: "{ingest}" }});
  mount(document.getElementById("answer"), {options});
  mountReplay(document.getElementById("replay"), {replay});
  window.mounted = true;
</script></main></body></html>""")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    sent: list[dict[str, Any]] = []
    page.on("request", lambda request: sent.append(json.loads(request.post_data or "{}"))
            if request.method == "POST" and request.url.endswith("/v1/feedback") else None)
    await page.goto(url)
    await page.wait_for_function("window.mounted === true")
    await page.locator('#answer [data-fbl="down"]').click()
    panel = page.locator('#answer [data-fbl="reasons"]')
    await expect(panel.locator("legend")).to_have_text(XSS)
    await panel.get_by_role("button", name=XSS).click()
    await panel.get_by_label("Tell us more (optional)").fill(XSS)
    await panel.get_by_role("button", name="Send feedback").click()
    await expect(page.locator("#answer [role=status]")).to_have_text("Thanks for your feedback.")
    await expect(page.locator("#replay section").first).to_contain_text(XSS)

    # Sent as typed, for the platform to keep as text.
    assert [body["comment"] for body in sent if "comment" in body] == [
        {"text": XSS, "reasons": ["xss"]}]
    assert await page.evaluate("window.__pwned") is None
    assert dialogs == []
    counts = await page.evaluate("""() => {
      const roots = [...document.querySelectorAll('[data-feedbackloop-widget]')].map(h => h.shadowRoot);
      return roots.map(r => r.querySelectorAll('img, script').length);
    }""")
    assert counts == [0, 0]
    await browser_stack.screenshot(page, "host-hostile-text")


def _script_json(value: object) -> str:
    return json.dumps(value).replace("</", "<\\/")


async def test_a_token_for_another_response_is_refused_and_said(
    browser_stack: BrowserStack, page: Page
) -> None:
    rid, other = response_id(), response_id()
    token = await browser_stack.token(other)
    ingest = browser_stack.ingest_url
    url = browser_stack.host.put("/wrong-token.html", f"""<!doctype html>
<html lang="en"><head><title>Wrong token</title></head><body><main><h1>Wrong token</h1>
<div id="answer"><p>An AI answer.</p></div>
<script type="module">
  import {{ mount }} from "{ingest}/widget/v1/feedbackloop.mjs";
  window.refusals = [];
  mount(document.getElementById("answer"), {{ endpoint: "{ingest}", responseId: "{rid}",
    token: "{token}", onError: (error) => window.refusals.push(error) }});
</script></main></body></html>""")
    await page.goto(url)
    await page.locator('#answer [data-fbl="up"]').click()
    await expect(page.locator("#answer [role=status]")).to_have_text("Your feedback could not be sent.")
    refusals = await page.evaluate("window.refusals")
    assert [refusal["status"] for refusal in refusals] == [403]
    assert other in refusals[0]["message"] and rid in refusals[0]["message"]
    assert await page.evaluate("JSON.parse(localStorage.getItem('feedbackloop:v1:queue'))") == []


async def test_an_expired_token_is_replaced_once_from_get_token(
    browser_stack: BrowserStack, page: Page
) -> None:
    rid = response_id()
    await browser_stack.log_response(rid, "host_refresh")
    expired, _ = FeedbackTokenSigner(TOKEN_SECRET.encode(), clock=lambda: time.time() - 7_200).mint(
        TENANT, rid, 60)
    fresh = await browser_stack.token(rid)
    ingest = browser_stack.ingest_url
    url = browser_stack.host.put("/refresh.html", f"""<!doctype html>
<html lang="en"><head><title>Token refresh</title></head><body><main><h1>Token refresh</h1>
<div id="answer"><p>An AI answer.</p></div>
<script type="module">
  import {{ mount }} from "{ingest}/widget/v1/feedbackloop.mjs";
  window.asked = 0;
  mount(document.getElementById("answer"), {{ endpoint: "{ingest}", responseId: "{rid}",
    getToken: async () => (window.asked++ === 0 ? "{expired}" : "{fresh}") }});
</script></main></body></html>""")
    statuses: list[int] = []
    page.on("response", lambda answer: statuses.append(answer.status)
            if answer.url.endswith("/v1/feedback") and answer.request.method == "POST" else None)
    await page.goto(url)
    await page.locator('#answer [data-fbl="up"]').click()
    await expect(page.locator("#answer [role=status]")).to_have_text("Thanks for your feedback.")
    assert await page.evaluate("window.asked") == 2
    assert statuses == [401, 202]
    await browser_stack.approval_becomes("host_refresh", (1, 0))
