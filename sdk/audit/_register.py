"""The transfer register: one self-contained HTML page describing what the transfer log holds.

In the spirit of a GDPR Art. 30 record of processing and of the Chapter V transfer
documentation: who received personal data (vendor and legal entity), in which countries, under
which transfer mechanism, for which purposes and on which legal basis, how much (calls, images,
bytes), what was protected (faces blurred, images sent without a face check, privacy controls),
what was stopped (blocked calls by rule) and what is still open (records whose outcome is
unknown). On top sits the integrity of the log itself, from :class:`VerifyResult`.

A *recipient* is a vendor that received at least one call that was not blocked (sent, failed or
outcome unknown: data left, or may have). A blocked call transferred nothing: it makes no
recipient, no destination country, no transfer-mechanism gap and no category of data sent. It
is still counted where a table counts calls (as ``summarize`` does) and listed by rule.

The page has no JavaScript and loads nothing: CSS is inline, charts are inline SVG, and a
Content-Security-Policy forbids anything else, so it can be mailed, archived and opened
offline. Every value from the log is HTML-escaped: app names, reasons and rule names can be
chosen by whoever calls the API. It prints on A4 landscape. The numbers come from
:func:`veilpix.audit._records.summarize`, the same totals ``veilpix audit stats`` prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from veilpix._policy import EEA as POLICY_EEA
from veilpix.audit._html import (
    CSS,
    chips,
    esc,
    figure,
    hbar_chart,
    html_table,
    missing,
    month_chart,
    nbytes,
    num,
    per_line,
    when,
)
from veilpix.audit._records import StatsRow, TransferRecord, summarize
from veilpix.audit._verify import VerifyResult

__all__ = ["EEA", "render_report"]

# A transfer to a country outside the EEA is a Chapter V transfer to a third country. "EL" is
# the EU's own code for Greece (ISO: "GR"); logs may carry either.
EEA = POLICY_EEA | {"EL"}
_PENDING_SHOWN = 500  # the register lists at most this many open records
# The counters of a StatsRow (everything but its vendor, country and month).
_SUMMED = tuple(f.name for f in fields(StatsRow) if f.name not in ("vendor", "country", "month"))


# -- gathering ---------------------------------------------------------------------------------


@dataclass
class _Recipient:
    """What the register says about one recipient, beyond the totals of ``summarize``: facts
    of its transfers, the calls that were not blocked."""

    legal_entities: Counter[str] = field(default_factory=Counter)
    countries: Counter[str] = field(default_factory=Counter)
    mechanisms: Counter[str] = field(default_factory=Counter)
    purposes: Counter[str] = field(default_factory=Counter)
    bases: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    apps: Counter[str] = field(default_factory=Counter)
    applied: Counter[str] = field(default_factory=Counter)
    account_level: Counter[str] = field(default_factory=Counter)
    unavailable: Counter[str] = field(default_factory=Counter)
    no_entity: int = 0
    no_mechanism: int = 0
    no_purpose: int = 0
    no_basis: int = 0
    first: str | None = None
    last: str | None = None


@dataclass
class _Block:
    calls: int = 0
    vendors: Counter[str] = field(default_factory=Counter)
    last: str = ""
    reason: str | None = None


@dataclass
class _Register:
    recipients: dict[str, _Recipient]  # vendors with at least one call not blocked
    countries: dict[str, Counter[str]]  # country transferred to -> mechanisms used to reach it
    blocked_only: set[str]  # vendors whose every call was blocked (no recipients)
    pending: list[TransferRecord]
    blocks: dict[str, _Block]
    first: str | None
    last: str | None


def _vendor(rec: TransferRecord) -> str:
    return str(rec.where.get("vendor") or "?")  # the key summarize() uses


def _country(rec: TransferRecord) -> str:
    return str(rec.where.get("country") or "?")


def _gather(records: Sequence[TransferRecord]) -> _Register:
    recipients: dict[str, _Recipient] = {}
    countries: dict[str, Counter[str]] = {}
    blocks: dict[str, _Block] = {}
    pending: list[TransferRecord] = []
    vendors: set[str] = set()
    first = last = None
    for rec in records:
        where, why, who = rec.where, rec.why, rec.who
        vendor, country = _vendor(rec), _country(rec)
        vendors.add(vendor)
        first = rec.begun if first is None or rec.begun < first else first
        last = rec.begun if last is None or rec.begun > last else last
        outcome = rec.outcome
        if outcome == "blocked":  # stopped before a byte left: no transfer, only the rule
            finish: Mapping[str, Any] = rec.finish or {}
            rule = str(finish.get("rule") or rec.begin.get("rule") or "?")
            b = blocks.setdefault(rule, _Block())
            b.calls += 1
            b.vendors[vendor] += 1
            if rec.begun >= b.last:
                b.last, b.reason = rec.begun, finish.get("reason")
            continue
        # sent, failed or unknown: data left, or may have
        if outcome == "unknown":
            pending.append(rec)
        r = recipients.setdefault(vendor, _Recipient())
        r.first = rec.begun if r.first is None or rec.begun < r.first else r.first
        r.last = rec.begun if r.last is None or rec.begun > r.last else r.last
        r.countries[country] += 1
        mechanism = where.get("transfer_mechanism")
        countries.setdefault(country, Counter())
        for counter, value, gap in (
            (r.legal_entities, where.get("legal_entity"), "no_entity"),
            (r.purposes, why.get("purpose"), "no_purpose"),
            (r.bases, why.get("legal_basis"), "no_basis"),
        ):
            if value:
                counter[str(value)] += 1
            else:
                setattr(r, gap, getattr(r, gap) + 1)
        if mechanism:
            r.mechanisms[str(mechanism)] += 1
            countries[country][str(mechanism)] += 1
        elif country not in EEA:  # a transfer needing a safeguard
            r.no_mechanism += 1
        r.apps[str(who.get("app") or "(no app name)")] += 1
        r.categories.update(str(c) for c in rec.what.get("categories") or ())
        controls: Mapping[str, Any] = rec.begin.get("controls", {})
        r.applied.update(str(c) for c in controls.get("applied") or ())
        r.account_level.update(str(c) for c in controls.get("account_level") or ())
        r.unavailable.update(str(c) for c in controls.get("unavailable") or ())
    return _Register(
        recipients, countries, vendors - recipients.keys(), pending, blocks, first, last
    )


def _totals(rows: Iterable[StatsRow], key: Callable[[StatsRow], str]) -> dict[str, StatsRow]:
    """``summarize`` rows added up per ``key`` (vendor, country, month, or one grand total)."""
    out: dict[str, StatsRow] = {}
    for row in rows:
        k = key(row)
        t = out.setdefault(k, StatsRow(k, k, k))
        for name in _SUMMED:
            setattr(t, name, getattr(t, name) + getattr(row, name))
    return out


# -- sections ------------------------------------------------------------------------------------


def _state(state: object) -> str:
    """The state the key file had recorded for the old log, as HTML."""
    if not isinstance(state, dict) or not state.get("checkpoint"):
        return "no checkpoint recorded"
    return (
        f"checkpoint {esc(str(state.get('checkpoint')))} at entry {esc(str(state.get('seq')))}, "
        f"signed {when(str(state.get('ts')))} UTC"
    )


def _integrity(verify: VerifyResult) -> str:
    facts = [
        f"{num(verify.entries)} entr{'y' if verify.entries == 1 else 'ies'}",
        f"{num(verify.checkpoints)} signed checkpoint{'' if verify.checkpoints == 1 else 's'}",
        f"signing key {esc(verify.key_id)}",
    ]
    if verify.signed_through is not None:
        facts.append(f"signed through entry {verify.signed_through}")
    if verify.pruned_through is not None:
        facts.append(
            f"entries up to {verify.pruned_through} pruned under the retention schedule"
            " (bridged by a signed prune entry)"
        )
    if verify.erasures:
        n = verify.erasures
        facts.append(f"{num(n)} subject erasure{'' if n == 1 else 's'} (signed tombstones)")
    if verify.authenticated is None:
        facts.append("entry MACs not checked (no key file at hand)")
    else:
        facts.append(f"{num(verify.authenticated)} of {num(verify.entries)} entry MACs hold")
    detail = "; ".join(facts)
    return _status(verify, detail) + "".join(_restart(r) for r in verify.restarts)


def _restart(r: Mapping[str, object]) -> str:
    """A signed restart statement, as its own notice: the register starts at it."""
    moved = r.get("moved_to")
    kept = f" The old log file was kept as <code>{esc(str(moved))}</code>." if moved else ""
    return (
        '<section class="status warn-box"><strong>This log was started over</strong> on '
        f"{when(str(r.get('at')))} UTC: it continues from log <code>"
        f"{esc(str(r.get('previous_log')))}</code>, which was {esc(str(r.get('found')))} (last "
        f"known state: {_state(r.get('previous_state'))}). Reason given: "
        f"{esc(str(r.get('reason')))}. "
        f"Transfers recorded in the old log are not in this register.{kept}<br><small>"
        f"{esc(str(r.get('detail') or ''))}</small></section>"
    )


def _status(verify: VerifyResult, detail: str) -> str:
    first = verify.first_problem
    if verify.ok:
        return (
            '<section class="status ok"><strong>Integrity verified.</strong> '
            "Every entry chains onto the one before and every checkpoint signature is valid: "
            f"nothing was altered, inserted or removed. <br><small>{detail}</small></section>"
        )
    if verify.intact and first is not None:
        return (
            '<section class="status warn-box"><strong>Intact, not fully signed.</strong> '
            f"No tampering was found, but {num(verify.unsigned_tail)} entries at the end "
            "carry no signature yet (a writer is still running, or one stopped without "
            f"closing). {esc(first.message)}<br><small>{detail}</small></section>"
        )
    problems = [p for p in verify.problems if p.kind != "unsigned-tail"]
    listed = "".join(f"<li><code>{esc(p.kind)}</code> {esc(p.message)}</li>" for p in problems[:10])
    more = f"<li>… and {num(len(problems) - 10)} more</li>" if len(problems) > 10 else ""
    head = first.message if first is not None else "the log did not verify"
    return (
        '<section class="status bad"><strong>Integrity check FAILED.</strong> '
        f"{esc(head)} The figures below come from a log that was changed after it was "
        f"written; treat them as unreliable.<ul>{listed}{more}</ul>"
        f"<small>{detail}</small></section>"
    )


def _tiles(total: StatsRow, reg: _Register, per_country: Mapping[str, StatsRow]) -> str:
    """Recipients and countries count transfers only (calls not blocked), like the tables."""
    known = [c for c in reg.countries if c != "?"]
    note = f"{num(sum(1 for c in known if c not in EEA))} outside the EEA"
    if "?" in reg.countries:
        note += "; some calls name none"
    blocked_countries = sum(1 for c in per_country if c != "?" and c not in reg.countries)
    if blocked_countries:
        note += f"; {num(blocked_countries)} more only blocked"
    people = ""
    if reg.blocked_only:
        people = f"<small>{num(len(reg.blocked_only))} more vendor"
        people += f"{'s' if len(reg.blocked_only) != 1 else ''} only blocked</small>"
    tiles = [
        ("Calls", num(total.calls)),
        ("Sent", num(total.sent)),
        ("Blocked", num(total.blocked)),
        ("Failed", num(total.failed)),
        ("Outcome unknown", num(total.unknown)),
        ("Images sent", num(total.images)),
        ("Data sent", nbytes(total.bytes_sent)),
        ("Recipients", num(len(reg.recipients)) + people),
        ("Countries", f"{num(len(known))}<small>{note}</small>"),
    ]
    cells = (f'<div class="tile"><span>{esc(k)}</span><b>{v}</b></div>' for k, v in tiles)
    return f'<div class="tiles">{"".join(cells)}</div>'


_NOTHING_SENT = (
    '<p class="okay">None: every call was blocked, so no personal data was transferred.</p>'
)


def _recipients(reg: _Register, per_vendor: Mapping[str, StatsRow]) -> str:
    if not reg.recipients:
        return _NOTHING_SENT
    rows = []
    for vendor in sorted(reg.recipients, key=lambda v: (-per_vendor[v].calls, v)):
        r, t = reg.recipients[vendor], per_vendor[vendor]
        mechanisms = per_line(r.mechanisms)
        if r.no_mechanism:
            n = r.no_mechanism
            gap = (
                f"none recorded for {num(n)} call{'s' if n != 1 else ''} "
                "not known to stay in the EEA"
            )
            mechanisms += missing(gap, warn=True)
        elif not mechanisms:
            mechanisms = missing("not needed (EEA)")
        rows.append(
            [
                f"<b>{esc(vendor)}</b>",
                per_line(r.legal_entities) + (missing(warn=True) if r.no_entity else ""),
                chips({c: n for c, n in r.countries.items() if c != "?"})
                + (" " + missing(warn=True) if "?" in r.countries else ""),
                mechanisms,
                per_line(r.purposes) + (missing(warn=True) if r.no_purpose else ""),
                per_line(r.bases) + (missing(warn=True) if r.no_basis else ""),
                num(t.calls),
                num(t.images),
                nbytes(t.bytes_sent),
                when(r.first),
                when(r.last),
            ]
        )
    headers = [
        "Recipient",
        "Legal entity",
        "Countries",
        "Transfer mechanisms",
        "Purposes",
        "Legal bases",
        "Calls",
        "Images",
        "Bytes sent",
        "First transfer",
        "Last transfer",
    ]
    return html_table(headers, rows, numeric=(6, 7, 8))


def _countries(reg: _Register, per_country: Mapping[str, StatsRow]) -> str:
    """Every destination country of a call, with the recipients (calls not blocked) it had;
    a country whose every call was blocked received nothing and needs no mechanism."""
    vendors: dict[str, Counter[str]] = {}
    for vendor, r in reg.recipients.items():
        for country, n in r.countries.items():
            vendors.setdefault(country, Counter())[vendor] += n
    out = []
    for country in sorted(per_country, key=lambda c: (-per_country[c].calls, c)):
        t = per_country[country]
        if country == "?":
            name, area = missing(warn=True), missing("unknown", warn=True)
        else:
            name = f"<b>{esc(country)}</b>"
            area = "EEA" if country in EEA else '<span class="third">third country</span>'
        if country not in reg.countries:
            recipients = missing("none")
            mechanisms = missing("not needed (every call blocked)")
        else:
            recipients = chips(vendors.get(country, Counter()))
            mechanisms = per_line(reg.countries[country]) or (
                missing("—") if country in EEA else missing("none recorded", warn=True)
            )
        out.append(
            [
                name,
                area,
                recipients,
                mechanisms,
                num(t.calls),
                num(t.sent),
                num(t.blocked),
                num(t.images),
                nbytes(t.bytes_sent),
            ]
        )
    headers = [
        "Country",
        "Area",
        "Recipients",
        "Transfer mechanisms",
        "Calls",
        "Sent",
        "Blocked",
        "Images",
        "Bytes sent",
    ]
    return html_table(headers, out, numeric=(4, 5, 6, 7, 8))


def _faces(total: StatsRow, per_vendor: Mapping[str, StatsRow]) -> str:
    found = total.faces_blurred + total.faces_unblurred
    share = ""
    if found:
        blurred = 100 * total.faces_blurred / found
        share = (
            '<div class="share" role="img" aria-label="faces blurred and sent unblurred">'
            f'<i class="o-sent" style="width:{blurred:.2f}%"></i>'
            f'<i class="o-unknown" style="width:{100 - blurred:.2f}%"></i></div>'
            f'<div class="legend"><span><i class="o-sent"></i>Blurred {blurred:.0f}%</span>'
            f'<span><i class="o-unknown"></i>Sent unblurred {100 - blurred:.0f}%</span></div>'
        )
    rows = [
        [
            f"<b>{esc(v)}</b>",
            num(t.images),
            num(t.faces_blurred),
            num(t.faces_unblurred)
            if not t.faces_unblurred
            else f'<span class="warn">{num(t.faces_unblurred)}</span>',
            num(t.images_unchecked),
        ]
        for v, t in sorted(per_vendor.items(), key=lambda kv: (-kv[1].images, kv[0]))
        if t.images
    ]
    summary = (
        f"<p>Faces blurred before sending: <b>{num(total.faces_blurred)}</b>. Faces sent "
        f"unblurred: <b>{num(total.faces_unblurred)}</b>. Images sent without a face check: "
        f"<b>{num(total.images_unchecked)}</b> (faces in them, if any, are not counted).</p>"
    )
    if not rows:
        return summary + missing("No images were sent.")
    table = html_table(
        [
            "Recipient",
            "Images sent",
            "Faces blurred",
            "Faces sent unblurred",
            "Images not checked for faces",
        ],
        rows,
        numeric=(1, 2, 3, 4),
        narrow=True,
    )
    return summary + share + table


def _controls(reg: _Register) -> str:
    if not reg.recipients:
        return _NOTHING_SENT
    rows = [
        [
            f"<b>{esc(v)}</b>",
            chips(r.applied) or missing("none"),
            chips(r.account_level) or missing("none"),
            chips(r.unavailable) or missing("none"),
        ]
        for v, r in sorted(reg.recipients.items())
    ]
    return html_table(
        [
            "Recipient",
            "Applied on the call",
            "Available at account level only",
            "Not offered by the vendor",
        ],
        rows,
    )


def _data(reg: _Register) -> str:
    if not reg.recipients:
        return _NOTHING_SENT
    rows = [
        [f"<b>{esc(v)}</b>", chips(r.categories) or missing("none"), chips(r.apps)]
        for v, r in sorted(reg.recipients.items())
    ]
    return html_table(["Recipient", "Categories of personal data", "Applications"], rows)


def _pending(reg: _Register) -> str:
    if not reg.pending:
        return '<p class="okay">None: every recorded call has a known outcome.</p>'
    shown = reg.pending[:_PENDING_SHOWN]
    rows = [
        [
            f'<span class="id">{esc(rec.id)}</span>',
            when(rec.begun),
            esc(_vendor(rec)),
            esc(rec.where.get("host") or "") or missing(),
            esc(rec.who.get("app") or "") or missing(),
            esc(rec.who.get("door") or ""),
        ]
        for rec in shown
    ]
    more = ""
    if len(reg.pending) > len(shown):
        more = (
            f'<p class="note">… and {num(len(reg.pending) - len(shown))} more; list them '
            "with <code>veilpix audit list --outcome unknown</code>.</p>"
        )
    return (
        html_table(["Record", "Begun (UTC)", "Recipient", "Host", "Application", "Door"], rows)
        + more
    )


def _blocked(reg: _Register) -> str:
    if not reg.blocks:
        return '<p class="okay">No call was blocked.</p>'
    rows = [
        [
            f"<code>{esc(rule)}</code>",
            num(b.calls),
            chips(b.vendors),
            when(b.last),
            esc(b.reason) if b.reason else missing(),
        ]
        for rule, b in sorted(reg.blocks.items(), key=lambda kv: (-kv[1].calls, kv[0]))
    ]
    return html_table(
        ["Rule", "Calls blocked", "Recipients", "Last blocked", "Last reason"],
        rows,
        numeric=(1,),
        narrow=True,
    )


def render_report(
    records: Sequence[TransferRecord],
    verify: VerifyResult,
    *,
    log_path: str,
    generated: str,
    title: str = "Transfer register",
) -> str:
    """The register of ``records`` (oldest first, as ``AuditLog.records`` yields them) as one
    HTML page. ``verify`` is the log's integrity check, ``generated`` the time to print."""
    stats = summarize(records)
    reg = _gather(records)
    grand = _totals(stats, lambda _: "*").get("*") or StatsRow("*", "*", "*")
    period = (
        f"{when(reg.first)} to {when(reg.last)} (UTC)" if reg.first else missing("no transfers")
    )
    shown = num(len(records))
    if verify.records != len(records):
        shown += f" of {num(verify.records)} in the log (filtered)"
    head = (
        f"<header><h1>{esc(title)}</h1>"
        '<p class="lead">Record of transfers of personal data to AI image services, kept by '
        "veilpix (in the spirit of GDPR Art. 30 and the Chapter V transfer records).</p>"
        '<dl class="meta">'
        f"<dt>Transfer log</dt><dd><code>{esc(log_path)}</code></dd>"
        f"<dt>Log id</dt><dd><code>{esc(verify.log_id)}</code></dd>"
        f"<dt>Period covered</dt><dd>{period}</dd>"
        f"<dt>Transfers</dt><dd>{shown}</dd>"
        f"<dt>Generated</dt><dd>{esc(generated)}</dd>"
        "</dl></header>"
    )
    body = [head, _integrity(verify)]
    if not records:
        body.append('<div class="empty">No transfers recorded.</div>')
    else:
        per_vendor = _totals(stats, lambda r: r.vendor)
        per_country = _totals(stats, lambda r: r.country)
        per_month = _totals(stats, lambda r: r.month)
        images = sorted(
            ((v, per_vendor[v].images) for v in reg.recipients), key=lambda x: (-x[1], x[0])
        )
        body += [
            _tiles(grand, reg, per_country),
            "<h2>Recipients</h2>",
            '<p class="note">Who received data, where, under which safeguard, why and on which '
            "basis. A recipient is a vendor that received at least one call that was not "
            "blocked; such calls are the transfers (sent, failed or outcome unknown: data left, "
            "or may have). Countries, mechanisms, purposes, legal bases, dates, images and bytes "
            "describe transfers only; <i>Calls</i> counts every call, blocked ones included. A "
            "vendor whose every call was blocked received nothing and appears only under "
            "Blocked calls.</p>",
            _recipients(reg, per_vendor),
            "<h2>Countries</h2>",
            '<p class="note">Destination countries as recorded (ISO 3166-1). A country outside '
            "the EEA needs a transfer mechanism (adequacy decision, SCCs, BCRs, …) for the "
            "calls that were not blocked; a blocked call transferred nothing and needs none. "
            "Recipients are the vendors that received a transfer there.</p>",
            _countries(reg, per_country),
            "<h2>Activity</h2>",
            figure("Calls per month (UTC), by outcome", month_chart(per_month)),
            figure(
                "Images sent per recipient",
                hbar_chart(images, label="Images sent per recipient")
                if any(n for _, n in images)
                else missing("No images were sent."),
            ),
            "<h2>Faces</h2>",
            _faces(grand, per_vendor),
            "<h2>Privacy controls</h2>",
            '<p class="note">Vendor-side controls seen on the transfers (e.g. zero data '
            "retention, no training on inputs), as the door recorded them.</p>",
            _controls(reg),
            "<h2>Categories of personal data</h2>",
            '<p class="note">What each recipient was sent, and by which applications. Blocked '
            "calls sent nothing and are not counted.</p>",
            _data(reg),
            "<h2>Open records</h2>",
            '<p class="note">Calls begun but never finished: the process stopped or is still '
            "waiting for the vendor. The data may have left; check each one.</p>",
            _pending(reg),
            "<h2>Blocked calls</h2>",
            '<p class="note">Calls the policy stopped before a byte left, by rule.</p>',
            _blocked(reg),
        ]
    body.append(
        "<footer>Produced by veilpix from its tamper-evident transfer log. The log keeps no "
        "image content, prompts or credentials: images are described by sizes, formats, what "
        "was found and removed, and keyed fingerprints. Times are UTC.</footer>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
