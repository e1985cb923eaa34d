"""A real browser for end-to-end tests: Playwright's Python driver (sync API) pointed at the
system Chromium (Debian's ``chromium``). Playwright's own browser builds cannot be downloaded
here, so ``playwright install`` is never needed: only the ``playwright`` wheel (the driver).

Fixtures (tests/conftest.py imports them, so every test can ask for them):

- ``browser_session``: one Chromium per worker process (pytest-xdist), started on first use and
  closed at the end of the session. Its profile is a fresh temporary user-data-dir that
  Playwright makes for each launch (and removes on close).
- ``browser``: that Browser, handed to one test (see "the event loop" below).
- ``page``: a fresh context and page per test, 1366x900 ("laptop"), closed after the test. It
  can reach loopback only (127.0.0.1, localhost, [::1]): every other request is aborted by a
  route guard and listed by ``blocked_requests(page)``. Console errors, uncaught exceptions and
  CSP violations are collected: ``assert page_errors(page) == []``.

Loopback only, twice over: besides the route guard of each context, the browser is launched
with a proxy that is a dead end on 127.0.0.1 (it answers 403 to everything and records what
it was asked: ``BrowserSession.escaped``), with loopback exempt. So a request that the route
guard cannot see (a WebSocket on old Playwright, a preconnect, the browser's own background
traffic) still never leaves the machine, and no host name is ever looked up in DNS.

The event loop: Playwright's sync API keeps its asyncio loop marked as running in the thread
that started it for as long as it lives, so ``asyncio.run`` (and anyio) would fail in every
later test of that worker. The session therefore parks the loop between tests: the ``browser``
and ``page`` fixtures mark it running for the test that uses them, and clear it afterwards.
A fixture of a wider scope that drives the browser wraps its calls in
``with browser_session.driving():``. A test that uses the browser cannot call ``asyncio.run``
itself (a limit of Playwright's sync API); serve the app under test from a thread.

Without Playwright or without Chromium, or when Playwright cannot launch this Chromium, the
tests that use these fixtures skip with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route

ENV = "VEILPIX_CHROMIUM"
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
LAPTOP = {"width": 1366, "height": 900}
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
TIMEOUT_MS = 10_000  # per action and navigation: a loopback page that takes longer is a bug
FLAGS = (
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
)
# Runs in every document before its own scripts (CDP evaluates it, so the page's CSP does not
# apply): reports each CSP violation, enforced or report-only, to the binding below.
_CSP_HOOK = """
document.addEventListener('securitypolicyviolation', (e) => {
  window.__browserkitCsp(`${e.disposition} ${e.effectiveDirective}: blocked `
    + `${e.blockedURI || 'inline'} at ${e.sourceFile || e.documentURI}:${e.lineNumber}`);
}, true);
"""


class BrowserUnavailable(Exception):
    """No browser to test with; the message is the reason to skip."""


def find_chromium() -> str:
    """The Chromium to drive: $VEILPIX_CHROMIUM (a path, or a command name on PATH) when set,
    else the first of /usr/bin/chromium, /usr/bin/chromium-browser, ``chromium`` on PATH.
    Raises BrowserUnavailable ("... not found") when there is none."""
    wanted = os.environ.get(ENV)
    if wanted:
        path = wanted if os.sep in wanted else shutil.which(wanted)
        if path is None or not os.path.isfile(path):
            raise BrowserUnavailable(f"{ENV}={wanted}: not found")
        if not os.access(path, os.X_OK):
            raise BrowserUnavailable(f"{ENV}={wanted}: not executable")
        return path
    for candidate in CANDIDATES:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium")
    if found:
        return found
    raise BrowserUnavailable(
        f"Chromium not found ({', '.join(CANDIDATES)}, chromium on PATH; Debian: apt-get install"
        f" chromium; or set {ENV})"
    )


def unavailable() -> str | None:
    """Why no browser test can run here (without launching anything), or None."""
    reasons = []
    try:
        find_chromium()
    except BrowserUnavailable as exc:
        reasons.append(str(exc))
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reasons.append("playwright is not installed (pip install 'veilpix[dev]')")
    return "; ".join(reasons) or None


def launch_flags(root: bool | None = None) -> list[str]:
    """Chromium's command-line flags (headless is Playwright's own ``headless=True``)."""
    if root is None:
        root = os.geteuid() == 0
    # Chromium refuses to start its sandbox as root
    return [*(["--no-sandbox"] if root else []), *FLAGS]


def is_loopback(url: str) -> bool:
    """True for an http(s)/ws(s) URL on 127.0.0.1, localhost or [::1]; data: and blob: URLs
    never reach the network and pass too."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname in LOOPBACK


class _SinkHandler(socketserver.StreamRequestHandler):
    timeout = 5

    def handle(self) -> None:
        try:
            line = self.rfile.readline(8192).decode("latin-1").strip()
            for _ in range(200):  # the headers, unread
                if not self.rfile.readline(8192).strip():
                    break
            if line:
                self.server.seen.append(line)  # type: ignore[attr-defined]
            body = b"browserkit: this browser may reach loopback only\n"
            self.wfile.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        except OSError:
            pass


class Sink(socketserver.ThreadingTCPServer):
    """The browser's proxy: a dead end on 127.0.0.1 that answers 403 to every request (a
    CONNECT for https and wss) and records its first line in ``seen``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.seen: list[str] = []
        self.thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@dataclass
class BrowserSession:
    """One worker's Playwright, Chromium and proxy sink."""

    playwright: Playwright
    browser: Browser
    loop: asyncio.AbstractEventLoop
    sink: Sink
    executable: str
    startup_s: float  # Playwright's driver and Chromium, from nothing to ready

    @property
    def escaped(self) -> list[str]:
        """Requests that got past the route guards to the dead-end proxy."""
        return self.sink.seen

    @contextlib.contextmanager
    def driving(self) -> Iterator[Browser]:
        """Mark Playwright's loop running for this block (see the module docstring)."""
        before = asyncio._get_running_loop()
        asyncio._set_running_loop(self.loop)
        try:
            yield self.browser
        finally:
            if asyncio._get_running_loop() is self.loop:
                asyncio._set_running_loop(before)

    def close(self) -> None:
        try:
            with self.driving():
                try:
                    self.browser.close()
                finally:
                    self.playwright.stop()
        finally:
            self.sink.close()


def start_browser(executable: str | None = None) -> BrowserSession:
    """Start Playwright's driver and launch Chromium headless with its loop parked; raises
    BrowserUnavailable with the reason when that cannot be done here."""
    reason = unavailable() if executable is None else None
    if reason:
        raise BrowserUnavailable(reason)
    path = executable or find_chromium()
    from playwright.sync_api import Error, sync_playwright

    if asyncio._get_running_loop() is not None:
        raise RuntimeError("browserkit: Playwright's sync API cannot start inside an event loop")
    started = time.monotonic()
    sink = Sink()
    try:
        playwright = sync_playwright().start()
    except Exception:
        sink.close()
        raise
    loop = asyncio._get_running_loop()
    assert loop is not None
    try:
        browser = playwright.chromium.launch(
            executable_path=path,
            headless=True,
            args=launch_flags(),
            chromium_sandbox=True,  # --no-sandbox comes from launch_flags(), for root only
            # "<-loopback>": Chromium sends the rest of 127/8 to the proxy too (Playwright
            # adds it itself only when the bypass list names no loopback host)
            proxy={"server": sink.url, "bypass": "<-loopback>,127.0.0.1,localhost,[::1]"},
            timeout=60_000,  # 2 cores, shared with the other xdist workers
        )
    except Error as exc:
        playwright.stop()
        asyncio._set_running_loop(None)
        sink.close()
        raise BrowserUnavailable(_launch_failure(path, exc)) from exc
    except BaseException:
        playwright.stop()
        asyncio._set_running_loop(None)
        sink.close()
        raise
    session = BrowserSession(playwright, browser, loop, sink, path, time.monotonic() - started)
    asyncio._set_running_loop(None)  # parked until a test drives it
    return session


def _launch_failure(path: str, exc: Exception) -> str:
    from importlib.metadata import version

    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=20, check=False
        )
        chromium = out.stdout.strip() or "version unknown"
    except (OSError, subprocess.TimeoutExpired) as err:
        chromium = f"--version failed: {err}"
    # Playwright's message, then Chromium's own output ("Browser logs"), less the command line
    lines = [
        line.strip()
        for line in str(exc).splitlines()
        if line.strip()
        and "<launching>" not in line
        and line.strip() not in ("Browser logs:", "Call log:")
    ]
    detail = " | ".join(lines[:20])[:1500]
    return f"Playwright {version('playwright')} could not launch {path} ({chromium}): {detail}"


