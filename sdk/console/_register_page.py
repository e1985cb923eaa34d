"""The register page: the Art. 30 register built in the background from every transfer
(streamed, subjects sealed), shown, rebuilt and downloaded as a self-contained page."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from veilpix.audit._html import esc, num, when
from veilpix.audit._records import Summary, TransferRecord, sealed_view
from veilpix.console._http import Request, Response
from veilpix.console._layout import button_form, notice
from veilpix.console._pages import html, stamp

if TYPE_CHECKING:
    from veilpix.console._app import Console
    from veilpix.console._auth import Session


def build_register(console: Console, progress: Callable[[int, int], None]) -> str:
    """The register's HTML (embedded in the page), from every transfer, subjects sealed;
    streamed through a handle of its own (the pages keep reading meanwhile)."""
    from veilpix.audit._register import register_body  # noqa: PLC0415 - loaded on use

    with console.reader() as log:
        total = log.counts()["records"]
        damaged: list[int] = []

        def records() -> Iterator[TransferRecord]:
            for done, rec in enumerate(log.iter_records(damaged=damaged), start=1):
                if done % 5000 == 0:
                    progress(done, total)
                try:  # (values of the wrong type: altered, left out and counted)
                    Summary().add(rec)
                except (ValueError, TypeError, KeyError, AttributeError):
                    damaged.append(rec.seq)
                    continue
                yield sealed_view(rec)

        verify = console.verify_job.result or log.verify()
        generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        body = register_body(
            records(),
            verify,
            log_path=console.log_name,
            generated=generated,
            title="Record of transfers (GDPR Art. 30)",
            register=console.settings.register,
            log_retention=console.settings.log_retention,
        )
    if damaged:
        body = (
            notice(
                f"{num(len(damaged))} transfer{'s' if len(damaged) != 1 else ''} hold values "
                "veilpix did not write (the log was altered) and are left out of this register; "
                "the overview's verification names the entries.",
                "bad",
            )
            + body
        )
    return body


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
        f"<span>Built {when(stamp(job.finished_at))} UTC.</span> "
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
