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
:func:`veilpix.audit._log.summarize`, the same totals ``veilpix audit stats`` prints.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

from veilpix._policy import EEA as POLICY_EEA
from veilpix.audit._log import StatsRow, TransferRecord, summarize
from veilpix.audit._verify import VerifyResult

__all__ = ["EEA", "render_report"]

# A transfer to a country outside the EEA is a Chapter V transfer to a third country. "EL" is
# the EU's own code for Greece (ISO: "GR"); logs may carry either.
EEA = POLICY_EEA | {"EL"}
OUTCOMES = ("sent", "blocked", "failed", "unknown")
_OUTCOME_LABELS = {
    "sent": "Sent",
    "blocked": "Blocked",
    "failed": "Failed",
    "unknown": "Outcome unknown",
}
_PENDING_SHOWN = 500  # the register lists at most this many open records
# The counters of a StatsRow (everything but its vendor, country and month).
_SUMMED = tuple(f.name for f in fields(StatsRow) if f.name not in ("vendor", "country", "month"))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(n: int) -> str:
    return f"{n:,}"


def _bytes(n: int) -> str:
    """``n`` bytes in SI units, the exact figure in the tooltip."""
    size, unit = float(n), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            break
        size /= 1000
    text = f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
    return f'<span title="{_num(n)} bytes">{_e(text)}</span>'


def _when(stamp: str | None) -> str:
    """A stored UTC time shown to the minute."""
    if not stamp:
        return '<span class="missing">—</span>'
    return f'<span class="when" title="{_e(stamp)}">{_e(stamp[:10])} {_e(stamp[11:16])}</span>'


def _missing(text: str = "not recorded", *, warn: bool = False) -> str:
    return f'<span class="{"warn" if warn else "missing"}">{_e(text)}</span>'


def _chips(counts: Mapping[str, int]) -> str:
    """Short values as small labels, most frequent first, each with its count as a tooltip."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return " ".join(
        f'<span class="chip" title="{_num(n)} calls">{_e(name)}</span>' for name, n in items
    )


def _lines(counts: Mapping[str, int]) -> str:
    """Longer values (entities, purposes, legal bases) one per line, most frequent first."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return "".join(f'<div class="v" title="{_num(n)} calls">{_e(name)}</div>' for name, n in items)


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Iterable[int] = (),
    narrow: bool = False,
) -> str:
    """An HTML table; cells are already-escaped HTML, ``numeric`` columns are right-aligned."""
    right = set(numeric)

    def cls(i: int) -> str:
        return ' class="n"' if i in right else ""

    head = "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    table = '<table class="narrow">' if narrow else "<table>"
    return f"{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
            rule = str((rec.finish or {}).get("rule") or rec.begin.get("rule") or "?")
            b = blocks.setdefault(rule, _Block())
            b.calls += 1
            b.vendors[vendor] += 1
            if rec.begun >= b.last:
                b.last, b.reason = rec.begun, (rec.finish or {}).get("reason")
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
        for counter, value, missing in (
            (r.legal_entities, where.get("legal_entity"), "no_entity"),
            (r.purposes, why.get("purpose"), "no_purpose"),
            (r.bases, why.get("legal_basis"), "no_basis"),
        ):
            if value:
                counter[str(value)] += 1
            else:
                setattr(r, missing, getattr(r, missing) + 1)
        if mechanism:
            r.mechanisms[str(mechanism)] += 1
            countries[country][str(mechanism)] += 1
        elif country not in EEA:  # a transfer needing a safeguard
            r.no_mechanism += 1
        r.apps[str(who.get("app") or "(no app name)")] += 1
        r.categories.update(str(c) for c in rec.what.get("categories") or ())
        controls = rec.begin.get("controls") or {}
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
        f"checkpoint {_e(str(state.get('checkpoint')))} at entry {_e(str(state.get('seq')))}, "
        f"signed {_when(str(state.get('ts')))} UTC"
    )


def _integrity(verify: VerifyResult) -> str:
    facts = [
        f"{_num(verify.entries)} entr{'y' if verify.entries == 1 else 'ies'}",
        f"{_num(verify.checkpoints)} signed checkpoint{'' if verify.checkpoints == 1 else 's'}",
        f"signing key {_e(verify.key_id)}",
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
        facts.append(f"{_num(n)} subject erasure{'' if n == 1 else 's'} (signed tombstones)")
    if verify.authenticated is None:
        facts.append("entry MACs not checked (no key file at hand)")
    else:
        facts.append(f"{_num(verify.authenticated)} of {_num(verify.entries)} entry MACs hold")
    detail = "; ".join(facts)
    return _status(verify, detail) + "".join(_restart(r) for r in verify.restarts)


def _restart(r: Mapping[str, object]) -> str:
    """A signed restart statement, as its own notice: the register starts at it."""
    moved = r.get("moved_to")
    kept = f" The old log file was kept as <code>{_e(str(moved))}</code>." if moved else ""
    return (
        '<section class="status warn-box"><strong>This log was started over</strong> on '
        f"{_when(str(r.get('at')))} UTC: it continues from log <code>"
        f"{_e(str(r.get('previous_log')))}</code>, which was {_e(str(r.get('found')))} (last "
        f"known state: {_state(r.get('previous_state'))}). Reason given: "
        f"{_e(str(r.get('reason')))}. "
        f"Transfers recorded in the old log are not in this register.{kept}<br><small>"
        f"{_e(str(r.get('detail') or ''))}</small></section>"
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
            f"No tampering was found, but {_num(verify.unsigned_tail)} entries at the end "
            "carry no signature yet (a writer is still running, or one stopped without "
            f"closing). {_e(first.message)}<br><small>{detail}</small></section>"
        )
    problems = [p for p in verify.problems if p.kind != "unsigned-tail"]
    listed = "".join(f"<li><code>{_e(p.kind)}</code> {_e(p.message)}</li>" for p in problems[:10])
    more = f"<li>… and {_num(len(problems) - 10)} more</li>" if len(problems) > 10 else ""
    head = first.message if first is not None else "the log did not verify"
    return (
        '<section class="status bad"><strong>Integrity check FAILED.</strong> '
        f"{_e(head)} The figures below come from a log that was changed after it was "
        f"written; treat them as unreliable.<ul>{listed}{more}</ul>"
        f"<small>{detail}</small></section>"
    )


def _tiles(total: StatsRow, reg: _Register, per_country: Mapping[str, StatsRow]) -> str:
    """Recipients and countries count transfers only (calls not blocked), like the tables."""
    known = [c for c in reg.countries if c != "?"]
    note = f"{_num(sum(1 for c in known if c not in EEA))} outside the EEA"
    if "?" in reg.countries:
        note += "; some calls name none"
    blocked_countries = sum(1 for c in per_country if c != "?" and c not in reg.countries)
    if blocked_countries:
        note += f"; {_num(blocked_countries)} more only blocked"
    people = ""
    if reg.blocked_only:
        people = f"<small>{_num(len(reg.blocked_only))} more vendor"
        people += f"{'s' if len(reg.blocked_only) != 1 else ''} only blocked</small>"
    tiles = [
        ("Calls", _num(total.calls)),
        ("Sent", _num(total.sent)),
        ("Blocked", _num(total.blocked)),
        ("Failed", _num(total.failed)),
        ("Outcome unknown", _num(total.unknown)),
        ("Images sent", _num(total.images)),
        ("Data sent", _bytes(total.bytes_sent)),
        ("Recipients", _num(len(reg.recipients)) + people),
        ("Countries", f"{_num(len(known))}<small>{note}</small>"),
    ]
    cells = (f'<div class="tile"><span>{_e(k)}</span><b>{v}</b></div>' for k, v in tiles)
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
        mechanisms = _lines(r.mechanisms)
        if r.no_mechanism:
            n = r.no_mechanism
            gap = (
                f"none recorded for {_num(n)} call{'s' if n != 1 else ''} "
                "not known to stay in the EEA"
            )
            mechanisms += _missing(gap, warn=True)
        elif not mechanisms:
            mechanisms = _missing("not needed (EEA)")
        rows.append(
            [
                f"<b>{_e(vendor)}</b>",
                _lines(r.legal_entities) + (_missing(warn=True) if r.no_entity else ""),
                _chips({c: n for c, n in r.countries.items() if c != "?"})
                + (" " + _missing(warn=True) if "?" in r.countries else ""),
                mechanisms,
                _lines(r.purposes) + (_missing(warn=True) if r.no_purpose else ""),
                _lines(r.bases) + (_missing(warn=True) if r.no_basis else ""),
                _num(t.calls),
                _num(t.images),
                _bytes(t.bytes_sent),
                _when(r.first),
                _when(r.last),
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
    return _table(headers, rows, numeric=(6, 7, 8))


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
            name, area = _missing(warn=True), _missing("unknown", warn=True)
        else:
            name = f"<b>{_e(country)}</b>"
            area = "EEA" if country in EEA else '<span class="third">third country</span>'
        if country not in reg.countries:
            recipients = _missing("none")
            mechanisms = _missing("not needed (every call blocked)")
        else:
            recipients = _chips(vendors.get(country, Counter()))
            mechanisms = _lines(reg.countries[country]) or (
                _missing("—") if country in EEA else _missing("none recorded", warn=True)
            )
        out.append(
            [
                name,
                area,
                recipients,
                mechanisms,
                _num(t.calls),
                _num(t.sent),
                _num(t.blocked),
                _num(t.images),
                _bytes(t.bytes_sent),
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
    return _table(headers, out, numeric=(4, 5, 6, 7, 8))


def _step(top: int) -> int:
    """A round axis step (1, 2 or 5 times a power of ten) giving about four gridlines."""
    raw = max(top / 4, 1)
    power = int(10 ** math.floor(math.log10(raw)))  # raw >= 1, so a whole number
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _month_chart(per_month: Mapping[str, StatsRow]) -> str:
    """Calls per month, stacked by outcome (inline SVG)."""
    months = sorted(per_month)
    width, height, left, bottom, top = 760, 250, 48, 34, 14
    plot_w, plot_h = width - left - 12, height - top - bottom
    peak = max(per_month[m].calls for m in months)
    step = _step(peak)
    ceiling = step * math.ceil(peak / step)

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / ceiling

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Calls per month by outcome">'
    ]
    parts.extend(
        f'<line class="grid" x1="{left}" x2="{width - 12}" y1="{y(t):.1f}" y2="{y(t):.1f}"/>'
        f'<text class="axis" x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{_num(t)}</text>'
        for t in range(0, ceiling + 1, step)
    )
    slot = plot_w / len(months)
    bar = min(slot * 0.7, 56)
    every = math.ceil(len(months) / 12)
    for i, month in enumerate(months):
        row = per_month[month]
        x = left + i * slot + (slot - bar) / 2
        base = 0
        for outcome in OUTCOMES:
            n = getattr(row, outcome)
            if n:
                parts.append(
                    f'<rect class="o-{outcome}" x="{x:.1f}" y="{y(base + n):.1f}" '
                    f'width="{bar:.1f}" height="{y(base) - y(base + n):.1f}">'
                    f"<title>{_e(month)}: {_num(n)} {_e(_OUTCOME_LABELS[outcome].lower())}"
                    "</title></rect>"
                )
                base += n
        if i % every == 0:
            parts.append(
                f'<text class="axis" x="{x + bar / 2:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle">{_e(month)}</text>'
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span><i class="o-{o}"></i>{_e(_OUTCOME_LABELS[o])}</span>' for o in OUTCOMES
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def _figure(caption: str, content: str) -> str:
    return f"<figure><figcaption>{_e(caption)}</figcaption>{content}</figure>"


def _hbar_chart(values: Sequence[tuple[str, int]], *, label: str) -> str:
    """Horizontal bars, one per name (inline SVG)."""
    width, row_h, name_w = 760, 24, 170
    height = row_h * len(values) + 8
    peak = max((v for _, v in values), default=0) or 1
    bar_w = width - name_w - 90
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">'
    ]
    for i, (name, value) in enumerate(values):
        y = 4 + i * row_h
        w = bar_w * value / peak
        shown = name if len(name) <= 26 else name[:25] + "…"
        parts.append(
            f'<text class="label" x="{name_w - 8}" y="{y + 16}" text-anchor="end">{_e(shown)}'
            f"<title>{_e(name)}</title></text>"
            f'<rect class="o-sent" x="{name_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}"/>'
            f'<text class="axis" x="{name_w + w + 6:.1f}" y="{y + 16}">{_num(value)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


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
            f"<b>{_e(v)}</b>",
            _num(t.images),
            _num(t.faces_blurred),
            _num(t.faces_unblurred)
            if not t.faces_unblurred
            else f'<span class="warn">{_num(t.faces_unblurred)}</span>',
            _num(t.images_unchecked),
        ]
        for v, t in sorted(per_vendor.items(), key=lambda kv: (-kv[1].images, kv[0]))
        if t.images
    ]
    summary = (
        f"<p>Faces blurred before sending: <b>{_num(total.faces_blurred)}</b>. Faces sent "
        f"unblurred: <b>{_num(total.faces_unblurred)}</b>. Images sent without a face check: "
        f"<b>{_num(total.images_unchecked)}</b> (faces in them, if any, are not counted).</p>"
    )
    if not rows:
        return summary + _missing("No images were sent.")
    table = _table(
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
            f"<b>{_e(v)}</b>",
            _chips(r.applied) or _missing("none"),
            _chips(r.account_level) or _missing("none"),
            _chips(r.unavailable) or _missing("none"),
        ]
        for v, r in sorted(reg.recipients.items())
    ]
    return _table(
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
        [f"<b>{_e(v)}</b>", _chips(r.categories) or _missing("none"), _chips(r.apps)]
        for v, r in sorted(reg.recipients.items())
    ]
    return _table(["Recipient", "Categories of personal data", "Applications"], rows)


def _pending(reg: _Register) -> str:
    if not reg.pending:
        return '<p class="okay">None: every recorded call has a known outcome.</p>'
    shown = reg.pending[:_PENDING_SHOWN]
    rows = [
        [
            f'<span class="id">{_e(rec.id)}</span>',
            _when(rec.begun),
            _e(_vendor(rec)),
            _e(rec.where.get("host") or "") or _missing(),
            _e(rec.who.get("app") or "") or _missing(),
            _e(rec.who.get("door") or ""),
        ]
        for rec in shown
    ]
    more = ""
    if len(reg.pending) > len(shown):
        more = (
            f'<p class="note">… and {_num(len(reg.pending) - len(shown))} more; list them '
            "with <code>veilpix audit list --outcome unknown</code>.</p>"
        )
    return (
        _table(["Record", "Begun (UTC)", "Recipient", "Host", "Application", "Door"], rows) + more
    )


def _blocked(reg: _Register) -> str:
    if not reg.blocks:
        return '<p class="okay">No call was blocked.</p>'
    rows = [
        [
            f"<code>{_e(rule)}</code>",
            _num(b.calls),
            _chips(b.vendors),
            _when(b.last),
            _e(b.reason) if b.reason else _missing(),
        ]
        for rule, b in sorted(reg.blocks.items(), key=lambda kv: (-kv[1].calls, kv[0]))
    ]
    return _table(
        ["Rule", "Calls blocked", "Recipients", "Last blocked", "Last reason"],
        rows,
        numeric=(1,),
        narrow=True,
    )


_CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#d9e2ec;--head:#f0f4f8;--ok:#1e6b43;--ok-bg:#e7f5ec;
--bad:#a8201a;--bad-bg:#fdecea;--warn:#8a5300;--warn-bg:#fff3d6;--sent:#2f6db5;
--blocked:#e0a030;--failed:#98a2b3;--unknown:#c0392b}
*{box-sizing:border-box}
body{margin:0;color:var(--ink);background:#fff;font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:32px 28px 48px}
h1{font-size:26px;margin:0 0 6px}
h2{font-size:17px;margin:34px 0 4px;padding-bottom:4px;border-bottom:2px solid var(--line)}
p.note,p.lead,footer{color:var(--muted)}
p.note{margin:0 0 10px;font-size:13px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:12px 0;font-size:13px}
dl.meta dt{color:var(--muted)}dl.meta dd{margin:0;word-break:break-all}
table{width:100%;border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{text-align:left;padding:5px 7px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--head);font-weight:600;font-size:12px}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.missing{color:var(--muted);font-style:italic}
.warn{color:var(--warn);background:var(--warn-bg);padding:0 4px;border-radius:3px}
.third{color:var(--warn)}
.okay{color:var(--ok)}
.chip{display:inline-block;border:1px solid var(--line);border-radius:9px;padding:0 7px;
margin:1px 2px 1px 0;font-size:12px;background:#fff}
code,.id{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11.5px}
.status{border-left:6px solid;border-radius:4px;padding:12px 16px;margin:18px 0}
.status small{color:var(--muted)}
.status.ok{border-color:var(--ok);background:var(--ok-bg)}
.status.ok strong{color:var(--ok)}
.status.bad{border-color:var(--bad);background:var(--bad-bg)}
.status.bad strong{color:var(--bad)}
.status.warn-box{border-color:#d99a00;background:var(--warn-bg)}
.status.warn-box strong{color:var(--warn)}
.status ul{margin:6px 0}
.tiles{display:flex;flex-wrap:wrap;gap:8px;margin:14px 0}
.tile{flex:1 1 96px;border:1px solid var(--line);border-radius:6px;padding:8px 10px}
.tile>span{color:var(--muted);font-size:12px}
.tile b{display:block;font-size:20px;white-space:nowrap}
.tile small{display:block;font-size:11px;font-weight:400;color:var(--muted);white-space:normal}
.v+.v{margin-top:5px}
.when{white-space:nowrap}
table.narrow{width:auto;min-width:55%}
figure{margin:10px 0 0}
figcaption{font-size:13px;margin:0 0 4px;color:var(--muted);font-weight:600}
svg.chart{width:100%;height:auto;max-width:760px;display:block}
svg .grid{stroke:var(--line);stroke-width:1}
svg .axis{fill:var(--muted);font-size:11px}svg .label{fill:var(--ink);font-size:12px}
.o-sent{fill:var(--sent);background:var(--sent)}.o-blocked{fill:var(--blocked);background:var(--blocked)}
.o-failed{fill:var(--failed);background:var(--failed)}.o-unknown{fill:var(--unknown);background:var(--unknown)}
.legend{display:flex;gap:16px;font-size:12px;color:var(--muted);margin:4px 0 8px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
.share{display:flex;height:12px;max-width:520px;border-radius:3px;overflow:hidden;margin:6px 0 2px}
.share i{display:block;height:100%}
.empty{padding:28px;text-align:center;border:1px dashed var(--line);border-radius:6px;
color:var(--muted);font-size:16px;margin:20px 0}
footer{margin-top:36px;font-size:12px;border-top:1px solid var(--line);padding-top:10px}
@page{size:A4 landscape;margin:12mm}
@media print{
body{font-size:9.5pt}main{max-width:none;padding:0}
h2{break-after:avoid;margin-top:18px}tr,.status,.tiles,figure{break-inside:avoid}
thead{display:table-header-group}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""


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
        f"{_when(reg.first)} to {_when(reg.last)} (UTC)" if reg.first else _missing("no transfers")
    )
    shown = _num(len(records))
    if verify.records != len(records):
        shown += f" of {_num(verify.records)} in the log (filtered)"
    head = (
        f"<header><h1>{_e(title)}</h1>"
        '<p class="lead">Record of transfers of personal data to AI image services, kept by '
        "veilpix (in the spirit of GDPR Art. 30 and the Chapter V transfer records).</p>"
        '<dl class="meta">'
        f"<dt>Transfer log</dt><dd><code>{_e(log_path)}</code></dd>"
        f"<dt>Log id</dt><dd><code>{_e(verify.log_id)}</code></dd>"
        f"<dt>Period covered</dt><dd>{period}</dd>"
        f"<dt>Transfers</dt><dd>{shown}</dd>"
        f"<dt>Generated</dt><dd>{_e(generated)}</dd>"
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
            _figure("Calls per month (UTC), by outcome", _month_chart(per_month)),
            _figure(
                "Images sent per recipient",
                _hbar_chart(images, label="Images sent per recipient")
                if any(n for _, n in images)
                else _missing("No images were sent."),
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
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
