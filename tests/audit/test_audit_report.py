"""The HTML transfer register: the numbers it shows, hostile log values escaped, nothing loaded
from outside, the three integrity states, and an empty log."""

from __future__ import annotations

import dataclasses
import html
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
from veilpix._config_review import RegisterConfig
from veilpix.audit._html import CSS
from veilpix.audit._log import AuditLog
from veilpix.audit._record import OutboundImage, Transfer
from veilpix.audit._records import TransferRecord, summarize
from veilpix.audit._register import register_body, render_report
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


# -- the record of processing ([register]) -------------------------------------------------------

HOSTILE = "<script>alert(1)</script>"
FULL_REGISTER = RegisterConfig(
    controller=f"Shop {HOSTILE} GmbH",
    address='Rue "Quote" & Sons\n<b>2nd</b> floor',
    contact="privacy@shop.example & 'support'",
    representative="EU Rep <Ltd> & Co",
    dpo='Dr. "Jane" Doe',
    data_subjects=("customers", f"visitors {HOSTILE}"),
    retention={
        "product photo retouching": '6 months "after" contract end',
        f"purpose {HOSTILE}": "1y & a day",
        "*": "<i>180d</i>",
    },
    security_measures=(f"encryption {HOSTILE}", 'SSO & "MFA"'),
)


