"""The console in a real browser (Debian's Chromium through Playwright, tests/browserkit.py):
sign in with the printed link, walk every page from the keyboard, filter and page the
transfers, drop a photo onto the lookup, erase, resolve and export with their confirmations,
print. No page may log an error or break its Content-Security-Policy, and the hostile values
in the log must never run.

Screenshots of each page go to the test's temporary folder, or to ``$VEILPIX_SCREENSHOTS``
when set (docs/images/ is made that way: see docs/compliance.md)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import auditkit
from browserkit import blocked_requests, page_errors, screenshot
from consolekit import fill_log
from veilpix import AuditLog, verify_log
from veilpix.console import Console, Settings
from veilpix.console._serve import Running, start

if TYPE_CHECKING:
    from playwright.sync_api import Page


def expect(target: Any) -> Any:
    """Playwright's retrying assertions (imported here: without Playwright the module's tests
    skip through the page fixture, not fail on import)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, dict[str, Any]]]:
    path = tmp_path_factory.mktemp("browser") / "audit.db"
    ids = fill_log(path, 60)
    log = AuditLog(path, readonly=True)
    console = Console(
        log,
        Settings(changes=True, open_writer=lambda: AuditLog(path), local_user="compliance"),
    )
    running = start(console, port=0)
    for job in (console.index_job, console.verify_job, console.register_job):
        job.start()  # (done before the pages are opened: no page reloads itself meanwhile)
        job.wait(60)
    ids["path"] = path
    try:
        yield running, ids
    finally:
        running.stop()
        log.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = os.environ.get("VEILPIX_SCREENSHOTS")
    return Path(where) if where else tmp_path


@pytest.fixture
def signed_in(page: Page, served) -> Page:  # type: ignore[no-untyped-def]
    running, _ = served
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(running.login_url())
    assert page.url == running.url + "/"
    yield page
    assert dialogs == []  # no hostile value ever ran
    allowed = getattr(page, "allowed_errors", ())  # a refusal a test asked for on purpose
    assert [e for e in page_errors(page) if not any(a in e for a in allowed)] == []
    assert blocked_requests(page) == []


def test_every_page_renders_clean(signed_in: Page, served, shots: Path) -> None:  # type: ignore[no-untyped-def]
    page = signed_in
    running, ids = served
    pages = {
        "overview": "/",
        "transfers": "/transfers",
        "transfer": f"/transfers/{ids['hostile']}",
        "lookup": "/lookup",
        "actions": "/actions",
    }
    for name, path in pages.items():
        page.goto(running.url + path)
        assert page.locator("h1").count() == 1
        assert "veilpix console" in page.title()
        screenshot(page, shots / f"console-{name}.png")
    page.goto(running.url + "/register")
    page.wait_for_selector("text=Record of processing", timeout=20_000)
    screenshot(page, shots / "console-register.png")
    # the hostile value shows as text
    page.goto(running.url + f"/transfers/{ids['hostile']}")
    assert page.get_by_text('<script>alert("x")</script>', exact=False).count() > 0


def test_keyboard_only(signed_in: Page, served) -> None:  # type: ignore[no-untyped-def]
    page = signed_in
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # the sections are reachable by Tab, in order, and open with Enter
    page.goto(page.url.split("#")[0])
    labels = []
    for _ in range(12):
        page.keyboard.press("Tab")
        labels.append(page.evaluate("document.activeElement.textContent.trim()"))
    assert [
        x
        for x in labels
        if x in ("Overview", "Transfers", "Was this photo sent?", "Register", "Actions")
    ] == ["Overview", "Transfers", "Was this photo sent?", "Register", "Actions"]
    while page.evaluate("document.activeElement.textContent.trim()") != "Transfers":
        page.keyboard.press("Shift+Tab")
    # focus is visible
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")
    page.wait_for_url("**/transfers")


def test_filter_and_page_the_transfers(signed_in: Page, served) -> None:  # type: ignore[no-untyped-def]
    page = signed_in
    running, ids = served
    page.goto(running.url + "/transfers")
    assert page.locator("p.count").inner_text().startswith("1–50 of ")
    page.get_by_role("link", name="Older →").click()
    expect(page.locator("p.count")).to_contain_text("51–")
    page.get_by_label("Outcome").select_option("unknown")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("p.count")).to_contain_text("1–1 of 1")
    assert "outcome=unknown" in page.url
    page.locator(f'a[href="/transfers/{ids["open"]}"]').click()
    expect(page.get_by_text("never (outcome unknown)")).to_have_count(1)
    page.get_by_role("link", name="Resolve this transfer's outcome…").click()
    expect(page.get_by_label("Record id")).to_have_value(ids["open"])


