"""Putting a console on a socket: the address rules (loopback unless allowed otherwise,
with users and a TLS warning), the ``Host`` names it answers to, TLS, and the login link.
``veilpix audit serve`` (:mod:`veilpix.cli._audit_serve`) and the tests start it here."""

from __future__ import annotations

import ipaddress
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from veilpix._errors import ConfigError
from veilpix._net import is_loopback
from veilpix.console._app import Console
from veilpix.console._http import Server

__all__ = ["Running", "check_address", "start"]


def check_address(host: str, *, allow_remote: bool, users: int, tls: bool) -> str | None:
    """Refuse an address the console must not listen on; the warning to print, if any."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise ConfigError(
            f"the console listens on loopback only; {host!r} would open it to the network",
            hint="add --allow-remote (and users under [console.users]) if that is what you want",
        )
    if not users:
        raise ConfigError(
            "remote access needs at least one user with a password",
            hint="make a hash with: veilpix audit serve --hash-password, and put it under "
            '[console.users] in veilpix.toml (name = "scrypt$...")',
        )
    if not tls:
        return (
            "WARNING: the console is reachable from the network without TLS: passwords and "
            "the personal data on its pages cross the network in clear text. Serve it behind "
            "a TLS proxy, or pass --tls-cert and --tls-key."
        )
    return None


def _hosts(host: str, port: int, public_url: str | None = None) -> frozenset[str]:
    """The ``Host`` header values the console answers to: its ``public_url``'s, else the
    loopback names of its port (none: any, for a remote console without a public URL)."""
    if public_url:
        parts = urlsplit(public_url)
        default = 443 if parts.scheme == "https" else 80
        name = parts.netloc.lower()
        return frozenset({name, f"{name}:{default}"} if parts.port is None else {name})
    if not is_loopback(host):
        return frozenset()
    names = {"127.0.0.1", "localhost", "[::1]"}
    try:
        if ipaddress.ip_address(host).version == 6:
            names.add(f"[{host}]")
        else:
            names.add(host)
    except ValueError:
        names.add(host.lower())
    return frozenset({f"{n}:{port}" for n in names} | ({*names} if port in (80, 443) else set()))


@dataclass
class Running:
    """A console being served: its server, thread and the base URL of its pages."""

    console: Console
    server: Server
    thread: threading.Thread
    url: str

    def login_url(self) -> str:
        return f"{self.url}/login?token={self.console.sessions.new_link()}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate and key: {exc}") from exc
    return context


def start(
    console: Console,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    access_log: Callable[[str, str, int], None] | None = None,
) -> Running:
    """Serve ``console`` on ``host``:``port`` (0: any free port) in a thread of its own,
    after the address rules (:func:`check_address` is the caller's, with its warning)."""

    context = _tls(tls_cert, tls_key)
    try:
        server = Server(
            (host, port),
            console,
            body_limit=console.body_limit,
            trusted_proxy=console.settings.public_url is not None,
            tls=context,
            access_log=access_log,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="choose another --port (0 picks a free one)",
        ) from exc
    hosts = _hosts(host, server.port, console.settings.public_url)
    console.settings = replace(console.settings, hosts=hosts)
    thread = threading.Thread(target=server.serve_forever, name="console-server", daemon=True)
    thread.start()
    console.start()
    shown = f"[{host}]" if ":" in host else host
    if shown in ("0.0.0.0", "[::]"):  # noqa: S104 - naming what was bound, not binding
        shown = "127.0.0.1"
    scheme = "https" if context is not None else "http"
    url = console.settings.public_url or f"{scheme}://{shown}:{server.port}"
    return Running(console, server, thread, url)
