"""Actions: erase a data subject, resolve an unknown outcome, verify the log, export
transfers. Each is a POST carrying the session's CSRF token (checked before it gets here).

Erase and resolve are asked twice: the first POST shows what would happen (how many
transfers, which record) and a confirmation button whose code binds exactly those
arguments to this session (:meth:`Session.seal`); only the second POST acts. Every action
that runs is itself an entry in the log (a ``review`` entry: who, what, when; never a
subject reference), written in the same commit as what it did, or, for an export, before
the first byte of it leaves.

A console started read-only (the default) shows the forms and says why they cannot be
used; verification still runs (it changes nothing) but is not recorded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from veilpix import __version__
from veilpix._errors import VeilpixError
from veilpix.audit._export import EXPORT_FORMATS
from veilpix.audit._export import export as write_export
from veilpix.audit._html import esc, html_table, missing, num, when
from veilpix.audit._records import sealed_view
from veilpix.console._http import Request, Response
from veilpix.console._layout import button_form, field, hidden, link, notice, select, url
from veilpix.console._pages import html, index_ready
from veilpix.console._transfers import read_filters

if TYPE_CHECKING:
    from veilpix.audit._entry import Outcome
    from veilpix.audit._records import TransferRecord
    from veilpix.console._app import Console
    from veilpix.console._auth import Session

__all__ = ["actions_page", "erase", "export", "resolve", "verify"]

_READ_ONLY = (
    "This console was started read-only: it changes nothing and records nothing. To erase, "
    "resolve or export, start it with <code>veilpix audit serve --allow-changes</code> where "
    "the log's key file is readable; every such action is then recorded in the log."
)
_EXPORT_TYPES = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "jsonl": ("application/x-ndjson; charset=utf-8", "jsonl"),
    "ocsf": ("application/x-ndjson; charset=utf-8", "ocsf.jsonl"),
}


def _by(session: Session, request: Request) -> str:
    """Who did it, as the log names them."""
    how = "login link" if session.via == "link" else "password"
    return f"{session.user} (console, {how}, from {request.client})"


def _disabled(console: Console) -> str | None:
    if not console.settings.changes:
        return "read-only console"
    return None


def _input(
    name: str, value: str = "", *, kind: str = "text", required: bool = True, **extra: str
) -> str:
    more = "".join(f' {k}="{esc(v)}"' for k, v in extra.items())
    req = " required" if required else ""
    return f'<input id="a-{esc(name)}" name="{esc(name)}" type="{kind}" value="{esc(value)}"{req}{more}>'


def _form(  # noqa: PLR0917 - a form is its action, content, button, state and anchor
    action: str, session: Session, inner: str, label: str, disabled: str | None, anchor: str
) -> str:
    off = " disabled" if disabled else ""
    why = f' <span class="why">{esc(disabled)}</span>' if disabled else ""
    return (
        f'<form method="post" action="{esc(action)}" id="{esc(anchor)}" class="action">'
        f"{hidden('csrf', session.csrf)}<fieldset{off}>{inner}"
        f'<button type="submit">{esc(label)}</button>{why}</fieldset></form>'
    )


def actions_page(
    console: Console, request: Request, session: Session, message: str = ""
) -> Response:
    disabled = _disabled(console)
    parts = [message]
    if disabled:
        parts.append(notice(_READ_ONLY, "info"))
    record = request.query.get("record", "")
    parts += [
        '<h2 id="h-erase">Erase a data subject (GDPR Art. 17)</h2>',
        '<p class="note">Destroys the subject\'s key: their subject and consent references, '
        "image and prompt fingerprints and any stored prompt become unreadable for good. A "
        "signed tombstone records the erasure (with your request reference, never the "
        "subject); the chain still verifies. You will be asked to confirm.</p>",
        _form(
            "/actions/erase",
            session,
            field(
                "Subject reference",
                _input("subject", autocomplete="off"),
                "as the app recorded it, e.g. customer-4711",
            )
            + field(
                "Request reference",
                _input("request", autocomplete="off"),
                "your reference of the erasure request, e.g. DSR-2026-118",
            ),
            "Erase…",
            disabled or (None if console.log.keys is not None else "needs the key file"),
            "erase",
        ),
        '<h2 id="h-resolve">Resolve an unknown outcome</h2>',
        '<p class="note">A transfer whose writer stopped mid-call stays "outcome unknown". '
        "Once you know what happened (the vendor's dashboard, the app's logs), record it. "
        + link(url("/transfers", {"outcome": "unknown"}), "List the open transfers")
        + ".</p>",
        _form(
            "/actions/resolve",
            session,
            field(
                "Record id",
                _input("record", record, autocomplete="off"),
                "the id or its first 8+ characters",
            )
            + field(
                "Outcome",
                select(
                    "outcome",
                    [("sent", "sent (it reached the vendor)"), ("failed", "failed (it did not)")],
                    None,
                    any_="choose…",
                ).replace("<select", "<select required", 1),
            )
            + field("How you know", _input("reason", autocomplete="off"), "kept in the log")
            + field(
                "HTTP status",
                _input("status", kind="number", required=False, min="100", max="599"),
                "if known",
            ),
            "Resolve…",
            disabled,
            "resolve",
        ),
        '<h2 id="h-verify">Verify the log</h2>',
        '<p class="note">Recompute every entry hash and link and check every signature. '
        + (
            "The result is recorded in the log."
            if not disabled
            else "The result is shown on the overview (not recorded: read-only)."
        )
        + "</p>",
        button_form("/actions/verify", "Verify now", session.csrf),
        '<h2 id="h-export">Export transfers</h2>',
        '<p class="note">For spreadsheets (CSV), scripts (JSON Lines) or a SIEM (OCSF API '
        "Activity events). The export takes the filters of the transfers list; "
        + link("/transfers", "filter there")
        + " and use its Export button, or export everything here. Subject references stay sealed"
        + (", unless you tick the box." if console.sees_subjects(session) else ".")
        + "</p>",
        export_form(console, session, {}),
        '<h2 id="h-history">Recorded actions</h2>',
        _history(console),
    ]
    return html(console, session, "Actions", "".join(parts), "/actions")


def export_form(console: Console, session: Session, kept: dict[str, str]) -> str:
    """The export form, carrying the list filters ``kept`` (from the transfers page)."""
    filters = "".join(hidden(k, v) for k, v in kept.items())
    subjects = ""
    if console.sees_subjects(session):
        subjects = (
            '<label class="check"><input type="checkbox" name="subjects" value="1"> '
            "include subject references and fingerprints</label>"
        )
    formats = select(
        "format", [("csv", "CSV"), ("jsonl", "JSON Lines"), ("ocsf", "OCSF")], "csv", any_="format…"
    )
    return _form(
        "/actions/export",
        session,
        filters + field("Format", formats.replace("<select", "<select required", 1)) + subjects,
        "Export",
        _disabled(console),
        "export",
    )


def _history(console: Console) -> str:
    rows = []
    for r in console.log.reviews(50):
        raw = r.get("facts")
        facts: dict[str, Any] = raw if isinstance(raw, dict) else {}
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(facts.items()) if v not in (None, "", {}))
        rows.append(
            [
                num(int(r["seq"])),
                when(r["ts"]),
                esc(r.get("action", "?")),
                esc(r.get("by", "?")),
                esc(shown) or missing(),
            ]
        )
    if not rows:
        return f"<p>{missing('No action was recorded yet.')}</p>"
    return html_table(["Entry", "When (UTC)", "Action", "By", "Details"], rows, narrow=True)


def _done(
    console: Console, request: Request, session: Session, text: str, tone: str = "ok"
) -> Response:
    request.query = {}
    return actions_page(console, request, session, notice(text, tone))


def _confirm(  # noqa: PLR0917 - the page, the question and the action it confirms
    console: Console, session: Session, title: str, what: str, action: str, args: dict[str, str]
) -> Response:
    code = session.seal(action, *(f"{k}={v}" for k, v in sorted(args.items())))
    fields = "".join(hidden(k, v) for k, v in args.items())
    body = (
        notice(what, "warn")
        + f'<form method="post" action="{esc(action)}" class="confirm">{hidden("csrf", session.csrf)}'
        f'{fields}{hidden("confirm", code)}<button type="submit" class="danger" autofocus>'
        f'Yes, {esc(title.lower())}</button> <a href="/actions">Cancel</a></form>'
    )
    return html(console, session, f"Confirm: {title}", body, "/actions")


def _confirmed(session: Session, form: dict[str, str], action: str, args: dict[str, str]) -> bool:
    """Whether this POST confirms exactly ``args`` (once: the code is spent)."""
    return session.spend_seal(
        form.get("confirm"), action, *(f"{k}={v}" for k, v in sorted(args.items()))
    )


def _refuse(console: Console, request: Request, session: Session, text: str) -> Response:
    response = _done(console, request, session, esc(text), "bad")
    response.status = 403 if not console.settings.changes else 400
    return response


def erase(console: Console, request: Request, session: Session) -> Response:
    if _disabled(console):
        return _refuse(console, request, session, "This console is read-only.")
    form = request.form()
    subject, ref = form.get("subject", "").strip(), form.get("request", "").strip()
    if not subject or not ref:
        return _refuse(
            console, request, session, "Give the subject reference and your request reference."
        )
    args = {"subject": subject, "request": ref}
    if not _confirmed(session, form, "/actions/erase", args):
        if console.sees_subjects(session):
            n = sum(1 for _ in console.log.records(subject=subject))
            what = (
                f"Erase the subject-linked fields of <b>{num(n)}</b> transfer"
                f"{'s' if n != 1 else ''} for request <b>{esc(ref)}</b>? This cannot be undone."
                if n
                else "No transfer is linked to this subject (never logged, or already erased). "
                f"Record the request <b>{esc(ref)}</b> as handled anyway?"
            )
        else:  # (how many transfers a subject has is theirs to know, and the erasure's)
            what = (
                "Erase the subject-linked fields of every transfer linked to this subject, "
                f"for request <b>{esc(ref)}</b>? This cannot be undone. The count is shown "
                "after the erasure, and recorded with it."
            )
        return _confirm(console, session, "Erase", what, "/actions/erase", args)
    with console.open_writer() as log:
        done = log.erase(subject, request_ref=ref, by=_by(session, request), via="console")
    console.register_job.result = None  # what it shows of subjects changed
    text = (
        f"Erased the subject-linked fields of {num(done.records)} transfer"
        f"{'s' if done.records != 1 else ''}; tombstone at entry {num(done.tombstone_seq or 0)}."
        if done.records
        else "No transfer was linked to this subject; the request is recorded."
    )
    if done.records and not done.physically_overwritten:
        text += (
            " Another process still reads the log: the key's old bytes are overwritten on "
            "the disk when it closes."
        )
    return _done(console, request, session, esc(text))


def resolve(console: Console, request: Request, session: Session) -> Response:
    if _disabled(console):
        return _refuse(console, request, session, "This console is read-only.")
    form = request.form()
    record, outcome = form.get("record", "").strip(), form.get("outcome", "")
    reason, status_text = form.get("reason", "").strip(), form.get("status", "").strip()
    if outcome not in ("sent", "failed") or not record or not reason:
        return _refuse(
            console,
            request,
            session,
            "Give the record id, the outcome (sent or failed) and how you know.",
        )
    try:
        status = int(status_text) if status_text else None
        if status is not None and not 100 <= status <= 599:
            raise ValueError(status_text)
    except ValueError:
        return _refuse(console, request, session, "The HTTP status is a number from 100 to 599.")
    try:
        rec = console.log.get(record)
    except VeilpixError as exc:
        return _refuse(console, request, session, str(exc))
    if rec.outcome != "unknown":
        return _refuse(
            console, request, session, f"Transfer {rec.id} already has an outcome ({rec.outcome})."
        )
    args = {"record": rec.id, "outcome": outcome, "reason": reason, "status": status_text}
    if not _confirmed(session, form, "/actions/resolve", args):
        what = (
            f"Record transfer <code>{esc(rec.id)}</code> (begun {when(rec.begun)} UTC, to "
            f"{esc(rec.where.get('vendor') or '?')}) as <b>{esc(outcome)}</b>, because: "
            f"{esc(reason)}?"
        )
        return _confirm(console, session, "Resolve", what, "/actions/resolve", args)
    chosen: Outcome = "sent" if outcome == "sent" else "failed"
    with console.open_writer() as log:
        log.resolve(
            rec.id,
            outcome=chosen,
            reason=reason,
            status=status,
            by=_by(session, request),
            via="console",
        )
    return _done(
        console,
        request,
        session,
        f"Transfer <code>{esc(rec.id)}</code>: outcome recorded as {esc(outcome)}.",
    )


def verify(console: Console, request: Request, session: Session) -> Response:
    console.verify_job.start(by=_by(session, request))
    return Response.redirect("/#h-int")


def _stream(records: Iterator[TransferRecord], fmt: str) -> Iterator[bytes]:
    """The export as chunks, written by a thread into a small queue (a million transfers
    never sit in memory at once)."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=64)
    stop = threading.Event()

    class Pipe:
        def __init__(self) -> None:
            self.buf: list[str] = []
            self.size = 0

        def write(self, text: str) -> int:
            if stop.is_set():
                raise BrokenPipeError("the download was cancelled")
            self.buf.append(text)
            self.size += len(text)
            if self.size >= 1 << 16:
                self.flush()
            return len(text)

        def flush(self) -> None:
            if self.buf:
                chunks.put("".join(self.buf).encode())
                self.buf, self.size = [], 0

    def produce() -> None:
        pipe = Pipe()
        try:
            write_export(records, fmt, pipe, product_version=__version__)  # type: ignore[arg-type]
            pipe.flush()
            chunks.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            chunks.put(exc)

    threading.Thread(target=produce, name="console-export", daemon=True).start()
    try:
        while True:
            item = chunks.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not chunks.empty():  # let a blocked writer see the stop
            chunks.get_nowait()