def test_drop_a_photo(signed_in: Page, served, tmp_path: Path, shots: Path) -> None:  # type: ignore[no-untyped-def]
    page = signed_in
    running, _ = served
    page.goto(running.url + "/lookup")
    # dropped (the page's script submits the form)
    data = list(auditkit.PHOTO)
    page.evaluate(
        """(bytes) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], "holiday.jpg", {type: "image/jpeg"}));
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        data,
    )
    page.wait_for_selector("text=was sent in")
    assert "holiday.jpg" in page.inner_text("main")
    screenshot(page, shots / "console-lookup-found.png")
    # chosen with the file field, without the script's help
    other = tmp_path / "other.jpg"
    other.write_bytes(b"\xff\xd8\xff\xe0 not this one")
    page.set_input_files("#photo", str(other))
    page.get_by_role("button", name="Look it up").click()
    page.wait_for_selector("text=No transfer in this log sent")


def test_erase_resolve_and_export(signed_in: Page, served, shots: Path) -> None:  # type: ignore[no-untyped-def]
    page = signed_in
    running, ids = served
    page.goto(running.url + "/actions")
    page.get_by_role("textbox", name="Subject reference").fill("customer-4711")
    page.get_by_label("Request reference").fill("DSR-2026-118")
    page.get_by_role("button", name="Erase…").click()
    page.get_by_role("button", name="Yes, erase").wait_for()  # (the next page has loaded)
    assert "Confirm: Erase" in page.title()
    screenshot(page, shots / "console-confirm-erase.png")
    page.get_by_role("button", name="Yes, erase").click()
    expect(page.get_by_text("Erased the subject-linked fields of 1 transfer")).to_have_count(1)
    page.allowed_errors = ("status of 400 (Bad Request) (http://127.0.0.1:",)  # type: ignore[attr-defined]
    page.goto(running.url + f"/actions?record={ids['failed']}")
    # a transfer with a known outcome is refused with a message, not a crash
    page.get_by_label("Outcome").select_option("sent")
    page.get_by_label("How you know").fill("dashboard")
    page.get_by_role("button", name="Resolve…").click()
    expect(page.get_by_text("already has an outcome")).to_have_count(1)
    with page.expect_download() as download:
        page.locator("#export").get_by_label("Format").select_option("csv")
        page.locator("#export").get_by_role("button", name="Export").click()
    saved = download.value.path()
    assert saved is not None
    lines = Path(saved).read_text().splitlines()
    assert lines[0].startswith("id,") and len(lines) > 60
    page.goto(running.url + "/actions")
    history = page.locator("#h-history + table").inner_text()
    assert "erase" in history and "export" in history
    assert verify_log(ids["path"]).intact


def test_print_shows_the_content_only(signed_in: Page, served) -> None:  # type: ignore[no-untyped-def]
    page = signed_in
    running, _ = served
    page.goto(running.url + "/")
    page.emulate_media(media="print")
    assert not page.locator("header.top").is_visible()
    assert page.locator("h1").is_visible()
    pdf = page.pdf(format="A4", landscape=True)
    assert pdf[:4] == b"%PDF" and len(pdf) > 10_000
    page.emulate_media(media="screen")
    assert page.locator("header.top").is_visible()


def test_a_spent_link_and_sign_out(page: Page, served) -> None:  # type: ignore[no-untyped-def]
    running, _ = served
    link = running.login_url()
    page.goto(link)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_have_count(1)
    page.goto(running.url + "/transfers")
    assert page.url.endswith("/login")
    page.goto(link)
    expect(page.get_by_text(re.compile("used already"))).to_have_count(1)
    errors = [e for e in page_errors(page) if "403" not in e]  # the refused link's status
    assert errors == []


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Path]]:
    """The console on examples/compliance_console.py's demo log and veilpix.toml."""
    import importlib.util

    from veilpix._config import load_config

    example = Path(__file__).resolve().parents[2] / "examples" / "compliance_console.py"
    spec = importlib.util.spec_from_file_location("compliance_console", example)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = tmp_path_factory.mktemp("demo")
    photo = folder / "photo.jpg"
    photo.write_bytes(module.fill(folder / "audit.db", 300))
    (folder / "veilpix.toml").write_text(module.CONFIG)
    config = load_config(folder / "veilpix.toml")
    log = AuditLog(folder / "audit.db", readonly=True)
    console = Console(
        log,
        Settings(
            changes=True,
            show_subjects=config.console.show_subjects,
            register=config.register,
            log_retention=config.log.retention,
            open_writer=lambda: AuditLog(folder / "audit.db"),
            local_user="dpo",
        ),
    )
    running = start(console, port=0)
    for job in (console.index_job, console.verify_job, console.register_job):
        job.start()
        job.wait(60)
    try:
        yield running, photo
    finally:
        running.stop()
        log.close()


def test_the_demo_as_the_docs_show_it(page: Page, demo, shots: Path) -> None:  # type: ignore[no-untyped-def]
    """The pages docs/compliance.md shows (VEILPIX_SCREENSHOTS=docs/images refreshes them)."""
    running, photo = demo
    page.goto(running.login_url())
    page.goto(running.url + "/")
    screenshot(page, shots / "console-overview.png")
    page.goto(running.url + "/transfers?vendor=openai")
    screenshot(page, shots / "console-transfers.png", full_page=False)
    first = page.locator("table a.id").first.get_attribute("href")
    page.goto(running.url + str(first))
    screenshot(page, shots / "console-transfer.png")
    page.goto(running.url + "/lookup")
    page.set_input_files("#photo", str(photo))
    page.get_by_role("button", name="Look it up").click()
    page.wait_for_selector("text=was sent in")
    screenshot(page, shots / "console-lookup.png")
    page.goto(running.url + "/register")
    page.wait_for_selector("text=Record of processing", timeout=20_000)
    assert "Example Shop GmbH" in page.inner_text("main")
    screenshot(page, shots / "console-register.png", full_page=False)
    page.goto(running.url + "/actions")
    page.get_by_role("textbox", name="Subject reference").fill("customer-4711")
    page.get_by_label("Request reference").fill("DSR-2026-118")
    page.get_by_role("button", name="Erase…").click()
    page.get_by_role("button", name="Yes, erase").wait_for()
    screenshot(page, shots / "console-erase.png", full_page=False)
    assert page_errors(page) == []
