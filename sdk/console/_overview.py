"""The overview: the integrity of the log, then totals, charts and tables per vendor,
destination country, app and month, from the index."""

from __future__ import annotations

from typing import TYPE_CHECKING

from veilpix.audit._html import (
    esc,
    figure,
    hbar_chart,
    html_table,
    missing,
    month_chart,
    nbytes,
    num,
    when,
)
from veilpix.audit._records import StatsRow
from veilpix.audit._verify import VerifyResult
from veilpix.console._http import Request, Response
from veilpix.console._layout import button_form, link, notice, url
from veilpix.console._pages import html, index_ready, stamp, waiting

if TYPE_CHECKING:
    from veilpix.console._app import Console
    from veilpix.console._auth import Session


def integrity(console: Console, session: Session) -> str:
    """The integrity box: the newest verification, and how to re-run and keep it."""
    job = console.verify_job
    result = job.result
    rerun = button_form(
        "/actions/verify",
        "Verify again",
        session.csrf,
        disabled=None if not job.running else "running",
    )
    if result is None:
        state = (
            notice(f"Verification failed to run: {esc(job.error)}", "bad")
            if job.error
            else notice("Verifying the chain and every signature now… this page reloads.", "info")
        )
        return f'<section class="integrity" aria-labelledby="h-int"><h2 id="h-int">Integrity</h2>{state}{rerun}</section>'
    chains = "every writer's chain is" if result.writers else "the chain is"
    if result.ok:
        tone, head = (
            "ok",
            f"<b>Verified.</b> {chains.capitalize()} unbroken and every entry is signed.",
        )
    elif result.intact:
        tone = "warn"
        head = (
            f"<b>Intact, not fully signed.</b> No tampering found; {num(result.unsigned_tail)} "
            "newest entries carry no signature yet (a writer is running, or stopped without "
            "closing the log)."
        )
    else:
        tone = "bad"
        first = result.first_problem
        head = "<b>Tampering found.</b> " + esc(
            first.message if first else "the log did not verify"
        )
    facts = [
        (
            "Checked",
            f"{when(stamp(job.finished_at))} UTC" + (f" by {esc(job.by)}" if job.by else ""),
        ),
        ("Entries", f"{num(result.entries)} ({num(result.records)} transfers)"),
        ("Signed", _signed(result)),
        (
            "Signing key",
            f"<code>{esc(result.key_id)}</code> ({'given' if result.key_source == 'given' else 'stored in the log'})",
        ),
        (
            "Entry MACs",
            "not checked (no key file here)"
            if result.authenticated is None
            else f"{num(result.authenticated)} of {num(result.entries)} hold",
        ),
    ]
    if result.head:
        facts.append(
            (
                "Head",
                f'<code class="head">{esc(result.head)}</code><small>Keep a copy of this head '
                "somewhere the log's writers cannot change (a ticket, an e-mail to yourself). "
                "Later, <code>veilpix audit verify --expect HEAD</code> proves that no "
                "signed entry was cut off or rewritten since: a re-signed or shortened log "
                "no longer contains it.</small>",
            )
        )
    if result.writers:  # a fleet log: how each writer's chain stands
        facts.append(("Writers", _writers(result)))
    problems = ""
    bad = [p for p in result.problems if p.kind != "unsigned-tail"]
    if bad:
        items = "".join(f"<li><code>{esc(p.kind)}</code> {esc(p.message)}</li>" for p in bad[:20])
        problems = f'<ul class="problems">{items}</ul>'
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts)
    running = notice("Verifying again now…", "info") if job.running else ""
    return (
        '<section class="integrity" aria-labelledby="h-int"><h2 id="h-int">Integrity</h2>'
        f'{notice(head, tone)}{running}{problems}<dl class="facts">{rows}</dl>{rerun}</section>'
    )


def _tiles(t: StatsRow, pending_link: str) -> str:
    tiles = [
        ("Calls", num(t.calls), None),
        ("Sent", num(t.sent), url("/transfers", {"outcome": "sent"})),
        ("Blocked", num(t.blocked), url("/transfers", {"outcome": "blocked"})),
        ("Failed", num(t.failed), url("/transfers", {"outcome": "failed"})),
        ("Outcome unknown", num(t.unknown), pending_link),
        ("Images sent", num(t.images), None),
        ("Data sent", nbytes(t.bytes_sent), None),
        ("Faces blurred", num(t.faces_blurred), None),
        ("Faces sent unblurred", num(t.faces_unblurred), None),
        ("Images not checked for faces", num(t.images_unchecked), None),
    ]
    cells = []
    for label, value, href in tiles:
        inner = f"<span>{esc(label)}</span><b>{value}</b>"
        warn = (
            " warn-tile"
            if label in ("Outcome unknown", "Faces sent unblurred") and value != "0"
            else ""
        )
        cells.append(
            f'<a class="tile{warn}" href="{esc(href)}">{inner}</a>'
            if href
            else f'<div class="tile">{inner}</div>'
        )
    return f'<div class="tiles">{"".join(cells)}</div>'


def _group_table(groups: dict[str, StatsRow], column: str, label: str) -> str:
    rows = []
    for name, t in sorted(groups.items(), key=lambda kv: (-kv[1].calls, kv[0])):
        shown = esc(name) if name else missing()
        rows.append(
            [
                link(url("/transfers", {column: name}), name) if name else shown,
                num(t.calls),
                num(t.sent),
                num(t.blocked),
                num(t.failed),
                num(t.unknown),
                num(t.images),
                nbytes(t.bytes_sent),
                num(t.faces_blurred),
                f'<span class="warn">{num(t.faces_unblurred)}</span>' if t.faces_unblurred else "0",
            ]
        )
    headers = [
        label,
        "Calls",
        "Sent",
        "Blocked",
        "Failed",
        "Unknown",
        "Images",
        "Bytes sent",
        "Faces blurred",
        "Faces unblurred",
    ]
    return html_table(headers, rows, numeric=tuple(range(1, 10)))


