"""The HTML transfer register: the numbers it shows, hostile log values escaped, nothing loaded
from outside, the three integrity states, and an empty log."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import factories
import veilpix
from veilpix.audit._log import AuditLog
from veilpix.audit._record import OutboundImage, Transfer
from veilpix.audit._records import TransferRecord, summarize
from veilpix.audit._register import render_report
from veilpix.audit._verify import VerifyResult

HOSTILE_APP = "<script>alert('app')</script>"
HOSTILE_REASON = '<img src=x onerror="alert(1)"> vendor not allowed'
HOSTILE_RULE = "rules.<b>bold</b>"
GENERATED = "2025-12-01 08:00 UTC"


class Log:
    """A real log in a temp folder, written at chosen times (the clock moves one hour a call)."""

    def __init__(self, path: Path, start: datetime) -> None:
        self.now = start
        self.path = path
        self.log = AuditLog(path, clock=lambda: self.now)
        self.image = OutboundImage(factories.jpeg(), veilpix.sanitize(factories.jpeg()), "image")

    def at(self, when: datetime) -> Log:
        self.now = when
        return self

    def transfer(self, **fields: Any) -> Transfer:
        self.now += timedelta(hours=1)
        base: dict[str, Any] = {
            "vendor": "openai",
            "url": "https://api.openai.com/v1/images/edits",
            "images": [self.image],
            "country": "US",
        }
        return Transfer(**(base | fields))

    def sent(self, **fields: Any) -> str:
        pending = self.log.begin(self.transfer(**fields))
        pending.finish(status=200)
        return pending.id

    def read(self) -> tuple[list[TransferRecord], VerifyResult]:
        return list(self.log.records()), self.log.verify()


@pytest.fixture
def make_log(tmp_path: Path) -> Iterator[Callable[..., Log]]:
    logs: list[Log] = []

    def make(start: datetime = datetime(2025, 3, 1, tzinfo=UTC)) -> Log:
        logs.append(Log(tmp_path / f"audit{len(logs)}.db", start))
        return logs[-1]

    yield make
    for log in logs:
        log.log.close()


@pytest.fixture
def register(make_log: Callable[..., Log]) -> dict[str, Any]:
    """A quarter of traffic to three vendors, one blocked rule, one pending call."""
    log = make_log()
    openai = {
        "vendor": "openai",
        "legal_entity": "OpenAI Ireland Ltd",
        "transfer_mechanism": "adequacy decision (EU-US DPF)",
        "purpose": "product photo retouching",
        "legal_basis": "Art. 6(1)(b)",
        "app": "crm",
        "controls_applied": ["zero data retention"],
    }
    mistral = {
        "vendor": "mistral",
        "url": "https://api.mistral.ai/v1/chat/completions",
        "legal_entity": "Mistral AI SAS",
        "country": "FR",
        "app": HOSTILE_APP,
        "purpose": "support tickets",
        "legal_basis": "Art. 6(1)(f)",
        "controls_unavailable": ["zero data retention"],
    }
    for _ in range(3):
        log.sent(**openai)  # March: 3 to openai
    log.at(datetime(2025, 4, 10, tzinfo=UTC))
    for _ in range(2):
        log.sent(**mistral)  # April: 2 to mistral
    log.sent(**openai, images=[log.image, log.image])
    blocked = log.log.block(
        log.transfer(vendor="acme", url="https://api.acme.example/v1/x", country="CN", app="crm"),
        reason=HOSTILE_REASON,
        rule=HOSTILE_RULE,
    )
    log.at(datetime(2025, 5, 20, tzinfo=UTC))
    pending = log.log.begin(
        log.transfer(vendor="acme", url="https://api.acme.example/v1/y", country=None, app="batch")
    ).id
    failed = log.log.begin(log.transfer(**openai))
    failed.fail("ConnectTimeout")
    records, verify = log.read()
    return {
        "log": log,
        "records": records,
        "verify": verify,
        "blocked": blocked,
        "pending": pending,
    }


def render(records: list[TransferRecord], verify: VerifyResult, **kw: Any) -> str:
    return render_report(
        records, verify, log_path="/var/lib/veilpix/audit.db", generated=GENERATED, **kw
    )


def section(page: str, heading: str) -> str:
    """The HTML between ``<h2>heading</h2>`` and the next ``<h2>`` (or the footer)."""
    start = page.index(f"<h2>{heading}</h2>")
    ends = [i for i in (page.find("<h2>", start + 4), page.find("<footer>", start)) if i > 0]
    return page[start : min(ends)]


def row_of(table_html: str, first_cell_text: str) -> list[str]:
    """The cells (tags stripped) of the row whose first cell reads ``first_cell_text``."""
    for tr in re.findall(r"<tr>(.*?)</tr>", table_html, re.S):
        cells = [re.sub(r"<[^>]+>", " ", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        cells = [" ".join(c.split()) for c in cells]
        if cells and cells[0] == first_cell_text:
            return cells
    raise AssertionError(f"no row {first_cell_text!r}")


class Balance(HTMLParser):
    """Checks that every element that is opened is closed, in order."""

    VOID = frozenset({"meta", "br", "line", "rect", "img", "hr", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: set[str] = set()
        self.attrs: set[tuple[str, str]] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_startendtag(tag, attrs)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update((name, value or "") for name, value in attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()


def check_markup(page: str) -> Balance:
    parser = Balance()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed: {parser.stack}"
    return parser


# -- the numbers -------------------------------------------------------------------------------


def test_register_shows_the_numbers(register: dict[str, Any]) -> None:
    page = render(register["records"], register["verify"])
    check_markup(page)
    assert "/var/lib/veilpix/audit.db" in page and GENERATED in page
    assert "2025-03-01 01:00" in page and "2025-05-20 02:00" in page  # period covered
    assert register["verify"].log_id in page

    tiles = {
        label: re.sub(r"<[^>]+>", "", value.split("<small>")[0])
        for label, value in re.findall(r'<div class="tile"><span>([^<]+)</span><b>(.*?)</b>', page)
    }
    assert tiles == {
        "Calls": "9",
        "Sent": "6",
        "Blocked": "1",
        "Failed": "1",
        "Outcome unknown": "1",
        "Images sent": "9",
        "Data sent": "7.7 kB",
        "Recipients": "3",
        "Countries": "2",
    }
    # CN had only the blocked call: no transfer there
    assert "<small>1 outside the EEA; some calls name none; 1 more only blocked</small>" in page

    recipients = section(page, "Recipients")
    openai = row_of(recipients, "openai")
    assert openai[1:6] == [
        "OpenAI Ireland Ltd",
        "US",
        "adequacy decision (EU-US DPF)",
        "product photo retouching",
        "Art. 6(1)(b)",
    ]
    assert openai[6:8] == ["5", "6"]  # calls, images (the failed call counts: data may have left)
    assert openai[9:] == ["2025-03-01 01:00", "2025-05-20 02:00"]
    mistral = row_of(recipients, "mistral")
    assert mistral[1:4] == ["Mistral AI SAS", "FR", "not needed (EEA)"]
    assert mistral[6:8] == ["2", "2"]
    acme = row_of(recipients, "acme")
    assert acme[1:3] == ["not recorded", "not recorded"]  # CN: blocked, nothing went there
    assert (
        acme[3] == "none recorded for 1 call not known to stay in the EEA"
    )  # the blocked one needs none
    assert acme[6:8] == ["2", "1"]  # calls include the blocked one, images do not

    countries = section(page, "Countries")
    assert row_of(countries, "US")[1:] == [
        "third country",
        "openai",
        "adequacy decision (EU-US DPF)",
        "5",
        "4",
        "0",
        "6",
        row_of(countries, "US")[-1],
    ]
    assert row_of(countries, "FR")[1] == "EEA"
    assert row_of(countries, "CN")[1:7] == [
        "third country",
        "none",
        "not needed (every call blocked)",
        "1",
        "0",
        "1",
    ]
    assert row_of(countries, "not recorded")[1] == "unknown"


def test_blocked_calls_make_no_recipient_country_or_category(
    make_log: Callable[..., Log],
) -> None:
    """A call that was blocked transferred nothing: "stability" (only blocked, to GB) is no
    recipient and GB no destination; "mistral" sent to FR and had one call to US blocked, so
    it reached only FR and needs no transfer mechanism. The calls still count as calls."""
    log = make_log()
    stability = {
        "vendor": "stability",
        "url": "https://api.stability.ai/v2beta/x",
        "country": "GB",
        "data_categories": ["biometric data"],
        "controls_applied": ["zero data retention"],
        "purpose": "ads",
    }
    mistral = {
        "vendor": "mistral",
        "url": "https://api.mistral.ai/v1/x",
        "country": "FR",
        "legal_entity": "Mistral AI SAS",
    }
    log.log.block(log.transfer(**stability), reason="not allowed", rule="vendors.allowed")
    log.sent(**mistral)
    log.log.block(
        log.transfer(
            **mistral | {"country": "US"},
            transfer_mechanism="SCC module 2",
            data_categories=["health data"],
            app="secret-app",
        ),
        reason="not allowed here",
        rule="countries.allowed",
    )
    records, verify = log.read()
    page = render(records, verify)
    check_markup(page)

    tiles = dict(re.findall(r'<div class="tile"><span>([^<]+)</span><b>(.*?)</b>', page))
    assert tiles["Recipients"] == "1<small>1 more vendor only blocked</small>"
    assert tiles["Countries"] == "1<small>0 outside the EEA; 2 more only blocked</small>"
    assert "A recipient is a vendor that received at least one call that was not blocked" in page

    recipients = section(page, "Recipients")
    assert "stability" not in recipients.split("</p>", 1)[1]
    row = row_of(recipients, "mistral")
    assert row[1:4] == ["Mistral AI SAS", "FR", "not needed (EEA)"]
    assert row[6:9] == ["2", "1", row[8]]  # both calls, the image of the one sent
    stats = {r.vendor: r for r in summarize(records)}
    assert row[6] == str(sum(r.calls for r in summarize(records) if r.vendor == "mistral"))
    assert stats["stability"].calls == 1 and stats["stability"].images == 0

    countries = section(page, "Countries")
    assert "none recorded" not in countries and "SCC module 2" not in page
    assert row_of(countries, "FR")[1:7] == ["EEA", "mistral", "—", "1", "1", "0"]
    for country in ("GB", "US"):  # third countries, but nothing went there
        assert row_of(countries, country)[1:7] == [
            "third country",
            "none",
            "not needed (every call blocked)",
            "1",
            "0",
            "1",
        ]

    for heading in ("Privacy controls", "Categories of personal data"):
        assert "stability" not in section(page, heading)
    categories = section(page, "Categories of personal data")
    assert "health data" not in categories and "biometric data" not in categories
    assert "secret-app" not in categories
    assert row_of(categories, "mistral")[1].startswith("image")

    blocked = section(page, "Blocked calls")  # still shown, by rule
    assert row_of(blocked, "vendors.allowed")[1:3] == ["1", "stability"]
    assert row_of(blocked, "countries.allowed")[1:3] == ["1", "mistral"]
    images = section(page, "Activity")
    assert re.findall(r'<text class="label"[^>]*>([^<]+)<title>', images) == ["mistral"]


def test_every_call_blocked(make_log: Callable[..., Log]) -> None:
    log = make_log()
    log.log.block(log.transfer(country="CN"), reason="no", rule="vendors.allowed")
    records, verify = log.read()
    page = render(records, verify)
    check_markup(page)
    tiles = dict(re.findall(r'<div class="tile"><span>([^<]+)</span><b>(.*?)</b>', page))
    assert tiles["Recipients"] == "0<small>1 more vendor only blocked</small>"
    assert tiles["Countries"] == "0<small>0 outside the EEA; 1 more only blocked</small>"
    for heading in ("Recipients", "Privacy controls", "Categories of personal data"):
        assert "every call was blocked, so no personal data was transferred" in section(
            page, heading
        )
    assert row_of(section(page, "Countries"), "CN")[3] == "not needed (every call blocked)"
    assert row_of(section(page, "Blocked calls"), "vendors.allowed")[1:3] == ["1", "openai"]


def test_charts_are_inline_svg(register: dict[str, Any]) -> None:
    activity = section(render(register["records"], register["verify"]), "Activity")
    assert activity.count("<svg") == 2
    for month in ("2025-03", "2025-04", "2025-05"):
        assert f">{month}</text>" in activity
    assert "<title>2025-04: 3 sent</title>" in activity
    assert "<title>2025-04: 1 blocked</title>" in activity
    assert "<title>2025-05: 1 outcome unknown</title>" in activity
    assert "<title>2025-05: 1 failed</title>" in activity
    bars = re.findall(r'<text class="label"[^>]*>([^<]+)<title>', activity)
    assert bars == ["openai", "mistral", "acme"]  # by images sent


def test_faces_controls_pending_and_blocked(register: dict[str, Any]) -> None:
    page = render(register["records"], register["verify"])
    faces = section(page, "Faces")
    assert "Images sent without a face check: <b>9</b>" in faces
    assert row_of(faces, "openai") == ["openai", "6", "0", "0", "6"]
    controls = section(page, "Privacy controls")
    assert row_of(controls, "openai")[1] == "zero data retention"
    assert row_of(controls, "mistral")[1:] == ["none", "none", "zero data retention"]
    pending = section(page, "Open records")
    assert register["pending"] in pending
    assert row_of(pending, register["pending"])[2:5] == ["acme", "api.acme.example", "batch"]
    assert register["records"][0].id not in pending
    blocked = section(page, "Blocked calls")
    cells = row_of(blocked, "rules.&lt;b&gt;bold&lt;/b&gt;")
    assert cells[1:3] == ["1", "acme"]


# -- hostile values and self-containment ---------------------------------------------------------


def test_hostile_values_are_escaped(register: dict[str, Any]) -> None:
    page = render(register["records"], register["verify"], title="<script>x</script> & co")
    tags = check_markup(page).tags
    assert "<script" not in page.lower()
    assert "<img" not in page.lower() and "onerror=" not in page.replace("onerror=&quot;", "")
    assert "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&#x27;app&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; vendor not allowed" in page
    assert "rules.&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<title>&lt;script&gt;x&lt;/script&gt; &amp; co</title>" in page
    assert not tags & {"script", "img", "iframe", "object", "embed", "link", "a", "form"}


def test_page_is_self_contained(register: dict[str, Any]) -> None:
    page = render(register["records"], register["verify"])
    markup = check_markup(page)
    names = {name for name, _ in markup.attrs}
    assert not names & {"src", "href", "xlink:href", "srcset", "action", "data", "poster"}
    assert not any(name.startswith("on") for name in names)
    lower = page.lower()
    for needle in ("http:", "https:", "url(", "@import", "@font-face", "<link", "<script"):
        assert needle not in lower, needle
    assert "content-security-policy" in lower and "default-src 'none'" in page
    assert "@media print" in page and "size:A4 landscape" in page


def test_unknown_vendor_values_render(make_log: Callable[..., Log]) -> None:
    log = make_log()
    log.sent(vendor="v" * 200, country="zz", legal_entity="", purpose=None, images=[])
    records, verify = log.read()
    page = render(records, verify)
    check_markup(page)
    assert "ZZ" in page and "v" * 200 in page


# -- integrity and edge cases --------------------------------------------------------------------


def test_verified_log_is_green(register: dict[str, Any]) -> None:
    log: Log = register["log"]
    log.log.checkpoint()
    records, verify = log.read()
    assert verify.ok
    page = render(records, verify)
    assert '<section class="status ok"><strong>Integrity verified.</strong>' in page
    assert f"signing key {verify.key_id}" in page


def test_unsigned_tail_is_amber(register: dict[str, Any]) -> None:
    verify: VerifyResult = register["verify"]
    assert verify.intact and not verify.ok  # nothing signed yet: the writer is still open
    page = render(register["records"], verify)
    assert '<section class="status warn-box"><strong>Intact, not fully signed.</strong>' in page
    assert f"{verify.unsigned_tail} entries at the end carry no signature yet" in page


def test_tampered_log_is_red_with_the_first_problem(make_log: Callable[..., Log]) -> None:
    log = make_log()
    for _ in range(3):
        log.sent(app="crm")
    log.log.close()
    with sqlite3.connect(log.path) as db:
        db.execute("UPDATE entries SET body = replace(body, 'crm', 'erp') WHERE seq = 3")
    with AuditLog(log.path, readonly=True) as ro:
        records, verify = list(ro.records()), ro.verify()
    assert not verify.intact and verify.first_problem is not None
    page = render(records, verify)
    check_markup(page)
    assert '<section class="status bad"><strong>Integrity check FAILED.</strong>' in page
    from html import escape

    assert escape(verify.first_problem.message) in page
    assert "Integrity verified" not in page


def test_empty_log(make_log: Callable[..., Log]) -> None:
    log = make_log()
    records, verify = log.read()
    assert records == []
    page = render(records, verify)
    check_markup(page)
    assert "No transfers recorded." in page
    assert "Integrity verified." in page
    assert "<svg" not in page and "<table" not in page


def test_filtered_register_says_so(register: dict[str, Any]) -> None:
    records = [r for r in register["records"] if r.where.get("vendor") == "mistral"]
    page = render(records, register["verify"])
    assert "<dd>2 of 9 in the log (filtered)</dd>" in page
    assert "openai" not in section(page, "Recipients")


def test_many_months_and_pending_are_capped(make_log: Callable[..., Log]) -> None:
    log = make_log(datetime(2023, 1, 1, tzinfo=UTC))
    for month in range(30):
        log.at(datetime(2023 + month // 12, month % 12 + 1, 3, tzinfo=UTC)).sent(images=[])
    records, verify = log.read()
    pending = [
        TransferRecord(
            id=f"p{i:07d}",
            seq=100 + i,
            begun="2025-07-01T00:00:00.000000Z",
            begin={"where": {"vendor": "x"}},
        )
        for i in range(520)
    ]
    page = render(records + pending, verify)
    check_markup(page)
    activity = section(page, "Activity")
    labels = re.findall(r'text-anchor="middle">(\d{4}-\d{2})</text>', activity)
    assert 10 <= len(labels) <= 12  # every third month of 31 is labelled
    assert "… and 20 more" in section(page, "Open records")


def test_restarted_log_says_so_in_the_register(tmp_path: Path) -> None:
    from veilpix import restart_log

    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        log.begin(Transfer(vendor="openai", url="https://api.openai.com/v1/x")).finish(status=200)
    path.unlink()
    restart_log(path, reason="disk <failed>, no backup")
    with AuditLog(path, readonly=True) as ro:
        records, verify = list(ro.records()), ro.verify()
    page = render(records, verify)
    check_markup(page)
    assert "Integrity verified." in page and "This log was started over" in page
    assert "which was missing" in page and "disk &lt;failed&gt;, no backup" in page
    assert "1 of 1 entry MACs hold" in page
