"""The console's pages, one function each, and the route table that names them.

Overview and transfers read the index (:mod:`veilpix.console._index`); a transfer's page,
the lookup and the register read the log. While the index is being built, the pages that
need it say how far it got and reload themselves (a ``<meta refresh>``: no script).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from veilpix._errors import AuditLogError, VeilpixError
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
from veilpix.audit._records import StatsRow, TransferRecord, sealed_view
from veilpix.console._http import Request, Response
from veilpix.console._index import OUTCOMES, Filters, Totals
from veilpix.console._layout import button_form, field, link, notice, page, select, url

if TYPE_CHECKING:
    from veilpix.console._app import Console
    from veilpix.console._auth import Session

__all__ = ["build_register", "routes"]

Handler = Callable[["Console", Request, "Session"], Response]
PAGE_SIZE = 50
MENU_LIMIT = 200  # values a filter menu lists; more, and it is a text field
_OUTCOME_LABEL = {
    "sent": "sent",
    "blocked": "blocked",
    "failed": "failed",
    "unknown": "outcome unknown",
}


def routes() -> dict[tuple[str, str], Handler]:
    from veilpix.console import _actions, _login, _lookup  # noqa: PLC0415 - they import this

    return {
        ("GET", "/"): overview,
        ("GET", "/transfers"): transfers,
        ("GET", "/transfers/*"): transfer,
        ("GET", "/lookup"): _lookup.lookup_page,
        ("POST", "/lookup"): _lookup.lookup,
        ("GET", "/register"): register,
        ("GET", "/register.html"): register_download,
        ("POST", "/register"): register_rebuild,
        ("GET", "/actions"): _actions.actions_page,
        ("POST", "/actions/erase"): _actions.erase,
        ("POST", "/actions/resolve"): _actions.resolve,
        ("POST", "/actions/verify"): _actions.verify,
        ("POST", "/actions/export"): _actions.export,
        ("POST", "/logout"): _login.logout,
    }


def html(
    console: Console,
    session: Session,
    title: str,
    body: str,
    current: str,
    *,
    heading: bool = True,
    refresh: int | None = None,
) -> Response:
    """A page in the console's frame (``refresh``: reload it after so many seconds, while
    work it waits for runs in the background)."""
    text = page(title, body, console.frame(session), current=current, heading=heading)
    if refresh is not None:
        text = text.replace("<head>", f'<head><meta http-equiv="refresh" content="{refresh}">', 1)
    return Response(200, text.encode())


def _refreshing(  # noqa: PLR0917 - the page, and what it waits for
    console: Console, session: Session, title: str, what: str, current: str, first: str = ""
) -> Response:
    """A page that waits for the index (``first``: HTML shown above the wait)."""
    job = console.index_job
    pct = job.percent()
    done = f"{num(job.done)} of {num(job.total)} entries ({pct}%)" if pct is not None else ""
    body = notice(
        f"Reading the transfer log: {esc(what)}. {esc(done)} This page reloads itself.", "info"
    )
    if job.error:
        body = notice(f"Reading the log failed: {esc(job.error)}. Trying again…", "bad")
    return html(console, session, title, first + body, current, refresh=2)


def index_ready(console: Console) -> bool:
    """Whether the index can answer now (it is brought up to date first). When it failed,
    or must be built again after a prune, this starts the build and says no."""
    job = console.index_job
    if job.running:
        return False
    if console.index.error is not None or not console.index.ready.is_set():
        job.start()  # (a failed build is tried again: the log may be readable now)
        return False
    if not console.index.refresh():
        console.index_job.start()
        return False
    return True


# -- overview ----------------------------------------------------------------------------------


def _stats(label: str, t: Totals) -> StatsRow:
    """A :class:`StatsRow` (what the register's charts take) from index totals."""
    return StatsRow(
        label,
        label,
        label,
        calls=t.calls,
        sent=t.sent,
        blocked=t.blocked,
        failed=t.failed,
        unknown=t.unknown,
        images=t.images,
        bytes_sent=t.sent_bytes,
        faces_blurred=t.blurred,
        faces_unblurred=t.unblurred,
        images_unchecked=t.unchecked,
    )


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
    if result.ok:
        tone, head = "ok", "<b>Verified.</b> The chain is unbroken and every entry is signed."
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
            f"{when(_stamp(job.finished_at))} UTC" + (f" by {esc(job.by)}" if job.by else ""),
        ),
        ("Entries", f"{num(result.entries)} ({num(result.records)} transfers)"),
        (
            "Signed",
            f"{num(result.checkpoints)} signatures"
            + (
                f", the newest covering entry {num(result.signed_through)}"
                if result.signed_through is not None
                else ", none valid"
            ),
        ),
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


