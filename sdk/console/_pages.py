"""The console's route table, and what its pages share: the frame (:func:`html`), the wait
for the index (:func:`index_ready`, :func:`waiting`), what a viewer may see of a record
(:func:`view`) and the outcome badge.

The pages, one module each: :mod:`~veilpix.console._overview`,
:mod:`~veilpix.console._transfers` (the list), :mod:`~veilpix.console._transfer` (one),
:mod:`~veilpix.console._lookup`, :mod:`~veilpix.console._register_page`,
:mod:`~veilpix.console._actions` and :mod:`~veilpix.console._login`. Overview and list read
the index (:mod:`veilpix.console._index`); a transfer's page, the lookup and the register
read the log. While the index is being built, the pages that need it say how far it got and
reload themselves (a ``<meta refresh>``: no script).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from veilpix.audit._html import esc, num
from veilpix.audit._records import TransferRecord, sealed_view
from veilpix.console._http import Request, Response
from veilpix.console._layout import notice, page

if TYPE_CHECKING:
    from veilpix.console._app import Console
    from veilpix.console._auth import Session

__all__ = [
    "OUTCOME_LABEL",
    "html",
    "index_ready",
    "outcome_badge",
    "routes",
    "stamp",
    "view",
    "waiting",
]

Handler = Callable[["Console", Request, "Session"], Response]
OUTCOME_LABEL = {
    "sent": "sent",
    "blocked": "blocked",
    "failed": "failed",
    "unknown": "outcome unknown",
}


def routes() -> dict[tuple[str, str], Handler]:
    from veilpix.console import (  # noqa: PLC0415 - they import this module
        _actions,
        _login,
        _lookup,
        _overview,
        _register_page,
        _transfer,
        _transfers,
    )

    return {
        ("GET", "/"): _overview.overview,
        ("GET", "/transfers"): _transfers.transfers,
        ("GET", "/transfers/*"): _transfer.transfer,
        ("GET", "/lookup"): _lookup.lookup_page,
        ("POST", "/lookup"): _lookup.lookup,
        ("GET", "/register"): _register_page.register,
        ("GET", "/register.html"): _register_page.register_download,
        ("POST", "/register"): _register_page.register_rebuild,
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


def waiting(  # noqa: PLR0917 - the page, and what it waits for
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


def view(console: Console, session: Session, rec: TransferRecord) -> TransferRecord:
    """``rec`` as this viewer may see it: subject-linked fields sealed unless allowed."""
    return rec if console.sees_subjects(session) else sealed_view(rec)


def outcome_badge(outcome: str) -> str:
    return f'<span class="badge o-{esc(outcome)}">{esc(OUTCOME_LABEL.get(outcome, outcome))}</span>'


def stamp(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
