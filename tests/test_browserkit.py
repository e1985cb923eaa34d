"""Self-test of tests/browserkit.py: a real Chromium renders a page served on loopback under a
strict CSP, the CSP and the loopback-only guards hold, the keyboard works, screenshots are
real PNGs. The finder tests need no browser."""

from __future__ import annotations

import asyncio
import os
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import browserkit
from browserkit import (
    BrowserSession,
    BrowserUnavailable,
    blocked_requests,
    csp_violations,
    find_chromium,
    page_errors,
    screenshot,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CSP = "default-src 'none'; script-src 'self'; style-src 'self'"
INDEX = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>browserkit</title>
<link rel="stylesheet" href="/app.css"><script src="/app.js" defer></script>
<script>document.title = "inline ran";</script>
</head><body><main>
<h1 id="out">waiting for app.js</h1>
<button id="first" type="button">First</button>
<a id="second" href="#second">Second</a>
</main></body></html>"""
APP_JS = b"""const out = document.getElementById("out");
out.textContent = "rendered by app.js";
document.getElementById("first").addEventListener("click", () => {
  out.textContent = "first pressed";
});"""
APP_CSS = b"""body { font: 16px sans-serif; margin: 2rem; background: #fff; color: #111; }
h1 { color: #1a4d8f; } :focus { outline: 3px solid #d33; }"""
# no CSP here, so that the page itself asks for an outside address
OPEN = b"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>open</title></head>
<body><p>outside</p><img alt="" src="http://192.0.2.1/pixel.png"></body></html>"""
EXTERNAL = ("http://192.0.2.1/", "https://example.com/")  # never reached: aborted in Chromium
PAGES = {
    "/": ("text/html; charset=utf-8", INDEX, CSP),
    "/app.js": ("text/javascript", APP_JS, CSP),
    "/app.css": ("text/css", APP_CSS, CSP),
    "/open.html": ("text/html; charset=utf-8", OPEN, None),
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = PAGES.get(self.path)
        if found is None:
            self.send_error(404)
            return
        kind, body, csp = found
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if csp:
            self.send_header("Content-Security-Policy", csp)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- finding the browser (no browser needed) ----------------------------------------------------


def test_a_missing_override_is_reported_not_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VEILPIX_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(BrowserUnavailable, match="not found"):
        find_chromium()
    reason = browserkit.unavailable()
    assert reason is not None
    assert "not found" in reason
    assert "VEILPIX_CHROMIUM" in reason


def test_the_override_wins_when_it_exists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "my-chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("VEILPIX_CHROMIUM", str(fake))
    assert find_chromium() == str(fake)
    fake.chmod(0o644)
    with pytest.raises(BrowserUnavailable, match="not executable"):
        find_chromium()


def test_no_chromium_anywhere_is_reported_not_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("VEILPIX_CHROMIUM", raising=False)
    monkeypatch.setattr(browserkit, "CANDIDATES", (str(tmp_path / "chromium"),))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrowserUnavailable, match="not found"):
        find_chromium()


def test_flags() -> None:
    assert "--no-sandbox" in browserkit.launch_flags(root=True)
    assert "--no-sandbox" not in browserkit.launch_flags(root=False)
    assert {"--disable-gpu", "--disable-quic", "--disable-extensions"} <= set(
        browserkit.launch_flags(root=False)
    )


def test_loopback_only() -> None:
    for url in ("http://127.0.0.1:8000/x", "http://localhost/", "ws://[::1]:9/", "data:,x"):
        assert browserkit.is_loopback(url), url
    for url in (*EXTERNAL, "http://127.0.0.2/", "http://localhost.example.com/", "file:///etc"):
        assert not browserkit.is_loopback(url), url


# -- a real browser --------------------------------------------------------------------------------


def test_renders_a_same_origin_script_under_a_strict_csp(page: Page, site: str) -> None:
    response = page.goto(site + "/")
    assert response is not None
    assert response.headers["content-security-policy"] == CSP
    page.wait_for_function("document.getElementById('out').textContent.includes('app.js')")
    assert page.inner_text("#out") == "rendered by app.js"
    # the stylesheet applied (style-src 'self')
    color = page.eval_on_selector("h1", "e => getComputedStyle(e).color")
    assert color == "rgb(26, 77, 143)"


def test_an_inline_script_is_blocked_and_reported(page: Page, site: str) -> None:
    page.goto(site + "/")
    page.wait_for_function("document.getElementById('out').textContent.includes('app.js')")
    assert page.title() == "browserkit"  # the inline script did not run
    page.wait_for_function("() => true")
    violations = csp_violations(page)
    assert len(violations) == 1, violations
    assert violations[0].startswith("enforce script-src-elem: blocked inline at " + site)
    errors = page_errors(page)
    # Chromium's console message and the violation event, and nothing else
    assert len(errors) == 2, errors
    assert all("inline" in e or "Content Security Policy" in e for e in errors), errors


def test_a_clean_page_has_no_errors(page: Page, site: str) -> None:
    page.set_content("<p>clean</p>")
    assert page_errors(page) == []
    page.evaluate("setTimeout(() => { throw new Error('boom') }, 0)")
    page.wait_for_timeout(50)
    assert [e for e in page_errors(page) if "boom" in e] == ["pageerror: boom"]


def test_outside_addresses_are_blocked(
    page: Page, site: str, browser_session: BrowserSession
) -> None:
    from playwright.sync_api import Error

    page.goto(site + "/open.html")  # its <img> points outside
    fetched = page.evaluate(
        "fetch('http://192.0.2.1/api').then(() => 'reached', (e) => 'failed: ' + e.message)"
    )
    assert fetched.startswith("failed")
    for url in EXTERNAL:
        with pytest.raises(Error, match="ERR_BLOCKED_BY_CLIENT"):
            page.goto(url)
    blocked = blocked_requests(page)
    assert blocked == ["http://192.0.2.1/pixel.png", "http://192.0.2.1/api", *EXTERNAL]
    # The requests themselves never left Chromium. For an https navigation Chromium opens a
    # connection ahead of the request (a preconnect) that no route sees: it meets the dead-end
    # proxy, never DNS or the network.
    escaped = [line for line in browser_session.escaped if "192.0.2.1" in line or "example" in line]
    assert set(escaped) <= {"CONNECT example.com:443 HTTP/1.1"}, escaped


def test_the_proxy_catches_what_no_route_guards(
    browser: Browser, browser_session: BrowserSession
) -> None:
    # A bare context, without the route guard. 127.0.0.2 is loopback too, so even if the proxy
    # were not in force, this would not leave the machine; with it, the sink answers 403.
    context = browser.new_context()
    try:
        response = context.new_page().goto("http://127.0.0.2:8080/probe")
        assert response is not None
        assert response.status == 403
    finally:
        context.close()
    assert "GET http://127.0.0.2:8080/probe HTTP/1.1" in browser_session.escaped


def test_keyboard_navigation(page: Page, site: str) -> None:
    page.goto(site + "/")
    page.wait_for_function("document.getElementById('out').textContent.includes('app.js')")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "first"
    page.keyboard.press("Enter")
    assert page.inner_text("#out") == "first pressed"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "second"
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "first"


def test_screenshot(page: Page, site: str, tmp_path: Path) -> None:
    from PIL import Image

    page.goto(site + "/")
    page.wait_for_function("document.getElementById('out').textContent.includes('app.js')")
    path = screenshot(page, tmp_path / "shots" / "index.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1366
    assert height >= 900
    with Image.open(path) as image:
        gray = image.convert("L")
        assert gray.getextrema()[0] < 64  # dark text on white
        # the heading is drawn in its own blue, i.e. the stylesheet and the fonts are there
        assert (26, 77, 143) in {rgb for _, rgb in image.convert("RGB").getcolors(1 << 20) or []}
    assert len(data) > 3000
    assert page_errors(page) == [e for e in page_errors(page) if "inline" in e or "Content" in e]


def test_asyncio_still_works_between_browser_tests(browser_session: BrowserSession) -> None:
    # The worker's browser is up (this module started it), and its loop is parked: the rest of
    # the suite can call asyncio.run as usual.
    assert asyncio._get_running_loop() is None
    assert asyncio.run(asyncio.sleep(0, "ran")) == "ran"
    assert browser_session.browser.is_connected()
    assert browser_session.startup_s < 60
    print(f"browser start {browser_session.startup_s:.2f} s in pid {os.getpid()}")