def _stamp(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tiles(t: Totals, pending_link: str) -> str:
    tiles = [
        ("Calls", num(t.calls), None),
        ("Sent", num(t.sent), url("/transfers", {"outcome": "sent"})),
        ("Blocked", num(t.blocked), url("/transfers", {"outcome": "blocked"})),
        ("Failed", num(t.failed), url("/transfers", {"outcome": "failed"})),
        ("Outcome unknown", num(t.unknown), pending_link),
        ("Images sent", num(t.images), None),
        ("Data sent", nbytes(t.sent_bytes), None),
        ("Faces blurred", num(t.blurred), None),
        ("Faces sent unblurred", num(t.unblurred), None),
        ("Images not checked for faces", num(t.unchecked), None),
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


def _group_table(groups: dict[str, Totals], column: str, label: str) -> str:
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
                nbytes(t.sent_bytes),
                num(t.blurred),
                f'<span class="warn">{num(t.unblurred)}</span>' if t.unblurred else "0",
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


def _countries(console: Console, groups: dict[str, Totals]) -> str:
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
                nbytes(t.sent_bytes),
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
        return _refreshing(console, session, "Overview", "building the overview", "/", first)
    index = console.index
    grand = index.totals().get("*", Totals())
    per_month = {m: _stats(m, t) for m, t in index.totals(by="month").items()}
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


# -- transfers ---------------------------------------------------------------------------------


def _day(text: str | None, *, end: bool = False) -> int | None:
    """Epoch seconds of a date (YYYY-MM-DD) or time from a filter field (None: empty or not
    a date). ``end``: the end of that day, for "until"."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    stamp = int(moment.timestamp())
    return stamp + 86400 if end and len(text) == 10 else stamp


FILTER_FIELDS = (
    "since",
    "until",
    "vendor",
    "country",
    "outcome",
    "app",
    "purpose",
    "basis",
    "rule",
)


def read_filters(query: dict[str, str]) -> tuple[Filters, dict[str, str]]:
    """The list's filters from the query, and the query values they came from (to keep in
    links and the form)."""
    kept = {k: query[k] for k in FILTER_FIELDS if query.get(k)}
    outcome = kept.get("outcome")
    f = Filters(
        since=_day(kept.get("since")),
        until=_day(kept.get("until"), end=True),
        vendor=kept.get("vendor"),
        country=kept.get("country"),
        outcome=outcome if outcome in OUTCOMES else None,
        app=kept.get("app"),
        purpose=kept.get("purpose"),
        basis=kept.get("basis"),
        rule=kept.get("rule"),
    )
    return f, kept


def _filter_form(console: Console, kept: dict[str, str]) -> str:
    index = console.index

    def options(column: str) -> list[tuple[str, str]]:
        return [(n, n) for n in index.names(column)]

    def choice(column: str, any_: str) -> str:
        """A menu of the values ``column`` takes; a text field when there are too many to
        list (an app that records a purpose per call)."""
        names = index.names(column)
        if len(names) > MENU_LIMIT:
            value = esc(kept.get(column, ""))
            return (
                f'<input id="f-{column}" name="{column}" value="{value}" '
                f'placeholder="{esc(any_)} (exact value)">'
            )
        return select(column, [(n, n) for n in names], kept.get(column), any_=any_)

    countries = [
        ("third", "outside the EEA (transfers)"),
        ("third-no-mechanism", "outside the EEA, no mechanism"),
        *options("country"),
    ]
    controls = [
        field(
            "From",
            f'<input type="date" id="f-since" name="since" value="{esc(kept.get("since", ""))}">',
        ),
        field(
            "To (inclusive)",
            f'<input type="date" id="f-until" name="until" value="{esc(kept.get("until", ""))}">',
        ),
        field("Vendor", choice("vendor", "any vendor")),
        field("Country", select("country", countries, kept.get("country"), any_="any country")),
        field(
            "Outcome",
            select(
                "outcome",
                [(o, _OUTCOME_LABEL[o]) for o in OUTCOMES],
                kept.get("outcome"),
                any_="any outcome",
            ),
        ),
        field("App", choice("app", "any app")),
        field(
            "Purpose",
            choice("purpose", "any purpose"),
        ),
        field("Legal basis", choice("basis", "any basis")),
        field("Rule (blocked)", choice("rule", "any rule")),
    ]
    return (
        '<form method="get" action="/transfers" class="filters" aria-label="Filter transfers">'
        f'{"".join(controls)}<div class="buttons"><button type="submit">Filter</button> '
        '<a href="/transfers">Clear</a></div></form>'
    )


def _faces(rec: TransferRecord) -> str:
    if rec.outcome == "blocked":
        return "–"
    images = rec.what.get("images", ())
    blurred = sum(int(i.get("faces_blurred") or 0) for i in images)
    parts = [f"{num(blurred)} blurred"] if blurred else []
    if rec.faces_unblurred:
        parts.append(f'<span class="warn">{num(rec.faces_unblurred)} unblurred</span>')
    if rec.faces_unchecked:
        parts.append(f'<span class="warn">{num(rec.faces_unchecked)} not checked</span>')
    return ", ".join(parts) or "none found"


def outcome_badge(outcome: str) -> str:
    return (
        f'<span class="badge o-{esc(outcome)}">{esc(_OUTCOME_LABEL.get(outcome, outcome))}</span>'
    )


def fetch(console: Console, session: Session, seqs: list[int]) -> list[TransferRecord | int]:
    """The transfers at ``seqs`` as this viewer may see them; the seq alone for one whose
    entry veilpix cannot read (altered: verification names it)."""
    try:
        return [view(console, session, r) for r in console.log.records_at(seqs)]
    except VeilpixError:
        pass
    out: list[TransferRecord | int] = []
    for seq in seqs:
        try:
            out += [view(console, session, r) for r in console.log.records_at([seq])]
        except VeilpixError:
            out.append(seq)
    return out


def _damaged_row(what: TransferRecord | int) -> list[str]:
    rid = f"entry {what}" if isinstance(what, int) else what.id
    return [
        esc(rid[:8] if not isinstance(what, int) else rid),
        '<span class="bad">holds values veilpix did not write: run verification</span>',
        *[""] * 7,
        outcome_badge("unknown"),
    ]


def record_rows(records: Sequence[TransferRecord | int]) -> list[list[str]]:
    rows = []
    for rec in records:
        if isinstance(rec, int):
            rows.append(_damaged_row(rec))
            continue
        try:
            rows.append(_record_row(rec))
        except (ValueError, TypeError, KeyError, AttributeError):
            rows.append(_damaged_row(rec))
    return rows


def _record_row(rec: TransferRecord) -> list[str]:
    sent = rec.to_dict()["request_bytes"] or rec.what.get("bytes_after")
    return [
        link(f"/transfers/{rec.id}", rec.id[:8], class_="id", title=rec.id),
        when(rec.begun),
        esc(rec.who.get("app") or "") or missing(),
        esc(rec.where.get("vendor") or "?"),
        esc(rec.where.get("country") or "") or missing(warn=True),
        esc(rec.why.get("purpose") or "") or missing(),
        num(int(rec.what.get("image_count") or 0)),
        "–" if rec.outcome == "blocked" or not sent else nbytes(int(sent)),
        _faces(rec),
        outcome_badge(rec.outcome),
    ]


RECORD_HEADERS = [
    "Record",
    "Begun (UTC)",
    "App",
    "Vendor",
    "Country",
    "Purpose",
    "Images",
    "Sent",
    "Faces",
    "Outcome",
]


def transfers(console: Console, request: Request, session: Session) -> Response:
    if not index_ready(console):
        return _refreshing(console, session, "Transfers", "indexing the transfers", "/transfers")
    f, kept = read_filters(request.query)
    try:
        before = int(request.query["before"]) if request.query.get("before") else None
    except ValueError:
        before = None
    seqs, total, more = console.index.page(f, before=before, size=PAGE_SIZE)
    records = fetch(console, session, seqs)
    body = [_filter_form(console, kept)]
    if not total:
        body.append(notice(f"No transfer matches{' these filters' if kept else ''}.", "info"))
        return html(console, session, "Transfers", "".join(body), "/transfers")
    start = 1 if before is None else console.index.count_newer(f, before) + 1
    shown = f"{num(start)}–{num(start + len(records) - 1)} of {num(total)}"
    body.append(
        f'<p class="count" role="status">{shown} {"matching" if kept else ""} transfers, newest first</p>'
    )
    body.append(html_table(RECORD_HEADERS, record_rows(records), numeric=(6, 7)))
    nav = []
    if before is not None:
        nav.append(link(url("/transfers", kept), "← Newest"))
    if more is not None:
        nav.append(link(url("/transfers", {**kept, "before": more}), "Older →", rel="next"))
    body.append(f'<nav class="pager" aria-label="Pages">{" ".join(nav)}</nav>')
    if console.settings.changes:
        from veilpix.console._actions import export_form  # noqa: PLC0415 - they import this

        body.append(
            f'<h2 id="h-export">Export these {num(total)} transfers</h2>'
            + export_form(console, session, kept)
        )
    return html(console, session, "Transfers", "".join(body), "/transfers")


def view(console: Console, session: Session, rec: TransferRecord) -> TransferRecord:
    """``rec`` as this viewer may see it: subject-linked fields sealed unless allowed."""
    return rec if console.sees_subjects(session) else sealed_view(rec)


# -- one transfer --------------------------------------------------------------------------------


def _dl(pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in pairs if v not in (None, ""))
    return f'<dl class="facts">{rows}</dl>'


def _text(value: Any) -> str:
    if value is None or value == "":
        return missing()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return esc(", ".join(str(v) for v in value)) if value else missing("none")
    return esc(value)


def transfer(console: Console, request: Request, session: Session) -> Response:
    rid = request.path.removeprefix("/transfers/")
    try:
        rec = view(console, session, console.log.get(rid))
    except AuditLogError as exc:
        if "did not write" not in str(exc):  # (no such transfer)
            return console.error(request, 404, str(exc), session)
        return _damaged_page(console, session, rid, str(exc))
    except VeilpixError as exc:  # an id too short, or matching several
        return console.error(request, 404, str(exc), session)
    try:
        return _transfer_page(console, session, rec)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return _damaged_page(console, session, rec.id, f"{type(exc).__name__}: {exc}")


def _damaged_page(console: Console, session: Session, rid: str, why: str) -> Response:
    body = notice(
        f"Transfer <code>{esc(rid)}</code> holds values veilpix did not write, so it cannot be "
        f"shown ({esc(why)}). The log was altered: the integrity box on the overview names "
        "the entry after a verification.",
        "bad",
    )
    return html(console, session, "Transfer (damaged)", body, "/transfers")


def _transfer_page(console: Console, session: Session, rec: TransferRecord) -> Response:
    d = rec.to_dict()
    who, where, why, controls = d["who"], d["where"], d["why"], d["controls"]
    parts = [
        f'<p class="lead">{outcome_badge(rec.outcome)} <code class="id">{esc(rec.id)}</code></p>',
        '<div class="cols">',
        "<section><h2>Who</h2>"
        + _dl(
            [
                ("App", _text(who.get("app"))),
                ("Actor", _text(who.get("actor"))),
                ("Client", _text(who.get("client"))),
                ("Route", _text(_route(who.get("door")))),
            ]
        )
        + "</section>",
        "<section><h2>Where</h2>"
        + _dl(
            [
                ("Vendor", _text(where.get("vendor"))),
                ("Legal entity", _text(where.get("legal_entity"))),
                ("Host", _text(where.get("host"))),
                ("Region", _text(where.get("region"))),
                ("Country", _text(where.get("country"))),
                ("Transfer mechanism", _text(where.get("transfer_mechanism"))),
                ("Operation", _text(where.get("operation"))),
                ("Model", _text(where.get("model"))),
                (
                    "Request",
                    f"{esc(where.get('method') or '')} <code>{esc(where.get('url') or '')}</code>",
                ),
            ]
        )
        + "</section>",
        "<section><h2>Why</h2>"
        + _dl(
            [
                ("Purpose", _text(why.get("purpose"))),
                ("Legal basis", _text(why.get("legal_basis"))),
                ("Consent", _text(why.get("consent"))),
                ("Consent reference", _text(why.get("consent_ref"))),
                (
                    "Data subject",
                    _text(why.get("subject_ref"))
                    if rec.subject != "none"
                    else missing("none linked"),
                ),
            ]
        )
        + "</section>",
        "<section><h2>Outcome</h2>"
        + _dl(
            [
                ("Outcome", outcome_badge(rec.outcome)),
                ("Begun", when(d["begun"]) + " UTC"),
                (
                    "Finished",
                    when(d["finished"]) + " UTC"
                    if d["finished"]
                    else missing("never (outcome unknown)", warn=True),
                ),
                ("HTTP status", _text(d["status"])),
                ("Reason", _text(d["reason"])),
                ("Rule", _text(d["rule"])),
                ("Latency", "" if d["latency_ms"] is None else f"{d['latency_ms']:.1f} ms"),
                (
                    "Request / response",
                    f"{_size(d['request_bytes'])} / {_size(d['response_bytes'])}",
                ),
                ("Vendor request id", _text(d["vendor_request_id"])),
                ("Retention", _text(d["retention"])),
            ]
        )
        + "</section>",
        "</div>",
        "<h2>What</h2>",
        _dl(
            [
                ("Categories of data", _text(_categories(d["what"].get("categories") or []))),
                ("Prompt", _prompt(d["what"].get("prompt"))),
            ]
        ),
        _images(d["what"].get("images") or [], rec),
        "<h2>Privacy controls</h2>",
        _dl(
            [
                ("Applied on the call", _text(controls.get("applied"))),
                ("At account level only", _text(controls.get("account_level"))),
                ("Not offered by the vendor", _text(controls.get("unavailable"))),
            ]
        ),
        "<h2>Place in the chain</h2>",
        _chain(console, rec),
    ]
    if rec.outcome == "unknown":
        parts.append(
            '<p><a class="button" href="' + esc(url("/actions", {"record": rec.id})) + '#resolve">'
            "Resolve this transfer's outcome…</a></p>"
        )
    return html(console, session, f"Transfer {rec.id[:8]}", "".join(parts), "/transfers")


def _route(door: Any) -> str:
    return {
        "sdk": "SDK (in the app)",
        "transport": "SDK (HTTP transport)",
        "gateway": "gateway",
        "intercept": "intercept proxy",
    }.get(str(door), str(door or ""))


def _categories(values: list[Any]) -> list[str]:
    names = [str(v) for v in values]
    if "image (faces not checked)" in names:
        names = [n for n in names if n not in ("image", "image (faces not checked)")]
        names.insert(0, "images (faces not checked)")
    return names


def _size(n: Any) -> str:
    return nbytes(int(n)) if isinstance(n, int) else "–"


def _prompt(prompt: Any) -> str:
    if not isinstance(prompt, dict):
        return missing("none")
    kept = " (kept encrypted)" if prompt.get("sealed") else ""
    return f"{num(int(prompt.get('length') or 0))} characters, fingerprinted{kept}; the text is not shown"


def _images(images: list[dict[str, Any]], rec: TransferRecord) -> str:
    if not images:
        return f"<p>{missing('No images.')}</p>"
    rows = []
    for i in images:
        if "error" in i:
            rows.append(
                [
                    esc(i.get("field") or "–"),
                    _size(i.get("bytes_before")),
                    '<span class="bad">not sent</span>',
                    esc(i["error"]),
                    "",
                    "",
                ]
            )
            continue
        found = i.get("metadata_found") or {}
        faces = (
            missing("not checked", warn=True)
            if not i.get("faces_checked")
            else f"{num(int(i.get('faces_found') or 0))} found, {num(int(i.get('faces_blurred') or 0))} blurred"
            + (
                f', <span class="warn">{num(int(i["faces_unblurred"]))} sent unblurred</span>'
                if i.get("faces_unblurred")
                else ""
            )
        )
        fingerprint = i.get("fingerprint_before") or (
            f"[{rec.subject}]" if rec.subject != "none" else ""
        )
        rows.append(
            [
                esc(i.get("field") or "–")
                + (f"<br><small>{esc(i.get('filename'))}</small>" if i.get("filename") else ""),
                f"{esc(i.get('format_before'))} {esc(i.get('width_before'))}×{esc(i.get('height_before'))}, {_size(i.get('bytes_before'))}",
                f"{esc(i.get('format_after'))} {esc(i.get('width_after'))}×{esc(i.get('height_after'))}, {_size(i.get('bytes_after'))}"
                + (" (downscaled)" if i.get("downscaled") else ""),
                esc(", ".join(f"{k} ({v})" for k, v in sorted(found.items())))
                or missing("none found"),
                faces,
                f'<code class="fp">{esc(str(fingerprint)[:16])}</code>'
                if fingerprint
                else missing(),
            ]
        )
    return html_table(
        ["Field", "Before", "As sent", "Metadata removed (tags)", "Faces", "Fingerprint"], rows
    )


def _chain(console: Console, rec: TransferRecord) -> str:
    entries = console.log.entries_of(rec.id)
    rows = [
        [
            num(e.seq),
            esc(e.kind),
            when(e.ts),
            f'<code class="fp" title="{esc(e.hash.hex())}">{esc(e.hash.hex()[:16])}</code>',
            f"signature {num(e.checkpoint)} ({when(e.checkpoint_ts)} UTC)"
            if e.checkpoint is not None
            else missing("not signed yet", warn=True),
        ]
        for e in entries
    ]
    return (
        html_table(
            ["Entry", "Kind", "Written (UTC)", "Entry hash", "Covered by"], rows, narrow=True
        )
        + '<p class="note">Each entry\'s hash covers the one before it; a signature covers '
        "every entry up to the one it names. Run verification on the overview to check them.</p>"
    )


# -- register ----------------------------------------------------------------------------------


def build_register(console: Console, progress: Callable[[int, int], None]) -> str:
    """The register's HTML (embedded in the page), from every transfer, subjects sealed;
    streamed through a handle of its own (the pages keep reading meanwhile)."""
    from veilpix.audit._register import register_body  # noqa: PLC0415 - loaded on use

    with console.reader() as log:
        total = log.counts()["records"]

        def records() -> Iterator[TransferRecord]:
            for done, rec in enumerate(log.iter_records(), start=1):
                if done % 5000 == 0:
                    progress(done, total)
                yield sealed_view(rec)

        verify = console.verify_job.result or log.verify()
        generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return register_body(
            records(),
            verify,
            log_path=console.log_name,
            generated=generated,
            title="Record of transfers (GDPR Art. 30)",
            register=console.settings.register,
            log_retention=console.settings.log_retention,
        )


def register(console: Console, request: Request, session: Session) -> Response:
    job = console.register_job
    if job.result is None and not job.running and job.error is None:
        job.start()
    if job.result is None:
        if job.error:
            return html(
                console,
                session,
                "Register",
                notice(f"Building the register failed: {esc(job.error)}", "bad"),
                "/register",
            )
        building = notice(
            f"Building the register from every transfer… {job.percent() or 0}%. "
            "This page reloads itself.",
            "info",
        )
        return html(console, session, "Register", building, "/register", refresh=2)
    tools = (
        '<div class="tools noprint">'
        f'<a class="button" href="/register.html" download>Download (HTML)</a> '
        f"<span>Built {when(_stamp(job.finished_at))} UTC.</span> "
        + button_form(
            "/register", "Build again", session.csrf, disabled="building" if job.running else None
        )
        + '<span class="hint">Print it with your browser (Ctrl+P): the page prints without the menus.</span></div>'
    )
    return html(
        console,
        session,
        "Register",
        tools + f'<div class="register">{job.result}</div>',
        "/register",
        heading=False,  # the register has its own
    )


def register_rebuild(console: Console, request: Request, session: Session) -> Response:
    console.register_job.start(by=session.user)
    return Response.redirect("/register")


def register_download(console: Console, request: Request, session: Session) -> Response:
    from veilpix.audit._register import wrap_page  # noqa: PLC0415 - loaded on use

    result = console.register_job.result
    if result is None:
        return Response.redirect("/register")
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    return Response(
        200,
        wrap_page(result, title="Record of transfers (GDPR Art. 30)").encode(),
        headers=[("Content-Disposition", f'attachment; filename="veilpix-register-{stamp}.html"')],
    )
