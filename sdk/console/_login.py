"""Signing in and out: the one-time login link, the password form (remote access), and the
sign-out button."""

from __future__ import annotations

from typing import TYPE_CHECKING

from veilpix.audit._html import esc
from veilpix.console._app import COOKIE
from veilpix.console._auth import Session
from veilpix.console._http import Request, Response
from veilpix.console._layout import field, notice, page

if TYPE_CHECKING:
    from veilpix.console._app import Console

__all__ = ["login", "logout"]


def _cookie(value: str, *, secure: bool, end: bool = False) -> tuple[str, str]:
    """The session cookie: for this browser session only (the server ends the session after
    its idle and total limits), or deleted (``end``)."""
    flags = "; Secure" if secure else ""
    if end:
        flags += "; Max-Age=0"
    return ("Set-Cookie", f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{flags}")


def _signed_in(console: Console, session: Session, request: Request) -> Response:
    response = Response.redirect("/")
    response.headers.append(_cookie(session.id, secure=console.secure(request)))
    return response


def _form(console: Console, message: str = "", tone: str = "bad") -> str:
    note = notice(esc(message), tone) if message else ""
    token = (
        '<form method="post" action="/login" class="login">'
        + field(
            "Login token",
            '<input id="token" name="token" type="password" autocomplete="off" required>',
            "the token from the URL veilpix audit serve printed",
        )
        + '<button type="submit">Sign in</button></form>'
    )
    password = ""
    if console.settings.users:
        password = (
            '<h2>With a user name</h2><form method="post" action="/login" class="login">'
            + field(
                "User",
                '<input id="user" name="user" autocomplete="username" required>',
            )
            + field(
                "Password",
                '<input id="password" name="password" type="password" '
                'autocomplete="current-password" required>',
            )
            + '<button type="submit">Sign in</button></form>'
        )
    return (
        f"{note}<p>Open the login link <code>veilpix audit serve</code> printed, or paste its "
        "token here. A link works once; press Enter where the console runs for a new one.</p>"
        f"{token}{password}"
    )


def login(console: Console, request: Request) -> Response:
    client = console.client(request)
    if request.method == "HEAD":  # (never a sign-in, never a failed one)
        return Response(200, page("Sign in", _form(console), None).encode())
    if request.method == "GET":
        token = request.query.get("token")
        if token is None:
            return Response(200, page("Sign in", _form(console), None).encode())
        session = console.sessions.redeem(token, user=console.settings.local_user, client=client)
        if session is None:
            text = "This login link was used already or has expired. Press Enter where the console runs for a new one."
            return Response(403, page("Sign in", _form(console, text), None).encode())
        return _signed_in(console, session, request)
    wait = console.sessions.wait_before_login(client)
    if wait:
        text = f"Too many failed sign-ins from this address; try again in {wait:.0f} s."
        return Response(
            429,
            page("Sign in", _form(console, text), None).encode(),
            headers=[("Retry-After", str(int(wait) + 1))],
        )
    form = request.form()
    # counted as failed before it is checked (concurrent guesses all count), cleared on success
    console.sessions.failed(client)
    session = None
    if form.get("token"):
        session = console.sessions.redeem(
            form["token"].strip(), user=console.settings.local_user, client=client
        )
    elif form.get("user") and form.get("password") is not None:
        user = form["user"]
        checked = console.login_password(user, form["password"])
        if checked is None:  # too many password checks at once
            return Response(
                429,
                page("Sign in", _form(console, "Busy: try again in a moment."), None).encode(),
                headers=[("Retry-After", "2")],
            )
        if checked:
            session = console.sessions.start(user, via="password", client=client)
    if session is None:
        text = "That did not work: check the token, or the user name and password."
        return Response(403, page("Sign in", _form(console, text), None).encode())
    console.sessions.succeeded(client)
    return _signed_in(console, session, request)


def logout(console: Console, request: Request, session: Session) -> Response:
    console.sessions.end(session.id)
    response = Response(
        200,
        page(
            "Signed out",
            notice("You are signed out.", "ok") + '<p><a href="/login">Sign in again</a></p>',
            None,
        ).encode(),
    )
    response.headers.append(_cookie("", secure=console.secure(request), end=True))
    return response