def _countries(console: Console, groups: dict[str, StatsRow]) -> str:
    mechanisms = console.index.mechanisms()
    eea = console.index.eea
    rows = []
    for name, t in sorted(groups.items(), key=lambda kv: (-kv[1].calls, kv[0])):
        transferred = t.calls - t.blocked
        mechs = mechanisms.get(name or "?", {})
        gap = mechs.get("", 0)
        if not name:
            area = missing("not recorded", warn=True)
        elif name in eea:
            area = "EEA"
        else:
            area = '<span class="third">third country</span>'
        if not transferred:
            safeguard = missing("none needed: every call blocked")
        elif name in eea:
            safeguard = missing("none needed (EEA)")
        elif gap:
            safeguard = (
                f'<span class="warn">missing for {num(gap)} transfer{"s" if gap != 1 else ""}</span>'
                + (" " + link(url("/transfers", {"country": name}), "see them") if name else "")
            )
        else:
            safeguard = esc(", ".join(sorted(m for m in mechs if m)))
        rows.append(
            [
                link(url("/transfers", {"country": name}), name) if name else missing(warn=True),
                area,
                safeguard,
                num(t.calls),
                num(transferred),
                num(t.images),
                nbytes(t.bytes_sent),
            ]
        )
    return html_table(
        ["Country", "Area", "Transfer mechanism", "Calls", "Transfers", "Images", "Bytes sent"],
        rows,
        numeric=(3, 4, 5, 6),
    )


def overview(console: Console, request: Request, session: Session) -> Response:
    if not index_ready(console):  # the integrity box first, whatever the index does
        first = integrity(console, session)
        return waiting(console, session, "Overview", "building the overview", "/", first)
    index = console.index
    grand = index.totals().get("*") or StatsRow("*", "*", "*")
    per_month = index.totals(by="month")
    per_vendor = index.totals(by="vendor")
    per_country = index.totals(by="country")
    per_app = index.totals(by="app")
    blocked = index.blocked_by_rule()
    body = [integrity(console, session)]
    again = 3 if console.verify_job.running else None  # until the verification is in
    if not grand.calls:
        body.append(notice("The log holds no transfers yet.", "info"))
        return html(console, session, "Overview", "".join(body), "/", refresh=again)
    body.append(_tiles(grand, url("/transfers", {"outcome": "unknown"})))
    body.append(
        figure("Calls per month (UTC), by outcome", month_chart(per_month))
        + figure(
            "Calls per vendor",
            hbar_chart(
                sorted(((v or "?", t.calls) for v, t in per_vendor.items()), key=lambda x: -x[1]),
                label="Calls per vendor",
            ),
        )
    )
    body.append('<h2 id="vendors">Per vendor</h2>' + _group_table(per_vendor, "vendor", "Vendor"))
    body.append(
        '<h2 id="countries">Per destination country</h2><p class="note">A country outside the '
        "EEA needs a transfer mechanism (an adequacy decision, SCCs, BCRs) for every call that "
        "was not blocked.</p>" + _countries(console, per_country)
    )
    body.append('<h2 id="apps">Per app</h2>' + _group_table(per_app, "app", "App"))
    if blocked:
        rows = [
            [link(url("/transfers", {"rule": r, "outcome": "blocked"}), r), num(n)]
            for r, n in sorted(blocked.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        body.append(
            '<h2 id="blocked">Blocked calls by rule</h2><p class="note">Calls the policy '
            "stopped before a byte left.</p>"
            + html_table(["Rule", "Calls"], rows, numeric=(1,), narrow=True)
        )
    months = sorted(per_month.items())
    month_rows = [
        [
            esc(m),
            num(r.calls),
            num(r.sent),
            num(r.blocked),
            num(r.failed),
            num(r.unknown),
            num(r.images),
            nbytes(r.bytes_sent),
        ]
        for m, r in months
    ]
    body.append(
        '<h2 id="months">Per month</h2>'
        + html_table(
            ["Month", "Calls", "Sent", "Blocked", "Failed", "Unknown", "Images", "Bytes sent"],
            month_rows,
            numeric=tuple(range(1, 8)),
            narrow=True,
        )
    )
    return html(console, session, "Overview", "".join(body), "/", refresh=again)


def _signed(result: VerifyResult) -> str:
    if result.writers:
        signed = sum(1 for w in result.writers if w["signed_through"] is not None)
        return (
            f"{num(result.checkpoints)} signatures in the fleet's line, "
            f"{num(signed)} of {num(len(result.writers))} writers' chains signed"
        )
    return f"{num(result.checkpoints)} signatures" + (
        f", the newest covering entry {num(result.signed_through)}"
        if result.signed_through is not None
        else ", none valid"
    )


def _writers(result: VerifyResult) -> str:
    """A fleet log's writers by state (closed, running, adopted, stopped, unused), the ones
    with problems named."""
    states: dict[str, int] = {}
    for w in result.writers:
        states[w["state"]] = states.get(w["state"], 0) + 1
    parts = [f"{num(n)} {esc(state)}" for state, n in sorted(states.items())]
    flagged = [str(w["writer"]) for w in result.writers if w["problems"]]
    if flagged:
        parts.append(
            f"problems in writer{'s' if len(flagged) > 1 else ''} {esc(', '.join(flagged))}"
        )
    return ", ".join(parts)
