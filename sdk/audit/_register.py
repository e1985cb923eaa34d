"""The transfer register: one self-contained HTML page describing what the transfer log holds.

A GDPR Art. 30 style record of processing with the Chapter V transfer documentation. At the
top, after the integrity of the log itself (from :class:`VerifyResult`), the record: the
controller, its address and contact, the EU representative, the DPO, the categories of data
subjects, the retention periods and the security measures come from ``veilpix.toml``
``[register]`` (:class:`~veilpix._config_review.RegisterConfig`; a field not set is flagged,
so the reader sees what is incomplete); the purposes, the categories of personal data, the
recipients, the third countries and their safeguards, and the measures veilpix applied
(metadata stripped, faces blurred, the signed log, sealed subject fields) come from the log.
Then the details: who received personal data (vendor and legal entity), in which countries,
under which transfer mechanism, for which purposes and on which legal basis, how much (calls,
images, bytes), what was protected (faces blurred, images sent without a face check, privacy
controls), what was stopped (blocked calls by rule) and what is still open (records whose
outcome is unknown).

A *recipient* is a vendor that received at least one call that was not blocked (sent, failed or
outcome unknown: data left, or may have). A blocked call transferred nothing: it makes no
recipient, no destination country, no transfer-mechanism gap and no category of data sent. It
is still counted where a table counts calls (as ``summarize`` does) and listed by rule.

The page has no JavaScript and loads nothing: CSS is inline, charts are inline SVG, and a
Content-Security-Policy forbids anything else, so it can be mailed, archived and opened
offline. :func:`register_body` is the same content without the page around it, for a web
console: no element has a ``style`` attribute, so it works under ``style-src 'self'`` with
:data:`~veilpix.audit._html.CSS` served as a file. Every value from the log and the config is
HTML-escaped: app names, reasons and rule names can be chosen by whoever calls the API. It
prints on A4 landscape. The numbers come from
:func:`veilpix.audit._records.summarize`, the same totals ``veilpix audit stats`` prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from veilpix._config_review import DEFAULT_RETENTION_KEYS, REGISTER_KEYS, RegisterConfig
from veilpix._policy import EEA as POLICY_EEA
from veilpix.audit._html import (
    CSS,
    bullets,
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
    route,
    share_bar,
    when,
)
from veilpix.audit._record import IMAGE_CATEGORY, UNCHECKED_CATEGORY
from veilpix.audit._records import StatsRow, Summary, TransferRecord
from veilpix.audit._verify import VerifyResult

__all__ = ["EEA", "register_body", "render_report", "wrap_page"]

# A transfer to a country outside the EEA is a Chapter V transfer to a third country. "EL" is
# the EU's own code for Greece (ISO: "GR"); logs may carry either.
EEA = POLICY_EEA | {"EL"}
_PENDING_SHOWN = 500  # the register lists at most this many open records
# The category the log adds for a call with an image sent without a face check; the register
# folds it into "images" with the number of images not checked.
_IMAGE, _UNCHECKED, _IMAGES = IMAGE_CATEGORY, UNCHECKED_CATEGORY, "images"
_UNSET = "not set in veilpix.toml [register]"
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
    unchecked: int = 0  # images sent without a face check
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
    # transfers per country that needed a transfer mechanism and recorded none
    gaps: Counter[str] = field(default_factory=Counter)
    # images of the transfers: re-encoded, with metadata found and removed, with a GPS
    # position removed, recorded as not sanitized
    images: int = 0
    metadata: int = 0
    gps: int = 0
    unsanitized: int = 0
    linked: int = 0  # records linked to a data subject (fields sealed)
    erased: int = 0  # ... whose subject was erased since
    retention: Counter[str] = field(default_factory=Counter)  # retention class per record


def _vendor(rec: TransferRecord) -> str:
    return str(rec.where.get("vendor") or "?")  # the key summarize() uses


def _country(rec: TransferRecord) -> str:
    return str(rec.where.get("country") or "?")


def _gather(records: Iterable[TransferRecord]) -> _Register:
    recipients: dict[str, _Recipient] = {}
    countries: dict[str, Counter[str]] = {}
    blocks: dict[str, _Block] = {}
    pending: list[TransferRecord] = []
    vendors: set[str] = set()
    first = last = None
    gaps: Counter[str] = Counter()
    facts = Counter[str]()
    for rec in records:
        where, why, who = rec.where, rec.why, rec.who
        vendor, country = _vendor(rec), _country(rec)
        vendors.add(vendor)
        facts["linked"] += rec.subject != "none"
        facts["erased"] += rec.subject == "erased"
        facts["retention:" + str(rec.begin.get("retention") or "")] += 1
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
            gaps[country] += 1
        r.apps[str(who.get("app") or "(no app name)")] += 1
        r.categories.update(str(c) for c in rec.what.get("categories") or ())
        r.unchecked += rec.faces_unchecked
        for image in rec.what.get("images") or ():
            if "error" in image:
                facts["unsanitized"] += 1
                continue
            facts["images"] += 1
            facts["metadata"] += bool(image.get("metadata_removed"))
            facts["gps"] += bool(image.get("gps_removed"))
        controls: Mapping[str, Any] = rec.begin.get("controls", {})
        r.applied.update(str(c) for c in controls.get("applied") or ())
        r.account_level.update(str(c) for c in controls.get("account_level") or ())
        r.unavailable.update(str(c) for c in controls.get("unavailable") or ())
    return _Register(
        recipients,
        countries,
        vendors - recipients.keys(),
        pending,
        blocks,
        first,
        last,
        gaps=gaps,
        images=facts["images"],
        metadata=facts["metadata"],
        gps=facts["gps"],
        unsanitized=facts["unsanitized"],
        linked=facts["linked"],
        erased=facts["erased"],
        retention=Counter(
            {
                k.removeprefix("retention:"): n
                for k, n in facts.items()
                if k.startswith("retention:")
            }
        ),
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
        return "no signature recorded"
    return (
        f"signature {esc(str(state.get('checkpoint')))} covering entry "
        f"{esc(str(state.get('seq')))}, made {when(str(state.get('ts')))} UTC"
    )


def _integrity(verify: VerifyResult) -> str:
    facts = [
        f"{num(verify.entries)} entr{'y' if verify.entries == 1 else 'ies'}",
        _signatures(verify),
        f"signing key {esc(verify.key_id)}",
    ]
    if verify.pruned_through is not None:
        facts.append(
            f"entries up to {num(verify.pruned_through)} pruned under the retention schedule"
            " (the cut is bridged by a signed entry)"
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


def _signatures(verify: VerifyResult) -> str:
    """How many signatures the log holds and how far the newest reaches."""
    n = verify.checkpoints
    if not n:
        return "no signature yet"
    text = f"{num(n)} signature{'' if n == 1 else 's'}"
    if verify.signed_through is not None:
        text += f", the newest covering entry {num(verify.signed_through)}"
    return text


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
            "Every entry chains onto the one before and every signature is valid: "
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
        share = share_bar(
            [("sent", total.faces_blurred), ("unknown", total.faces_unblurred)],
            label=f"Faces blurred {blurred:.0f}%, sent unblurred {100 - blurred:.0f}%",
        ) + (
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
        [f"<b>{esc(v)}</b>", _categories(r.categories, r.unchecked), chips(r.apps)]
        for v, r in sorted(reg.recipients.items())
    ]
    return html_table(["Recipient", "Categories of personal data", "Applications"], rows)


def _categories(counts: Mapping[str, int], unchecked: int) -> str:
    """Categories of personal data as labels, with "image" and "image (faces not checked)"
    as one category "images" that says how many images were not checked for faces."""
    merged = Counter({k: n for k, n in counts.items() if k not in (_IMAGE, _UNCHECKED)})
    calls = max(counts.get(_IMAGE, 0), counts.get(_UNCHECKED, 0))
    notes = {}
    if calls:
        merged[_IMAGES] = calls
        if unchecked:
            notes[_IMAGES] = f'<span class="warn">{num(unchecked)} not checked for faces</span>'
    return chips(merged, notes) or missing("none")


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
            route(rec.who.get("door")),
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
        html_table(["Record", "Begun (UTC)", "Recipient", "Host", "Application", "Route"], rows)
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


# -- the record of processing (Art. 30(1)) -------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{num(n)} {word}{'' if n == 1 else 's'}"


def _unset(hint: str = "") -> str:
    """A field of ``[register]`` that is not set, flagged."""
    return missing(_UNSET, warn=True) + (f' <span class="hint">{esc(hint)}</span>' if hint else "")


def _setting(value: str | None, hint: str = "") -> str:
    return f'<span class="lines">{esc(value)}</span>' if value else _unset(hint)


def _labels(values: Iterable[str]) -> str:
    return " ".join(f'<span class="chip">{esc(v)}</span>' for v in values)


def _line(content: str) -> str:
    return f'<div class="v">{content}</div>'


def _none_sent(reg: _Register) -> str | None:
    """What a row drawn from the transfers says when there were none (else None)."""
    if reg.recipients:
        return None
    if reg.first is None:
        return missing("none: no transfers recorded")
    return '<span class="okay">none: every call was blocked, so nothing was transferred</span>'


def _purposes(reg: _Register) -> str:
    purposes: Counter[str] = Counter()
    for r in reg.recipients.values():
        purposes.update(r.purposes)
    gap = sum(r.no_purpose for r in reg.recipients.values())
    out = per_line(purposes)
    if gap:
        out += _line(missing(f"not recorded for {_plural(gap, 'transfer')}", warn=True))
    return out


def _all_categories(reg: _Register) -> str:
    categories: Counter[str] = Counter()
    for r in reg.recipients.values():
        categories.update(r.categories)
    return _categories(categories, sum(r.unchecked for r in reg.recipients.values()))


def _recipient_list(reg: _Register) -> str:
    items = []
    for vendor in sorted(
        reg.recipients, key=lambda v: (-sum(reg.recipients[v].countries.values()), v)
    ):
        r = reg.recipients[vendor]
        entities = sorted(r.legal_entities, key=lambda e: (-r.legal_entities[e], e))
        entity = ", ".join(esc(e) for e in entities)
        if r.no_entity:
            gap = "legal entity not recorded"
            entity += ("; " if entity else "") + missing(
                gap + (f" for {_plural(r.no_entity, 'transfer')}" if entity else ""), warn=True
            )
        items.append(f"<b>{esc(vendor)}</b>: {entity}")
    return bullets(items)


def _third_countries(reg: _Register) -> str:
    items = []
    for country in sorted(reg.countries, key=lambda c: (c == "?", c)):
        if country in EEA:
            continue
        counts = reg.countries[country]
        parts = [esc(m) for m in sorted(counts, key=lambda m: (-counts[m], m))]
        gap = reg.gaps.get(country, 0)
        if gap:
            parts.append(
                missing(f"no transfer mechanism recorded for {_plural(gap, 'transfer')}", warn=True)
            )
        name = (
            missing("country not recorded", warn=True)
            if country == "?"
            else f'<b>{esc(country)}</b> <span class="third">third country</span>'
        )
        items.append(f"{name}: {'; '.join(parts)}")
    if not items:
        return '<span class="okay">none: every transfer stayed in the EEA</span>'
    return bullets(items)


def _retention(
    reg: _Register, register: RegisterConfig, verify: VerifyResult, log_retention: str | None
) -> str:
    """The periods per purpose ([register] retention), the purposes of the log none covers,
    and what the log shows of its own retention."""
    if register.retention:
        items = [
            f"<b>{esc(purpose)}</b>: {esc(period)}"
            for purpose, period in register.retention.items()
            if purpose not in DEFAULT_RETENTION_KEYS
        ]
        if register.default_retention:
            items.append(f"<i>every other purpose</i>: {esc(register.default_retention)}")
        out = bullets(items)
        purposes = sorted({p for r in reg.recipients.values() for p in r.purposes})
        out += "".join(
            _line(missing(f'no period set for the purpose "{p}"', warn=True))
            for p in purposes
            if register.retention_for(p) is None
        )
    else:
        out = _unset('a table: purpose = period, with "*" for every other purpose')
    facts = []
    if log_retention:
        facts.append(
            f"kept for {esc(log_retention)}, then removed by <code>veilpix audit prune</code> "
            "(veilpix.toml [log] retention)"
        )
    if verify.pruned_through is not None:
        facts.append(
            f"entries up to {num(verify.pruned_through)} already removed (the cut is signed)"
        )
    if not facts:
        facts.append(
            missing(
                "no period known: veilpix.toml [log] retention is not set and the log was "
                "never pruned",
                warn=True,
            )
        )
    if reg.first:
        facts.append(f"the oldest shown is from {when(reg.first)}")
    classes = {k: n for k, n in reg.retention.items() if k}
    if classes:
        listed = ", ".join(
            f"{esc(k)} ({num(n)})"
            for k, n in sorted(classes.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        facts.append(f"retention class recorded with the calls: {listed}")
    return out + f'<div class="sub">The transfer records themselves: {"; ".join(facts)}.</div>'


def _measures(
    reg: _Register, total: StatsRow, verify: VerifyResult, register: RegisterConfig
) -> str:
    """The measures [register] names, then those veilpix applied, as the log shows them."""
    own = bullets(esc(m) for m in register.security_measures) or _unset()
    if reg.images:
        metadata = (
            f"{_plural(reg.images, 'image')} sent, each re-encoded without its metadata; "
            f"metadata was found and removed in {num(reg.metadata)}, a GPS location in "
            f"{num(reg.gps)}"
        )
    else:
        metadata = "every image is re-encoded without its metadata (none was sent)"
    if reg.unsanitized:
        n = reg.unsanitized
        metadata += "; " + missing(f"{_plural(n, 'image')} recorded as not sanitized", warn=True)
    unblurred = _plural(total.faces_unblurred, "face")
    if total.faces_unblurred:
        unblurred = f'<span class="warn">{unblurred}</span>'
    if verify.ok:
        state = '<span class="okay">verified</span>'
    elif verify.intact:
        state = missing("intact, the newest entries not signed yet", warn=True)
    else:
        state = '<span class="warn">check FAILED</span>'
    blocked = (
        f"{_plural(total.blocked, 'call')} blocked before anything left"
        if total.blocked
        else "none was blocked"
    )
    applied = [
        f"<b>Metadata stripped</b> before sending: {metadata}.",
        f"<b>Faces blurred</b> before sending: {_plural(total.faces_blurred, 'face')}; "
        f"{unblurred} sent unblurred; {_plural(total.images_unchecked, 'image')} sent without "
        "a face check.",
        "<b>Tamper-evident, signed log</b>: every entry is chained to the one before and "
        f"authenticated; {_signatures(verify)}; integrity {state}.",
        "<b>Subject fields sealed and erasable</b>: a call's subject and consent references, "
        "image fingerprints and kept prompts are encrypted under a key per data subject, which "
        f"an erasure (Art. 17) destroys; {_plural(reg.linked, 'record')} linked to a subject, "
        f"{num(reg.erased)} of them erased; {_plural(verify.erasures, 'erasure')} in the log "
        "(signed).",
        f"<b>Policy checked before sending</b>: {blocked}.",
    ]
    return (
        own
        + '<div class="sub">Applied by veilpix, as the transfer log shows:</div>'
        + bullets(applied, cls="measures")
    )


def _record(
    reg: _Register,
    total: StatsRow,
    verify: VerifyResult,
    register: RegisterConfig,
    log_retention: str | None,
) -> str:
    config, log = "from veilpix.toml [register]", "from the transfer log"
    nothing = _none_sent(reg)
    subjects = _labels(register.data_subjects) or _unset('for example ["customers", "employees"]')
    rows = [
        ("Controller", "Art. 30(1)(a)", config, _setting(register.controller)),
        ("Address", "Art. 30(1)(a)", config, _setting(register.address)),
        ("Contact", "Art. 30(1)(a)", config, _setting(register.contact)),
        (
            "Representative in the EU",
            "Art. 27, 30(1)(a)",
            config,
            _setting(
                register.representative,
                "needed when the controller is not established in the EU; "
                'otherwise say so, e.g. "not needed: established in the EU"',
            ),
        ),
        (
            "Data protection officer",
            "Art. 30(1)(a), 37",
            config,
            _setting(register.dpo, "name and contact"),
        ),
        ("Purposes of the processing", "Art. 30(1)(b)", log, nothing or _purposes(reg)),
        ("Categories of data subjects", "Art. 30(1)(c)", config, subjects),
        ("Categories of personal data", "Art. 30(1)(c)", log, nothing or _all_categories(reg)),
        ("Recipients", "Art. 30(1)(d)", log, nothing or _recipient_list(reg)),
        (
            "Transfers to third countries and safeguards",
            "Art. 30(1)(e), 44-49",
            log,
            nothing or _third_countries(reg),
        ),
        (
            "Time limits for erasure",
            "Art. 30(1)(f)",
            f"{config}; the transfer log",
            _retention(reg, register, verify, log_retention),
        ),
        (
            "Technical and organisational security measures",
            "Art. 30(1)(g), 32",
            f"{config}; the transfer log",
            _measures(reg, total, verify, register),
        ),
    ]
    items = "".join(
        f"<dt>{esc(label)}<small>{esc(ref)}, {esc(source)}</small></dt><dd>{content}</dd>"
        for label, ref, source, content in rows
    )
    unset = register.unset
    if unset:
        names = ", ".join(f"<code>{esc(name)}</code>" for name in unset)
        state = (
            '<div class="status incomplete"><strong>Record incomplete.</strong> '
            f"{num(len(unset))} of {len(REGISTER_KEYS)} fields "
            f"{'is' if len(unset) == 1 else 'are'} {_UNSET}: {names}. Set "
            f"{'it' if len(unset) == 1 else 'them'} to complete the record.</div>"
        )
    else:
        state = '<p class="okay">Every field of [register] is set in veilpix.toml.</p>'
    return (
        "<h2>Record of processing</h2>"
        '<p class="note">The record of processing (GDPR Art. 30(1)) for sending personal data '
        "to AI image services. The controller's details, the data subjects, the retention "
        "periods and the organisational measures come from veilpix.toml [register]; the "
        "purposes, the categories of personal data, the recipients, the third countries and "
        "their safeguards come from the transfer log, detailed in the sections below.</p>"
        f'{state}<dl class="record">{items}</dl>'
    )


# -- the page --------------------------------------------------------------------------------


def register_body(
    records: Iterable[TransferRecord],
    verify: VerifyResult,
    *,
    log_path: str,
    generated: str,
    title: str = "Transfer register",
    register: RegisterConfig | None = None,
    log_retention: str | None = None,
) -> str:
    """The register's content: everything inside ``<main>``, without the page around it, for
    a web console that serves :data:`~veilpix.audit._html.CSS` itself. No element has a
    ``style`` attribute. ``register`` is ``veilpix.toml`` ``[register]`` (None: nothing set,
    every field flagged); ``log_retention`` is ``[log] retention``, the age
    ``veilpix audit prune`` removes (None: not set). See :func:`render_report`."""
    register = register if register is not None else RegisterConfig()
    # one pass over the records (a generator will do: a million of them are never held)
    summary, count = Summary(), 0

    def fed() -> Iterator[TransferRecord]:
        nonlocal count
        for rec in records:
            summary.add(rec)
            count += 1
            yield rec

    reg = _gather(fed())
    stats = summary.rows()
    grand = _totals(stats, lambda _: "*").get("*") or StatsRow("*", "*", "*")
    period = (
        f"{when(reg.first)} to {when(reg.last)} (UTC)" if reg.first else missing("no transfers")
    )
    shown = num(count)
    if verify.records != count:
        shown += f" of {num(verify.records)} in the log (filtered)"
    controller = (
        f"<dt>Controller</dt><dd>{esc(register.controller)}</dd>" if register.controller else ""
    )
    head = (
        f"<header><h1>{esc(title)}</h1>"
        '<p class="lead">Record of processing (GDPR Art. 30) for transfers of personal data '
        "to AI image services, with the Chapter V transfer records, kept by veilpix.</p>"
        '<dl class="meta">'
        f"{controller}"
        f"<dt>Transfer log</dt><dd><code>{esc(log_path)}</code></dd>"
        f"<dt>Log id</dt><dd><code>{esc(verify.log_id)}</code></dd>"
        f"<dt>Period covered</dt><dd>{period}</dd>"
        f"<dt>Transfers</dt><dd>{shown}</dd>"
        f"<dt>Generated</dt><dd>{esc(generated)}</dd>"
        "</dl></header>"
    )
    body = [head, _integrity(verify), _record(reg, grand, verify, register, log_retention)]
    if not count:
        body.append('<div class="empty">No transfers recorded.</div>')
    else:
        per_vendor = _totals(stats, lambda r: r.vendor)
        per_country = _totals(stats, lambda r: r.country)
        per_month = _totals(stats, lambda r: r.month)
        images = sorted(
            ((v, per_vendor[v].images) for v in reg.recipients), key=lambda x: (-x[1], x[0])
        )
        body += [
            "<h2>Totals</h2>",
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
            "retention, no training on inputs), as recorded with each call.</p>",
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
        "<footer>Produced by veilpix from its tamper-evident transfer log and the [register] "
        "section of veilpix.toml. The log keeps no image content or credentials, and prompts "
        "only encrypted where so configured: images are described by sizes, formats, what was "
        "found and removed, and keyed fingerprints. Times are UTC.</footer>"
    )
    return "".join(body)


def render_report(
    records: Iterable[TransferRecord],
    verify: VerifyResult,
    *,
    log_path: str,
    generated: str,
    title: str = "Transfer register",
    register: RegisterConfig | None = None,
    log_retention: str | None = None,
) -> str:
    """The register of ``records`` (oldest first, as ``AuditLog.records`` yields them) as one
    self-contained HTML page. ``verify`` is the log's integrity check, ``generated`` the time
    to print, ``register`` the ``[register]`` section of ``veilpix.toml`` (None: nothing set)
    and ``log_retention`` its ``[log] retention``. The content is :func:`register_body`."""
    body = register_body(
        records,
        verify,
        log_path=log_path,
        generated=generated,
        title=title,
        register=register,
        log_retention=log_retention,
    )
    return wrap_page(body, title=title)


def wrap_page(body: str, *, title: str) -> str:
    """A register's body (:func:`register_body`) as a self-contained HTML page: its styles
    inline, nothing loaded, printable."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )
