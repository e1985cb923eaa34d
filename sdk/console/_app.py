"""The console application: a function from a :class:`Request` to a :class:`Response`.

It owns what every page needs: the log (opened read-only; an action that changes it opens
a writer for that action only), the index of transfers, the background jobs (index, verify,
register), the sessions and the settings. :meth:`Console.__call__` checks, in this order:

1. the ``Host`` header names the address the console listens on (a page on another site
   that rebinds its name to 127.0.0.1 gets nothing);
2. static files and the login page need no session; everything else does (a page sends
   the browser to the login page, a form gets 403);
3. every POST carries the session's CSRF token, and its ``Origin`` (when sent) is the
   console's own;
4. then the page or action answers.

Every answer carries the security headers of :data:`SECURITY_HEADERS`: a
Content-Security-Policy that allows the console's own files only, no framing, no referrer,
no caching of pages that show personal data.
"""

from __future__ import annotations

import hmac
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from veilpix import __version__
from veilpix._errors import ConfigError, VeilpixError
from veilpix._net import is_loopback
from veilpix._passwords import check_password
from veilpix.audit._entry import login_name
from veilpix.audit._register import EEA
from veilpix.console import _static
from veilpix.console._auth import Session, Sessions
from veilpix.console._http import FORM_BODY, MAX_BODY, Request, Response
from veilpix.console._index import Index
from veilpix.console._jobs import Job
from veilpix.console._layout import Frame, notice, page

Handler = Callable[["Console", Request, Session], Response]

if TYPE_CHECKING:
    from veilpix._config_review import RegisterConfig
    from veilpix.audit._log import AuditLog
    from veilpix.audit._verify import VerifyResult

__all__ = ["SECURITY_HEADERS", "Console", "Settings"]

COOKIE = "veilpix_console"
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    # (same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on the
    # console's own forms, and the origin check below could not tell them from a sandbox)
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)
# A password check for a user name nobody has, so an unknown name costs what a known one does.
_NOBODY = "scrypt$32768$8$1$dmVpbHBpeC1ub2JvZHk=$" + "A" * 86 + "=="


@dataclass(frozen=True)
class Settings:
    """How the console runs.

    ``changes``: actions that write the log (erase, resolve, exports, recorded
    verification) are enabled (``--allow-changes``; needs the key file).
    ``show_subjects``: who sees subject and consent references and the fingerprints linked
    to a subject (True: everyone signed in; a set: those users; False: nobody, they stay
    sealed as in exports). ``users``: user name -> password hash, for password sign-in
    (remote access). ``hosts``: the ``Host`` values the console answers to (empty: any).
    """

    changes: bool = False
    show_subjects: bool | frozenset[str] = False
    users: Mapping[str, str] = field(default_factory=dict)
    hosts: frozenset[str] = frozenset()
    # the address browsers use when a TLS proxy is in front (https://console.example.com):
    # the origin forms must come from, and the proxy's X-Forwarded-For is believed
    public_url: str | None = None
    local_user: str = field(default_factory=login_name)  # who a login link signs in
    config_path: str | None = None
    key_path: str | None = None
    register: RegisterConfig | None = None
    log_retention: str | None = None  # [log] retention, which the register states
    # opens the log for writing (an action's writer), given by whoever opened the log
    open_writer: Callable[[], AuditLog] | None = None


class Console:
    """The console for ``log`` (open read-only). Start :meth:`start` to build the index
    and run the first verification in the background; call it with requests."""

    def __init__(self, log: AuditLog, settings: Settings) -> None:
        from veilpix.console import _pages, _register_page  # noqa: PLC0415 - they import this

        self.log = log
        self.settings = settings
        self.sessions = Sessions()
        self.index = Index(log, EEA)  # (the register's: ISO codes and the EU's "EL")
        self.index_job: Job[None] = Job("index", self.index.build)
        self.verify_job: Job[VerifyResult] = Job("verify", self._verify)
        self.register_job: Job[str] = Job(
            "register", lambda p: _register_page.build_register(self, p)
        )
        self.log_name = log.short_name
        self._routes = _pages.routes()
        self._checks = threading.BoundedSemaphore(2)  # password checks at once

    def start(self) -> None:
        self.index_job.start()
        self.verify_job.start()

    def open_writer(self) -> AuditLog:
        """The log opened for writing, for one action (the console reads through its own
        read-only handle)."""
        if not self.settings.changes or self.settings.open_writer is None:
            raise ConfigError("this console is read-only", hint="start it with --allow-changes")
        return self.settings.open_writer()

    def reader(self) -> AuditLog:
        """The log on a read-only handle of its own, for long work in the background (the
        pages' handle stays free)."""
        from veilpix.audit._log import AuditLog  # noqa: PLC0415 - the module is loaded already

        return AuditLog(self.log.address, readonly=True, key_path=self.log.key_path)

    def _verify(self, _progress: Callable[[int, int], None]) -> VerifyResult:
        """Verify the log; when a person asked and the console may write, record the result
        (a ``review`` entry: the outcome, the head and how many problems, no more)."""
        with self.reader() as log:
            result = log.verify()
        by = self.verify_job.by
        if by is not None and self.settings.changes:
            facts = {
                "ok": result.ok,
                "intact": result.intact,
                "entries": result.entries,
                "head": result.head,
                "problems": len(result.problems),
            }
            with self.open_writer() as log:
                log.note("verify", by=by, via="console", facts=facts)
        return result

    # -- who is asking -----------------------------------------------------------------------

    def sees_subjects(self, session: Session) -> bool:
        allowed = self.settings.show_subjects
        if isinstance(allowed, bool):
            return allowed and self.log.keys is not None
        return session.user in allowed and self.log.keys is not None

    def frame(self, session: Session) -> Frame:
        return Frame(session.user, session.csrf, self.settings.changes, self.log_name, __version__)

    def login_password(self, user: str, password: str) -> bool | None:
        """Whether ``password`` is ``user``'s; None when two checks run already (each costs
        32 MiB and a tenth of a second: a flood of guesses must not take the machine)."""
        if not self._checks.acquire(blocking=False):
            return None
        try:
            stored = self.settings.users.get(user)
            ok = check_password(password, stored or _NOBODY)
        finally:
            self._checks.release()
        return ok and stored is not None

    def client(self, request: Request) -> str:
        """Who is asking: the peer's address, or, behind the TLS proxy ``public_url`` names
        (a peer on loopback), the last address of its ``X-Forwarded-For``."""
        forwarded = request.headers.get("x-forwarded-for")
        if self.settings.public_url and forwarded and is_loopback(request.client):
            return forwarded.split(",")[-1].strip()[:64] or request.client
        return request.client

    def secure(self, request: Request) -> bool:
        """Whether the browser reaches the console over HTTPS (its cookie is Secure then)."""
        return request.tls or (self.settings.public_url or "").startswith("https://")

    # -- the request pipeline ----------------------------------------------------------------

    def body_limit(self, request: Request) -> int:
        """How large a body ``request`` (its head: the body is not read yet) may send: a
        photo for the lookup from a signed-in viewer, a small form from anyone else."""
        if (
            request.method == "POST"
            and request.path == "/lookup"
            and self._host_ok(request)
            and self.sessions.get(request.cookies.get(COOKIE), touch=False) is not None
        ):
            return MAX_BODY
        return FORM_BODY

    def _host_ok(self, request: Request) -> bool:
        hosts = self.settings.hosts
        return not hosts or request.headers.get("host", "").lower() in hosts

    def __call__(self, request: Request) -> Response:
        try:
            response = self._answer(request)
        except VeilpixError as exc:
            response = self.error(request, 400, str(exc))
        except Exception as exc:  # noqa: BLE001 - an answer, with the headers, not a dead thread
            print(f"veilpix console: {type(exc).__name__}: {exc}", file=sys.stderr)
            response = self.error(
                request, 500, "something went wrong; the error is on the console's terminal"
            )
        own = {name.lower() for name, _ in response.headers}
        response.headers[:0] = [(k, v) for k, v in SECURITY_HEADERS if k.lower() not in own]
        return response

    def _answer(self, request: Request) -> Response:
        if not self._host_ok(request):
            return Response(421, b"this console does not answer to that host name\n", "text/plain")
        if request.path.startswith("/static/"):
            return _static.serve(request.path)
        if request.path == "/favicon.ico":  # (browsers ask; there is none)
            return Response(204, b"", "text/plain")
        if request.method not in ("GET", "HEAD", "POST"):
            return Response(405, b"method not allowed\n", "text/plain", [("Allow", "GET, POST")])
        if request.method == "POST" and not self._same_origin(request):
            return self.error(request, 403, "this form came from another site")
        if request.path == "/login":
            from veilpix.console._login import login  # noqa: PLC0415 - one page, loaded on use

            return login(self, request)
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "POST":
                return self.error(request, 403, "you are signed out; sign in again")
            return Response.redirect("/login")
        if request.method == "POST" and not session.check_csrf(
            request.form().get("csrf") or request.headers.get("x-csrf-token")
        ):
            return self.error(
                request, 403, "this form is stale or not from this console; reload the page"
            )
        handler = self._route(request)
        if handler is None:
            return self.error(request, 404, "there is no such page", session)
        return handler(self, request, session)

    def _route(self, request: Request) -> Handler | None:
        method, path = ("GET" if request.method == "HEAD" else request.method), request.path
        found = self._routes.get((method, path))
        if found is None and path.startswith("/transfers/") and method == "GET":
            found = self._routes.get(("GET", "/transfers/*"))
        return found

    def _same_origin(self, request: Request) -> bool:
        """A POST must come from the console's own pages: ``Sec-Fetch-Site`` (when the
        browser sends it) is same-origin, and ``Origin`` (when sent) is this host; an
        ``Origin: null`` (a sandboxed frame, a privacy setting) passes only when the
        browser's fetch metadata vouches for it."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        if origin is None:
            return True
        if origin == "null":
            return site == "same-origin"
        scheme = "https" if request.tls else "http"
        expected = self.settings.public_url or f"{scheme}://{request.headers.get('host', '')}"
        expected = expected.rstrip("/").lower()
        return hmac.compare_digest(origin.lower().encode(), expected.encode())

    def error(
        self, request: Request, status: int, text: str, session: Session | None = None
    ) -> Response:
        from veilpix.audit._html import esc  # noqa: PLC0415

        frame = self.frame(session) if session is not None else None
        body = notice(esc(text), "bad") + '<p><a href="/">Back to the overview</a></p>'
        html = page(
            {400: "Cannot do that", 403: "Not allowed", 404: "Not found"}.get(status, "Error"),
            body,
            frame,
        )
        return Response(status, html.encode())
