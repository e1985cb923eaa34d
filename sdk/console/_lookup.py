""" "Was this photo sent?": a photo dropped onto the page (or chosen with the file field) is
fingerprinted in memory with the log's key and the transfers that sent it are listed.

The bytes are held only for the request: never written anywhere, never logged, and not
kept after the answer. A match needs the very same file, as it was handed to veilpix or as
veilpix sent it; a re-saved or resized copy is a different file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from veilpix.audit._html import esc, html_table, num
from veilpix.console._http import MAX_BODY, Request, Response
from veilpix.console._layout import hidden, notice
from veilpix.console._pages import html, view
from veilpix.console._transfers import RECORD_HEADERS, record_rows

if TYPE_CHECKING:
    from veilpix.console._app import Console
    from veilpix.console._auth import Session

__all__ = ["lookup", "lookup_page"]

SHOWN = 200  # matches listed (all are counted)

_ABOUT = (
    '<p class="lead">Drop a photo here to see whether veilpix sent it, when, to whom and why. '
    "It is fingerprinted in this console's memory with the log's key and then let go: it is "
    "not stored, not logged and not sent anywhere.</p>"
)


def _form(session: Session) -> str:
    return (
        '<form method="post" action="/lookup" enctype="multipart/form-data" class="drop" '
        'id="lookup-form">'
        + hidden("csrf", session.csrf)
        + '<label for="photo" class="dropzone" id="dropzone"><span class="big">Drop a photo '
        "here</span><span>or choose a file</span>"
        f'<input type="file" id="photo" name="photo" required></label>'
        '<button type="submit">Look it up</button>'
        f'<p class="hint">The exact file as the app handed it to veilpix, or as veilpix sent '
        f"it (up to {MAX_BODY >> 20} MiB). A re-saved, resized or re-sent copy is a different "
        "file and will not match.</p></form>"
    )


def lookup_page(console: Console, request: Request, session: Session) -> Response:
    body = _ABOUT
    if console.log.keys is None:
        body += notice(
            "The lookup needs the log's key file (the log holds keyed fingerprints only), and "
            "this console could not read it. Start it where the key file is readable, or "
            "with --key FILE.",
            "warn",
        )
    return html(console, session, "Was this photo sent?", body + _form(session), "/lookup")


def lookup(console: Console, request: Request, session: Session) -> Response:
    files = request.files()
    if "photo" in files:
        name, data = files["photo"]
    elif request.headers.get("content-type", "").startswith("application/octet-stream"):
        name, data = "", request.body
    else:
        name, data = "", b""
    if not data:
        body = notice("Choose a photo first (the file was empty or missing).", "warn")
        return html(
            console, session, "Was this photo sent?", _ABOUT + body + _form(session), "/lookup"
        )
    if console.log.keys is None:
        return lookup_page(console, request, session)
    size = len(data)
    records, total = console.log.image_matches(data, limit=SHOWN)
    found = [view(console, session, r) for r in records]
    del data  # (the request still holds it until the answer is sent; then it is gone)
    label = f"<b>{esc(name)}</b> ({num(size)} bytes)" if name else f"the photo ({num(size)} bytes)"
    if not found:
        result = notice(
            f"No transfer in this log sent {label}. (The log may have been pruned, or the "
            "photo was changed before it reached veilpix.)",
            "ok",
        )
    else:
        left = [r for r in found if r.outcome != "blocked"]
        blocked = len(found) - len(left)
        if total > len(found):  # (counted in all; the newest shown)
            head = (
                f"{label} is in <b>{num(total)}</b> recorded calls; the newest {num(len(found))}"
                " are listed. Filter the transfers list to see them by time, vendor or app."
            )
        elif left:
            also = (
                f", and was stopped {num(blocked)} time{'s' if blocked != 1 else ''} by policy"
                if blocked
                else ""
            )
            head = (
                f"{label} was sent in <b>{num(len(left))}</b> transfer"
                f"{'s' if len(left) != 1 else ''}{also} (newest first):"
            )
        else:
            head = f"{label} was never sent: every call with it was blocked by policy:"
        result = notice(head, "warn" if left else "ok") + html_table(
            RECORD_HEADERS, record_rows(found), numeric=(6, 7)
        )
    return html(
        console, session, "Was this photo sent?", _ABOUT + result + _form(session), "/lookup"
    )
