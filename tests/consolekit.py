"""Builders for console tests: a real log with transfers of every outcome (and hostile values
in every field a caller can choose), a :class:`Console` on it, and :class:`Client`, a
browser stand-in that calls the console's application directly (no socket): it keeps the
session cookie, reads the CSRF token off the last page and follows redirects when asked."""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import auditkit
from veilpix import AuditLog
from veilpix.console import Console, Settings
from veilpix.console._http import Request, Response

HOSTILE = '<script>alert("x")</script>&\'"'
HOST = "127.0.0.1:8790"


def fill_log(path: Path | str, n: int = 12, *, hostile: bool = True) -> dict[str, Any]:
    """``n`` sent transfers, one blocked, one failed, one left open (outcome unknown), one
    linked to a data subject, and (``hostile``) one whose app, purpose, legal basis, actor and
    legal entity are markup. Returns what was written: ids by kind."""
    out: dict[str, Any] = {}
    with AuditLog(path) as log:
        out["sent"] = auditkit.fill(log, n)
        out["blocked"] = log.block(
            auditkit.transfer(1, country="CN"),
            reason="country not allowed",
            rule="allowed_countries",
        )
        failed = log.begin(auditkit.transfer(2))
        failed.finish(outcome="failed", reason="connection reset")
        out["failed"] = failed.id
        out["open"] = log.begin(auditkit.transfer(4, app="batch")).id
        subject = log.begin(
            auditkit.transfer(5, subject_ref="customer-4711", consent_ref="CONSENT-9")
        )
        subject.finish(status=200)
        out["subject"] = subject.id
        if hostile:
            evil = log.begin(
                auditkit.transfer(
                    7,
                    app=HOSTILE,
                    purpose=HOSTILE,
                    legal_basis=HOSTILE,
                    actor=HOSTILE,
                    legal_entity=HOSTILE,
                    country="US",
                )
            )
            evil.finish(status=200, reason=HOSTILE)
            out["hostile"] = evil.id
    return out


def console(path: Path | str, **settings: Any) -> Console:
    """A console on the log at ``path`` (read-only handle; a writer per action when
    ``changes=True``), its index built and its first verification done."""
    log = AuditLog(path, readonly=True)
    settings.setdefault("open_writer", lambda: AuditLog(path))
    settings.setdefault("hosts", frozenset({HOST}))
    settings.setdefault("local_user", "compliance")
    c = Console(log, Settings(**settings))
    c.start()
    c.index_job.wait(30)
    c.verify_job.wait(30)
    return c


class Client:
    """Requests to ``console``'s application, as a browser on its page would send them."""

    def __init__(self, app: Console, *, client: str = "127.0.0.1") -> None:
        self.app = app
        self.cookies: dict[str, str] = {}
        self.client = client
        self.last: Response | None = None

    def login(self) -> Client:
        token = self.app.sessions.new_link()
        r = self.get(f"/login?token={token}")
        assert r.status == 303, r.status
        return self

    def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        *,
        follow: bool = False,
    ) -> Response:
        sent = [("Host", HOST)]
        if self.cookies:
            sent.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        r = self.app(Request.of(method, target, [*sent, *headers], body, client=self.client))
        for name, value in r.headers:
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                val = rest.split(";")[0]
                if "Max-Age=0" in value:
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = val
        self.last = r
        if follow and r.status in (302, 303):
            return self.get(r.header("Location") or "/")
        return r

    def get(self, target: str, **kw: Any) -> Response:
        return self.request("GET", target, **kw)

    def post(
        self, target: str, fields: dict[str, str] | None = None, *, csrf: bool = True, **kw: Any
    ) -> Response:
        data = dict(fields or {})
        if csrf and "csrf" not in data:
            data["csrf"] = self.csrf()
        body = urlencode(data).encode()
        headers = [("Content-Type", "application/x-www-form-urlencoded"), *kw.pop("headers", [])]
        return self.request("POST", target, body, headers, **kw)

    def csrf(self) -> str:
        """The CSRF token of the signed-in session (as its pages carry it)."""
        page = self.get("/actions").body.decode()
        found = re.search(r'name="csrf" value="([^"]+)"', page)
        assert found, "no CSRF token on the page"
        return unescape(found.group(1))


def text(r: Response) -> str:
    return r.body.decode()


def hidden_fields(page: str, action: str) -> dict[str, str]:
    """The hidden fields of the form posting to ``action`` on ``page``."""
    at = page.index(f'action="{action}"')
    end = page.index("</form>", at)
    return {
        unescape(k): unescape(v)
        for k, v in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page[at:end])
    }
