"""The widget as ingest serves it: content type, caching, CORS for module imports, and its size
(the build reports the gzipped size; this checks both the report and the bytes served)."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from tests.browser.conftest import WIDGET_DIST, BrowserStack

pytestmark = pytest.mark.browser

BUDGET_GZIP_BYTES = 15 * 1024


@pytest.mark.parametrize("name", ["feedbackloop.js", "feedbackloop.mjs"])
async def test_served_with_long_caching_and_under_budget(browser_stack: BrowserStack, name: str) -> None:
    async with httpx.AsyncClient(base_url=browser_stack.ingest_url) as client:
        answer = await client.get(f"/widget/v1/{name}")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
        assert "max-age=604800" in answer.headers["cache-control"]
        assert answer.headers["access-control-allow-origin"] == "*"
        assert answer.headers["x-content-type-options"] == "nosniff"
        again = await client.get(f"/widget/v1/{name}", headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304
    served = len(gzip.compress(answer.content, compresslevel=9))
    report = json.loads((WIDGET_DIST / "size.json").read_text())
    print(f"widget {name}: {len(answer.content)} bytes, {served} bytes gzipped")
    assert report["files"][name]["gzip_bytes"] <= BUDGET_GZIP_BYTES
    assert served <= BUDGET_GZIP_BYTES
    assert report["files"][name]["bytes"] == len(answer.content)


async def test_unknown_widget_files_are_404(browser_stack: BrowserStack) -> None:
    async with httpx.AsyncClient(base_url=browser_stack.ingest_url) as client:
        answer = await client.get("/widget/v1/../../etc/passwd")
        assert answer.status_code == 404
        answer = await client.get("/widget/v1/size.json")
        assert answer.status_code == 404
