"""/api/docs in a real Chromium: Swagger UI renders the app's own operations under the
app's one Content-Security-Policy, with every asset served by the app itself."""

from __future__ import annotations

from urllib.parse import urlparse

from playwright.sync_api import expect

from tests.browser.conftest import Players


def test_api_docs_lists_the_operations_from_local_assets(players: Players) -> None:
    ctx = players.new_context()
    page = ctx.new_page()
    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    response = page.goto(f"{players.live.base_url}/api/docs")
    assert response is not None and response.ok
    assert "script-src 'self'" in (response.headers.get("content-security-policy") or "")

    # the operations a user looks for, by their path and summary
    expect(page.locator(".opblock").first).to_be_visible()
    paths = page.locator(".opblock-summary-path")
    expect(paths.filter(has_text="/api/session")).to_have_count(1)
    expect(paths.filter(has_text="/api/rooms/{room}").first).to_be_visible()
    summaries = page.locator(".opblock-summary-description")
    expect(summaries.filter(has_text="A guest viewer token")).to_have_count(1)
    assert page.locator(".opblock").count() >= 10

    hosts = {urlparse(u).netloc for u in requested if u.startswith("http")}
    assert hosts == {urlparse(players.live.base_url).netloc}, hosts  # no CDN
    assert not errors, errors