@dataclass
class PageLog:
    """What one context saw: console errors, uncaught exceptions and CSP violations in
    ``errors`` (CSP ones also in ``csp``), and the requests its route guard aborted."""

    errors: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    watched: set[int] = field(default_factory=set)  # id() of the pages listened to


_LOGS: dict[int, PageLog] = {}  # by id() of the BrowserContext; dropped when it closes


def new_context(browser: Browser, **options: Any) -> BrowserContext:
    """A context that can reach loopback only and logs errors; ``options`` go to
    ``browser.new_context`` (viewport, locale, ...)."""
    settings: dict[str, Any] = {
        "viewport": LAPTOP,
        "device_scale_factor": 1,
        "locale": "en-US",
        "timezone_id": "UTC",
        "color_scheme": "light",
        "reduced_motion": "reduce",
        "service_workers": "block",  # so that the route guard sees every request
    }
    settings.update(options)
    context = browser.new_context(**settings)
    log = _LOGS[id(context)] = PageLog()
    context.on("close", lambda _: _LOGS.pop(id(context), None))
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)

    def guard(route: Route) -> None:
        url = route.request.url
        if is_loopback(url):
            route.continue_()
        else:
            log.blocked.append(url)
            route.abort("blockedbyclient")

    context.route("**/*", guard)
    if hasattr(context, "route_web_socket"):  # Playwright >= 1.48

        def guard_ws(ws: Any) -> None:
            if is_loopback(ws.url):
                ws.connect_to_server()
            else:
                log.blocked.append(ws.url)
                ws.close(code=1008, reason="browserkit: loopback only")

        context.route_web_socket(lambda _url: True, guard_ws)

    def on_csp(_source: Any, text: str) -> None:
        log.csp.append(text)
        log.errors.append(f"csp: {text}")

    context.expose_binding("__browserkitCsp", on_csp)
    context.add_init_script(_CSP_HOOK)
    context.on("page", lambda page: _watch(page, log))
    return context


def _watch(page: Page, log: PageLog) -> None:
    if id(page) in log.watched:
        return
    log.watched.add(id(page))

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            where = msg.location or {}
            at = f" ({where.get('url')}:{where.get('lineNumber')})" if where.get("url") else ""
            log.errors.append(f"console.error: {msg.text}{at}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: log.errors.append(f"pageerror: {exc}"))


def new_page(browser: Browser, **options: Any) -> Page:
    """A page in a context of its own (see new_context); close it with page.context.close()."""
    context = new_context(browser, **options)
    opened = context.new_page()
    _watch(opened, _LOGS[id(context)])  # (the context's "page" event has done it already)
    return opened


def _log(page: Page) -> PageLog:
    log = _LOGS.get(id(page.context))
    if log is None:
        raise ValueError("this page was not opened by browserkit (new_page or the page fixture)")
    return log


def _settle(page: Page) -> None:
    """Let events already raised in the page reach Python (a round trip to the page)."""
    if not page.is_closed():
        with contextlib.suppress(Exception):
            page.evaluate("() => new Promise((r) => setTimeout(r, 0))")


def page_errors(page: Page) -> list[str]:
    """Console errors, uncaught exceptions and CSP violations so far (a CSP violation shows
    twice: Chromium's console message and the violation event, prefixed ``csp:``)."""
    _settle(page)
    return list(_log(page).errors)


def csp_violations(page: Page) -> list[str]:
    """CSP violation events so far, as "enforce|report DIRECTIVE: blocked URI at FILE:LINE"."""
    _settle(page)
    return list(_log(page).csp)


def blocked_requests(page: Page) -> list[str]:
    """URLs of the requests (and WebSockets) the route guard aborted, in order."""
    _settle(page)
    return list(_log(page).blocked)


def screenshot(page: Page, path: str | os.PathLike[str], *, full_page: bool = True) -> Path:
    """Save a PNG of the page (animations stopped, caret hidden) and return its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=full_page, animations="disabled", caret="hide")
    return out


@pytest.fixture(scope="session")
def browser_session() -> Iterator[BrowserSession]:
    """One Chromium per worker process; skips the test when there is none to be had."""
    try:
        session = start_browser()
    except BrowserUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def browser(browser_session: BrowserSession) -> Iterator[Browser]:
    """The worker's Chromium, for this test."""
    with browser_session.driving() as driven:
        yield driven


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh 1366x900 context and page that reach loopback only; closed after the test."""
    opened = new_page(browser)
    try:
        yield opened
    finally:
        opened.context.close()
