"""The transfers list: its filters (read from the query, kept in links), keyset pages
of the index newest first, and the rows every list of transfers shows (also the lookup's)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from veilpix.audit._html import esc, html_table, missing, nbytes, num, when
from veilpix.audit._records import TransferRecord
from veilpix.console._http import Request, Response
from veilpix.console._index import OUTCOMES, Filters
from veilpix.console._layout import field, link, notice, select, url
from veilpix.console._pages import OUTCOME_LABEL, html, index_ready, outcome_badge, view, waiting

if TYPE_CHECKING:
    from veilpix.console._app import Console
    from veilpix.console._auth import Session

PAGE_SIZE = 50
MENU_LIMIT = 200  # values a filter menu lists; more, and it is a text field


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
                [(o, OUTCOME_LABEL[o]) for o in OUTCOMES],
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


def fetch(console: Console, session: Session, seqs: list[int]) -> list[TransferRecord | int]:
    """The transfers at ``seqs`` as this viewer may see them; the seq alone for one whose
    entry veilpix cannot read (altered: verification names it)."""
    damaged: list[int] = []
    found = {
        r.seq: view(console, session, r) for r in console.log.records_at(seqs, damaged=damaged)
    }
    return [found.get(seq, seq) for seq in seqs if seq in found or seq in damaged]


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
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # (values of the wrong type in a row veilpix wrote would be a bug: say which)
            print(
                f"veilpix console: transfer {rec.id}: {type(exc).__name__}: {exc}", file=sys.stderr
            )
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
        return waiting(console, session, "Transfers", "indexing the transfers", "/transfers")
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


# -- one transfer --------------------------------------------------------------------------------