def text_of(page: str) -> str:
    """The words a reader sees: tags (and the stylesheet) removed, entities decoded."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    page = re.sub(r"<title>.*?</title>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def body_of(register: dict[str, Any], **kw: Any) -> str:
    return register_body(
        register["records"],
        register["verify"],
        log_path="/var/lib/veilpix/audit.db",
        generated=GENERATED,
        title="Transfer register",
        **kw,
    )


def test_every_register_field_is_shown_and_escaped(register: dict[str, Any]) -> None:
    page = render(register["records"], register["verify"], register=FULL_REGISTER)
    tags = check_markup(page).tags
    assert "<script" not in page.lower() and "<i>180d</i>" not in page
    assert not tags & {"script", "img", "iframe", "object", "embed", "link", "a", "form"}
    record = section(page, "Record of processing")
    for value in (
        "Shop &lt;script&gt;alert(1)&lt;/script&gt; GmbH",
        "Rue &quot;Quote&quot; &amp; Sons\n&lt;b&gt;2nd&lt;/b&gt; floor",
        "privacy@shop.example &amp; &#x27;support&#x27;",
        "EU Rep &lt;Ltd&gt; &amp; Co",
        "Dr. &quot;Jane&quot; Doe",
        "visitors &lt;script&gt;alert(1)&lt;/script&gt;",
        "<b>product photo retouching</b>: 6 months &quot;after&quot; contract end",
        "<b>purpose &lt;script&gt;alert(1)&lt;/script&gt;</b>: 1y &amp; a day",
        "<i>every other purpose</i>: &lt;i&gt;180d&lt;/i&gt;",
        "encryption &lt;script&gt;alert(1)&lt;/script&gt;",
        "SSO &amp; &quot;MFA&quot;",
    ):
        assert value in record, value
    # the controller also heads the page
    assert "<dt>Controller</dt><dd>Shop &lt;script&gt;alert(1)&lt;/script&gt; GmbH</dd>" in page
    assert "not set in veilpix.toml [register]" not in page
    assert "Every field of [register] is set in veilpix.toml." in record
    words = text_of(record)
    for label in (
        "Controller",
        "Address",
        "Contact",
        "Representative in the EU",
        "Data protection officer",
        "Purposes of the processing",
        "Categories of data subjects",
        "Categories of personal data",
        "Recipients",
        "Transfers to third countries and safeguards",
        "Time limits for erasure",
        "Technical and organisational security measures",
    ):
        assert re.search(rf" {re.escape(label)} Art\. [\d, ]*30\(1\)\([a-g]\)", words), label


def test_the_record_shows_what_the_log_knows(register: dict[str, Any]) -> None:
    page = render(register["records"], register["verify"], register=FULL_REGISTER)
    words = " ".join(text_of(section(page, "Record of processing")).split())
    words = re.sub(r" ([:;,.])", r"\1", words)  # "<b>openai</b>: ..." reads "openai: ..."
    # purposes (and the transfers that recorded none), recipients with their legal entities
    assert "product photo retouching support tickets not recorded for 1 transfer" in words
    assert "openai: OpenAI Ireland Ltd" in words
    assert "acme: legal entity not recorded" in words
    # third countries and their safeguards; the blocked call to CN transferred nothing
    assert "US third country: adequacy decision (EU-US DPF)" in words
    assert "country not recorded: no transfer mechanism recorded for 1 transfer" in words
    assert "CN" not in words and "FR" not in words
    # the purposes of the log without a period: covered by the default here
    assert "no period set" not in words
    # what veilpix applied
    assert "Metadata stripped before sending: 9 images sent" in words
    assert "Faces blurred before sending: 0 faces; 0 faces sent unblurred; 9 images" in words
    assert "Policy checked before sending: 1 call blocked before anything left" in words
    assert "0 records linked to a subject" in words


def test_missing_register_fields_are_flagged(register: dict[str, Any]) -> None:
    for page in (
        render(register["records"], register["verify"]),
        render(register["records"], register["verify"], register=RegisterConfig()),
    ):
        check_markup(page)
        record = section(page, "Record of processing")
        flagged = '<span class="warn">not set in veilpix.toml [register]</span>'
        assert record.count(flagged) == 8
        assert "<strong>Record incomplete.</strong> 8 of 8 fields are not set" in record
        for key in ("controller", "dpo", "data_subjects", "retention", "security_measures"):
            assert f"<code>{key}</code>" in record
        assert "<dt>Controller</dt>" not in page.split("</header>")[0]
    partial = RegisterConfig(controller="Shop GmbH", retention={"support tickets": "2y"})
    page = render(register["records"], register["verify"], register=partial)
    record = section(page, "Record of processing")
    assert "6 of 8 fields are not set" in record
    assert "<code>controller</code>" not in record and "<code>address</code>" in record
    # a purpose of the log with no period (and no default) is flagged too
    assert "no period set for the purpose &quot;product photo retouching&quot;" in record
    assert "support tickets&quot;" not in record
    one = dataclasses.replace(FULL_REGISTER, dpo=None)
    record = section(
        render(register["records"], register["verify"], register=one), "Record of processing"
    )
    assert "1 of 8 fields is not set in veilpix.toml [register]: <code>dpo</code>. Set it" in record


def test_the_logs_own_retention(register: dict[str, Any]) -> None:
    record = section(
        render(register["records"], register["verify"], log_retention="180d"),
        "Record of processing",
    )
    assert "kept for 180d, then removed by <code>veilpix audit prune</code>" in record
    assert "retention class recorded with the calls: standard (9)" in record
    record = section(render(register["records"], register["verify"]), "Record of processing")
    assert "no period known: veilpix.toml [log] retention is not set" in record


def test_the_body_embeds_without_style_attributes(make_log: Callable[..., Log]) -> None:
    """register_body is the page's content for a console under ``style-src 'self'``: no
    style attribute anywhere (the faces bar is SVG), no page around it."""
    log = make_log()
    clean = log.image.sanitized
    assert clean is not None
    faced = dataclasses.replace(
        clean,
        report=dataclasses.replace(
            clean.report, faces_checked=True, faces_found=3, faces_blurred=2
        ),
    )
    log.sent(images=[OutboundImage(factories.jpeg(), faced, "image"), log.image])
    log.sent(door="gateway")
    records, verify = log.read()
    kw: dict[str, Any] = {"log_path": "/l.db", "generated": GENERATED, "register": FULL_REGISTER}
    body = register_body(records, verify, title="T", **kw)
    check_markup(f"<main>{body}</main>")
    assert not re.search(r"\sstyle\s*=", body, re.I)
    for tag in ("<html", "<head>", "<style", "<main", "<body", "<meta", "<!doctype"):
        assert tag not in body.lower()
    assert body.startswith("<header><h1>T</h1>") and body.endswith("</footer>")
    faces = section(body, "Faces")
    assert '<svg class="share"' in faces
    assert 'aria-label="Faces blurred 67%, sent unblurred 33%"' in faces
    assert '<rect class="o-sent" x="0.00" y="0" width="66.67" height="4"/>' in faces
    page = render_report(records, verify, title="T", **kw)
    assert f"<body><main>{body}</main></body>" in page
    assert not re.search(r"\sstyle\s*=", page.replace("<style>", ""), re.I)
    assert "<style>" in page and CSS in page


def test_no_door_or_checkpoint_jargon(make_log: Callable[..., Log]) -> None:
    log = make_log()
    for door in ("sdk", "transport", "gateway", "intercept"):
        log.sent(door=door)
        log.log.begin(log.transfer(door=door, app=f"app-{door}"))  # open: listed with its route
    log.log.checkpoint()
    records, verify = log.read()
    assert verify.ok and verify.checkpoints >= 1
    page = render(records, verify, register=FULL_REGISTER)
    words = text_of(page).lower()
    assert "door" not in words and "checkpoint" not in words
    n = verify.checkpoints
    signed = f"{n} signature{'s' if n != 1 else ''}, the newest covering entry"
    assert signed in page and "every signature is valid" in page
    pending = section(page, "Open records")
    assert "<th>Route</th>" in pending and "Door" not in pending
    routes = {r.who["door"]: row_of(pending, r.id)[5] for r in records if r.outcome == "unknown"}
    assert routes == {
        "sdk": "SDK",
        "transport": "SDK (HTTP transport)",
        "gateway": "gateway",
        "intercept": "intercept proxy",
    }


def test_an_unsigned_tail_is_told_in_plain_words(register: dict[str, Any]) -> None:
    verify: VerifyResult = register["verify"]
    assert verify.intact and not verify.ok
    page = render(register["records"], verify)
    assert "checkpoint" not in text_of(page).lower() and "door" not in text_of(page).lower()
    assert "integrity intact, the newest entries not signed yet" in " ".join(text_of(page).split())


def test_images_are_one_category(register: dict[str, Any], make_log: Callable[..., Log]) -> None:
    """The log keeps "image" and "image (faces not checked)" apart; the register shows one
    category, images, with how many were not checked for faces."""
    stored = register["records"][0].what["categories"]
    assert "image" in stored and "image (faces not checked)" in stored  # unchanged in the log
    page = render(register["records"], register["verify"])
    assert "faces not checked" not in page
    categories = section(page, "Categories of personal data")
    assert row_of(categories, "openai")[1] == "images 6 not checked for faces"
    assert row_of(categories, "mistral")[1] == "images 2 not checked for faces"
    record = section(page, "Record of processing")
    assert re.findall(r'<span class="chip"[^>]*>(.*?)</span>(?= |</dd>)', record) == [
        'images <span class="warn">9 not checked for faces</span>'
    ]
    # every image checked: just "images"
    log = make_log()
    clean = log.image.sanitized
    assert clean is not None
    checked = dataclasses.replace(
        clean, report=dataclasses.replace(clean.report, faces_checked=True, faces_found=0)
    )
    log.sent(images=[OutboundImage(factories.jpeg(), checked, "image")])
    records, verify = log.read()
    assert records[0].what["categories"] == ["image"]
    page = render(records, verify)
    assert row_of(section(page, "Categories of personal data"), "openai")[1] == "images"


def test_report_command_shows_the_register_section(
    register: dict[str, Any], tmp_path: Path
) -> None:
    from veilpix.cli._main import main

    log: Log = register["log"]
    log.log.close()
    config = tmp_path / "veilpix.toml"
    config.write_text(
        '[log]\nretention = "90d"\n\n[register]\ncontroller = "Shop <GmbH> & Co"\n'
        'data_subjects = ["customers"]\n\n[register.retention]\n"*" = "2y"\n',
        encoding="utf-8",
    )
    out = tmp_path / "r.html"
    argv = ["audit", "report", "--log", str(log.path), "--config", str(config), "-o", str(out)]
    assert main(argv) in (0, 3)
    page = out.read_text()
    record = section(page, "Record of processing")
    assert (
        "Shop &lt;GmbH&gt; &amp; Co" in record and '<span class="chip">customers</span>' in record
    )
    assert "<i>every other purpose</i>: 2y" in record and "kept for 90d" in record
    assert "5 of 8 fields are not set" in record