def export(console: Console, request: Request, session: Session) -> Response:
    if _disabled(console):
        return _refuse(
            console,
            request,
            session,
            "This console is read-only: exports are recorded in the log, which needs --allow-changes.",
        )
    form = request.form()
    fmt = form.get("format", "")
    if fmt not in EXPORT_FORMATS:
        return _refuse(console, request, session, "Choose a format: CSV, JSON Lines or OCSF.")
    if not index_ready(console):
        return _refuse(
            console,
            request,
            session,
            "The transfers are still being indexed; try again in a moment.",
        )
    f, kept = read_filters(form)
    subjects = form.get("subjects") == "1" and console.sees_subjects(session)
    seqs = console.index.select(f)
    facts: dict[str, Any] = {
        "format": fmt,
        "records": len(seqs),
        "filters": kept,
        "subjects": subjects,
    }
    with console.open_writer() as log:
        log.note("export", by=_by(session, request), via="console", facts=facts)

    def records() -> Iterator[TransferRecord]:
        for i in range(0, len(seqs), 1000):
            for rec in console.log.records_at(seqs[i : i + 1000]):
                yield rec if subjects else sealed_view(rec)

    kind, suffix = _EXPORT_TYPES[fmt]
    name = f"veilpix-transfers.{suffix}"
    return Response(
        200,
        b"",
        kind,
        [("Content-Disposition", f'attachment; filename="{name}"')],
        stream=_stream(records(), fmt),
    )
