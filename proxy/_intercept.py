"""The intercept proxy: an HTTP CONNECT proxy for apps that can only be given ``HTTPS_PROXY``
(``veilpix proxy --intercept``, docs/intercept.md).

For each ``CONNECT host:port``:

- a vendor host (an adapter claims it, or a configured base URL names it) that the local CA
  may sign for: the proxy answers ``200``, terminates TLS with a leaf certificate for the
  name the client asks for (SNI, from :class:`~veilpix.Authority`; ALPN ``http/1.1``), parses
  HTTP/1.1 with h11 (keep-alive, chunked bodies, ``Expect: 100-continue``) and hands each
  request to :meth:`Gateway.forward <veilpix.proxy.Gateway.forward>`, the same path the
  gateway's requests take: sanitize, policy, log, vendor-shaped refusals, metrics, then on
  to ``https://host:port`` with verified TLS. Nothing of a vendor request reaches the vendor
  except what the guard rebuilt.
- a vendor host the CA may not sign for, or a name the CA covers that no vendor claims:
  ``403`` (fail closed: tunnelling it would bypass the guard).
- any other host: a blind byte tunnel (default), or ``403`` with ``only_vendors``.

Plain-HTTP requests (``GET http://...``) are refused: vendor calls must use HTTPS, and this
is not a plain-HTTP forward proxy. ``/_veilpix/health`` and ``/_veilpix/metrics`` are answered
on the proxy's own address.

The token (when set) comes with the ``CONNECT``: ``Proxy-Authorization: Basic`` with the
token as the password (``HTTPS_PROXY=http://veilpix:TOKEN@127.0.0.1:8788``, which curl,
Python and Node clients send by themselves), or ``Proxy-Authorization: Bearer TOKEN``, or
``X-Veilpix-Token: TOKEN``; else ``407``. The user name of Basic credentials picks
``[apps.<name>]`` when such an app is configured (a request's own ``X-Veilpix-App`` wins).

Limits: bounded request heads, timeouts on the client side only (the ``CONNECT`` head, the
TLS handshake, each request head, an idle keep-alive connection, a request body that comes
too slowly; never on a vendor's answer), a cap on open connections (``503`` with
``Retry-After`` beyond it; ``/_veilpix/health`` is still answered) and one on each client
address's (a quick ``503`` before anything is read), request bodies capped at the gateway's
``max_body`` and paced and budgeted by it (``408``, ``503``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import http
import json
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import h11

from veilpix.proxy._gateway import Gateway, Message, Scope, vendor_error
from veilpix.proxy._http import HEALTH_PATH
from veilpix.proxy._limits import RETRY_AFTER, busy_response, client_key

if TYPE_CHECKING:
    from pathlib import Path

    from veilpix._ca import Authority
    from veilpix._config import Config
    from veilpix.proxy._upstream import UpstreamPool

__all__ = [
    "InterceptProxy",
    "InterceptStats",
    "intercept_upstream",
    "load_authority",
    "run_intercept",
    "start_intercept",
]

_log = logging.getLogger("veilpix.proxy.intercept")

_READ = 256 * 1024
_DRAIN_AT = 256 * 1024  # buffered outgoing bytes before a writer waits for the socket
_TOKEN_HEADER = b"x-veilpix-token"
_APP_HEADER = b"x-veilpix-app"


@dataclass
class InterceptStats:
    """Connection counters (requests are counted by the gateway's metrics)."""

    connections: int = 0  # accepted
    intercepted: int = 0  # CONNECTs whose TLS the proxy terminated
    tunnelled: int = 0  # CONNECTs relayed untouched
    refused: int = 0  # CONNECTs and plain requests answered with 4xx/5xx
    busy: int = 0  # connections turned away by the connection caps
    tls_failed: int = 0  # handshakes with the client that did not complete


class _Closed(Exception):
    """The client went away, broke HTTP, or sat idle too long: close the connection."""


class InterceptProxy:
    """The ``HTTPS_PROXY`` door. ``gateway`` runs each decrypted request (its guards, log,
    metrics, ``max_body`` and upstream pool are shared with the gateway door); ``authority``
    makes the certificates.

    ``token`` is required with every ``CONNECT`` when set (None: the gateway's token).
    ``vendor_hosts`` maps more ``host`` / ``host:port`` names to vendors, on top of the
    gateway's policies' (which hold the hosts of configured base URLs) and the adapters'.
    ``handshake_timeout`` bounds the ``CONNECT`` head (from the accept) and the TLS handshake,
    ``header_timeout`` each request head inside (the first from the handshake, a later one
    from its first byte), ``idle_timeout`` the wait for the next request on a kept-alive
    connection; ``max_connections`` caps open client connections, tunnels included (beyond
    it only ``/_veilpix/health`` is answered), ``max_connections_per_client`` those of one
    client address (beyond it a quick ``503``). ``max_head`` bounds a request head (line
    plus headers). Request bodies are paced and budgeted by the gateway."""

    def __init__(
        self,
        gateway: Gateway,
        authority: Authority,
        *,
        only_vendors: bool = False,
        token: str | None = None,
        vendor_hosts: Mapping[str, str] | None = None,
        max_connections: int = 256,
        handshake_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        connect_timeout: float = 15.0,
        max_head: int = 64 * 1024,
        header_timeout: float = 10.0,
        max_connections_per_client: int = 32,
    ) -> None:
        self.gateway = gateway
        self.authority = authority
        self.only_vendors = only_vendors
        self.token = token if token is not None else gateway.token
        self.max_connections = max_connections
        self.max_connections_per_client = max_connections_per_client
        self.handshake_timeout = handshake_timeout
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_head = max_head
        self.stats = InterceptStats()
        hosts: dict[str, str] = {}
        for guard in gateway.guards.values():  # every app's mapping: a host any app calls a
            for host, vendor in guard.policy.vendor_hosts.items():  # vendor's is intercepted
                hosts.setdefault(host.lower(), vendor)
        for host, vendor in gateway.guards[""].policy.vendor_hosts.items():
            hosts[host.lower()] = vendor  # the default policy wins a disagreement
        hosts.update({k.lower(): v for k, v in (vendor_hosts or {}).items()})
        self.vendor_hosts = hosts
        self._tls: ssl.SSLContext | None = None
        self._warm: dict[str, float] = {}  # hosts whose leaf was made off the event loop
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._active = 0
        self._per_client: dict[str, int] = {}  # open connections by client_key()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None
    ) -> None:
        """Listen on ``host:port`` (0: a free port; see :attr:`address`), or on ``sock``, a
        bound socket (a worker of ``--workers N`` gets one from the supervisor)."""
        if self._server is not None:
            raise RuntimeError("the intercept proxy is already listening")
        self._tls = self.authority.server_context(on_refuse=self._sni_refused)
        if sock is not None:
            self._server = await asyncio.start_server(self._accept, sock=sock, limit=_READ)
        else:
            self._server = await asyncio.start_server(self._accept, host, port, limit=_READ)

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the proxy listens on."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the intercept proxy is not listening")
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    @property
    def url(self) -> str:
        """``http://host:port``, the value for ``HTTPS_PROXY``."""
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    async def serve_forever(self) -> None:
        if self._server is None:
            raise RuntimeError("call start() first")
        await self._server.serve_forever()

    async def aclose(self) -> None:
        """Stop listening and close every open connection (tunnels and requests in
        flight). The gateway is not closed: its owner does that."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    # -- deciding what a host is ------------------------------------------------------------------

    def vendor_for(self, host: str, port: int) -> str | None:
        """The vendor behind ``host:port``: a configured mapping, else the adapters'."""
        from veilpix import adapters

        host = host.lower().removesuffix(".")
        named = self.vendor_hosts.get(f"{host}:{port}") or self.vendor_hosts.get(host)
        if named is not None:
            return named
        found = adapters.match(host)
        return found[0].name if found is not None else None

    def _sni_refused(self, name: str | None) -> None:
        _log.info("TLS refused: the client asked for %r, which the CA may not sign for", name)

    # -- one client connection ----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats.connections += 1
        key = client_key(writer.get_extra_info("peername"))
        held = self._per_client.get(key, 0)
        if held >= self.max_connections_per_client:
            try:
                await self._turn_away(reader, writer, held)
            finally:
                self._tasks.discard(task)
                writer.transport.abort()
            return
        self._per_client[key] = held + 1
        busy = self._active >= self.max_connections
        self._active += 1
        link = _Link(
            reader, writer, h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        )
        try:
            await self._connection(link, busy=busy)
        except (_Closed, ConnectionError, TimeoutError, ssl.SSLError, h11.ProtocolError):
            pass
        except asyncio.CancelledError:  # aclose(): the server is going away
            pass
        except RuntimeError as exc:  # uvloop, writing to a transport a reset already closed
            if "closed" not in str(exc):
                _log.exception("intercept proxy: unexpected error; the connection was closed")
        except Exception:  # noqa: BLE001 - a bug must not take the server down: log, cut off
            _log.exception("intercept proxy: unexpected error; the connection was closed")
        finally:
            self._active -= 1
            left = self._per_client.get(key, 0) - 1
            if left > 0:
                self._per_client[key] = left
            else:
                self._per_client.pop(key, None)
            self._tasks.discard(task)
            writer.transport.abort()

    async def _turn_away(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, held: int
    ) -> None:
        """A client over its connection cap: 503 before anything is read, then close (what
        it still sends within a second is read and dropped, so the answer is not reset)."""
        self.stats.busy += 1
        writer.write(busy_response(
            f"veilpix: too many connections from your address ({held} open, "
            f"max_connections_per_client = {self.max_connections_per_client}); retry shortly"
        ))  # fmt: skip
        with contextlib.suppress(OSError, RuntimeError):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        with contextlib.suppress(asyncio.CancelledError):
            await _linger(reader)

    async def _connection(self, link: _Link, *, busy: bool) -> None:
        try:
            async with asyncio.timeout(self.handshake_timeout):
                request = await link.next_event()
                if not isinstance(request, h11.Request):
                    return
                end = await link.next_event()  # a CONNECT has no body; others are refused
                while isinstance(end, h11.Data):
                    end = await link.next_event()
        except h11.RemoteProtocolError as exc:
            await link.reply(exc.error_status_hint, f"bad request: {exc}")
            return
        except TimeoutError:
            return  # nothing useful arrived in time
        if not isinstance(end, h11.EndOfMessage):
            return
        health = request.method != b"CONNECT" and request.target == HEALTH_PATH.encode()
        if busy and not health:  # the health check is answered however busy the proxy is
            self.stats.busy += 1
            self.gateway.metrics.count("-", "busy")
            await link.reply(503, "veilpix: too many connections (max_connections); retry "
                             "shortly", headers=[("retry-after", RETRY_AFTER)])  # fmt: skip
            return
        if request.method == b"CONNECT":
            await self._connect(link, request)
        else:
            await self._plain(link, request)

    async def _plain(self, link: _Link, request: h11.Request) -> None:
        """A request that is not a CONNECT: health and metrics, else a refusal."""
        target = request.target.decode("latin-1")
        if target == HEALTH_PATH:
            await link.reply(200, json.dumps({"status": "ok"}), content_type="application/json")
            return
        if target == "/_veilpix/metrics":
            text = self.gateway.metrics.render()
            await link.reply(200, text, content_type="text/plain; version=0.0.4")
            return
        self.stats.refused += 1
        if not target.lower().startswith("http://"):
            await link.reply(400, "this is veilpix's intercept proxy: use it as HTTPS_PROXY "
                             "(CONNECT); for base-URL access use the gateway")  # fmt: skip
            return
        host, port = _split_authority(target[7:].split("/", 1)[0].rsplit("@", 1)[-1], 80)
        vendor = self.vendor_for(host, port) if host and port else None
        self.gateway.metrics.count(vendor or "-", "refused")
        if vendor is not None:
            message = (
                f"veilpix refuses plain http:// to {host}: calls to AI vendors must use "
                "https://, which the intercept proxy inspects"
            )
        else:
            message = (
                f"veilpix is not a plain-HTTP forward proxy: http://{host or '?'} is refused; "
                "it relays https:// (CONNECT) only"
            )
        await link.reply(403, message)

    def _authorized(self, request: h11.Request) -> tuple[bool, str | None]:
        """Whether the CONNECT carries the token (always true when none is set), and the
        user name of its Basic credentials."""
        user: str | None = None
        offered: list[str] = []
        for name, value in request.headers:
            if name == _TOKEN_HEADER:
                offered.append(value.decode("latin-1").strip())
            elif name == b"proxy-authorization":
                scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
                if scheme.lower() == "bearer":
                    offered.append(credentials.strip())
                elif scheme.lower() == "basic":
                    try:
                        decoded = base64.b64decode(credentials.strip(), validate=True)
                    except (binascii.Error, ValueError):
                        continue
                    login, _, password = decoded.decode("utf-8", "replace").partition(":")
                    user = login or None
                    offered.append(password)
        if self.token is None:
            return True, user
        ok = False
        for candidate in offered:  # every offer is compared, so timing tells nothing
            ok |= secrets.compare_digest(candidate.encode(), self.token.encode())
        return ok, user

    async def _connect(self, link: _Link, request: h11.Request) -> None:
        authority = request.target.decode("latin-1")
        host, port = _split_authority(authority, None)
        if not host or port is None or not 0 < port <= 65535:
            self.stats.refused += 1
            await link.reply(400, f"CONNECT needs host:port, not {authority!r}")
            return
        ok, user = self._authorized(request)
        if not ok:
            self.stats.refused += 1
            await link.reply(407, "veilpix: missing or wrong proxy token",
                             headers=[("proxy-authenticate", 'Basic realm="veilpix"')])  # fmt: skip
            return
        vendor = self.vendor_for(host, port)
        permitted = self.authority.permits(host)
        if vendor is not None and permitted:
            app = user if user and user in self.gateway.guards else None
            await self._intercept(link, _Destination(host, port, vendor, app))
            return
        if vendor is not None:
            refusal = (
                f"veilpix: {host} is {vendor}'s, but the veilpix CA may not sign for it, so "
                "its calls cannot be inspected and are refused; add it to [intercept] "
                "extra_domains and run `veilpix ca rotate`"
            )
        elif permitted:
            refusal = (
                f"veilpix: {host} is among the CA's names but no vendor is configured for it, "
                "so it is neither inspected nor tunnelled; name it in a [vendors.<name>] base_url"
            )
        elif self.only_vendors:
            refusal = (
                f"veilpix: {host} is not an AI vendor host, and this proxy relays only those "
                "(only_vendors)"
            )
        else:
            await self._tunnel(link, host, port)
            return
        self.stats.refused += 1
        self.gateway.metrics.count(vendor or "-", "refused")
        await link.reply(403, refusal)

    # -- blind tunnel ---------------------------------------------------------------------------

    async def _tunnel(self, link: _Link, host: str, port: int) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=_READ), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            self.stats.refused += 1
            await link.reply(502, f"veilpix: cannot connect to {host}:{port}: {exc}")
            return
        self.stats.tunnelled += 1
        self.gateway.metrics.count("-", "tunnelled")
        try:
            link.writer.write(link.established())
            early, _ = link.h11.trailing_data  # bytes the client sent before our 200
            if early:
                up_writer.write(early)
            up = asyncio.ensure_future(_pump(link.reader, up_writer))
            down = asyncio.ensure_future(_pump(up_reader, link.writer))
            try:  # both ways to their end; a failure on either side cuts both
                await asyncio.wait((up, down), return_when=asyncio.FIRST_EXCEPTION)
            finally:
                up.cancel()
                down.cancel()
                await asyncio.gather(up, down, return_exceptions=True)
        finally:
            up_writer.transport.abort()

    # -- TLS termination and the HTTP/1.1 loop --------------------------------------------------

    async def _intercept(self, link: _Link, dest: _Destination) -> None:
        assert self._tls is not None, "start() makes the TLS context"
        now = time.time()
        if self._warm.get(dest.host, 0.0) < now:  # a new leaf is made on a thread, off the loop
            await asyncio.get_running_loop().run_in_executor(
                None, self.authority.leaf_context, dest.host
            )
            self._warm[dest.host] = now + 3600.0
        link.writer.write(link.established())
        early, _ = link.h11.trailing_data
        if early:  # a ClientHello before our 200: not what a conforming client does
            return
        # No await between the 200 and start_tls: the ClientHello is not read as plain text.
        try:
            await link.writer.start_tls(self._tls, ssl_handshake_timeout=self.handshake_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.stats.tls_failed += 1
            _log.info("TLS handshake with a client for %s failed: %r", dest.host, exc)
            return
        self.stats.intercepted += 1
        peer = link.writer.get_extra_info("peername")
        client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        session = _Session(self, link.reader, link.writer, dest, client)
        try:
            await session.run()
        finally:
            if not link.writer.transport.is_closing():
                link.writer.close()  # close_notify, then the socket goes
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(link.writer.wait_closed(), 1.0)


@dataclass(frozen=True)
class _Destination:
    host: str
    port: int
    vendor: str
    app: str | None  # from the CONNECT's Basic user name, when it names an app

    @property
    def origin(self) -> str:
        return f"https://{self.host}" + ("" if self.port == 443 else f":{self.port}")


@dataclass(eq=False)
class _Link:
    """A client connection before TLS: its streams and the h11 state of the CONNECT."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection

    async def next_event(self) -> Any:
        return await _next_event(self.h11, self.reader)

    def established(self) -> bytes:
        response = h11.Response(status_code=200, headers=[], reason=b"Connection established")
        return self.h11.send(response) or b""

    async def reply(
        self,
        status: int,
        text: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        """The proxy's own answer to a CONNECT or a plain request; the connection closes
        after it."""
        body = (text if text.endswith("\n") or content_type != _TEXT else text + "\n").encode()
        fields = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("connection", "close"),
            *headers,
        ]
        try:
            head = h11.Response(status_code=status, headers=fields, reason=_reason(status))
            data = (self.h11.send(head) or b"") + (self.h11.send(h11.Data(data=body)) or b"")
            data += self.h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # h11 gave up on the request: answer by hand
            data = f"HTTP/1.1 {status} {_reason(status).decode()}\r\n".encode()
            data += b"".join(f"{k}: {v}\r\n".encode() for k, v in fields) + b"\r\n" + body
        self.writer.write(data)
        with contextlib.suppress(OSError):
            await self.writer.drain()
        if self.writer.can_write_eof():
            with contextlib.suppress(OSError):
                self.writer.write_eof()  # a FIN: the answer is complete
        await _linger(self.reader)


class _Session:
    """The HTTP/1.1 requests inside one intercepted TLS connection."""

    def __init__(
        self,
        proxy: InterceptProxy,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dest: _Destination,
        client: tuple[str, int] | None,
    ) -> None:
        self.proxy = proxy
        self.reader = reader
        self.writer = writer
        self.dest = dest
        self.client = client
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=proxy.max_head)

    async def run(self) -> None:
        conn, proxy = self.conn, self.proxy
        fresh = True  # the first request's head is due header_timeout after the handshake
        while True:
            try:
                wait = proxy.header_timeout if fresh else proxy.idle_timeout
                event = await _next_head(conn, self.reader, wait, proxy.header_timeout,
                                         fresh=fresh)  # fmt: skip
                fresh = False
            except h11.RemoteProtocolError as exc:
                await self._error(exc.error_status_hint, f"bad request: {exc}", "veilpix_http")
                await _linger(self.reader)  # the rest of what it sends is dropped
                return
            except TimeoutError:
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed
            await self._exchange(event)
            if conn.their_state is h11.SEND_BODY:  # answered before the whole body came
                await _linger(self.reader, limit=self.proxy.gateway.max_body)
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # a client that left, Connection: close, HTTP/1.0
            conn.start_next_cycle()

    def _check(self, request: h11.Request) -> tuple[int, str, str] | None:
        """Why this request is refused before the guard sees it (status, message, code)."""
        dest, gateway = self.dest, self.proxy.gateway
        for name, value in request.headers:
            if name == b"host":
                named, _ = _split_authority(value.decode("latin-1"), dest.port)
                if named != dest.host:
                    return (421, f"Host {value.decode('latin-1')!r} is not {dest.host}, the "
                            "host this connection was opened for", "veilpix_misdirected")  # fmt: skip
            elif name == b"upgrade":
                return (501, "protocol upgrades (WebSocket) cannot be inspected and are not "
                        "relayed by the intercept proxy", "veilpix_upgrade")  # fmt: skip
            elif name == b"content-length" and int(value) > gateway.max_body:
                gateway.metrics.count(dest.vendor, "too_large")
                return 413, f"request body over {gateway.max_body:,} bytes", "veilpix_too_large"
        return None

    async def _exchange(self, request: h11.Request) -> None:
        dest, gateway = self.dest, self.proxy.gateway
        target = request.target.decode("latin-1")
        if not target.startswith("/"):  # absolute-form: accepted for this origin only
            origin = dest.origin.lower()
            if target.lower() == origin or target.lower().startswith(origin + "/"):
                target = target[len(origin) :] or "/"
            else:
                await self._error(400, f"the request target must be a path on {dest.host}",
                                  "veilpix_target")  # fmt: skip
                return
        refusal = self._check(request)
        if refusal is not None:
            await self._error(*refusal)
            return
        headers = list(request.headers)
        if dest.app is not None and not any(n == _APP_HEADER for n, _ in headers):
            headers.append((_APP_HEADER, dest.app.encode()))
        path, _, query = target.partition("?")
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version.decode("latin-1"),
            "method": request.method.decode("latin-1"),
            "scheme": "https",
            "path": unquote(path),
            "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": headers,
            "client": self.client,
            "server": (dest.host, dest.port),
        }
        exchange = _Exchange(self)
        try:
            await gateway.forward(dest.vendor, dest.origin + target, scope, exchange.receive,
                                  exchange.send, door="intercept")  # fmt: skip
        except _Closed:
            raise
        except Exception as exc:
            if exchange.started:  # the head is out: all that is left is to cut the answer short
                raise _Closed from exc
            _log.exception("intercept proxy: a request to %s failed", dest.host)
            await self._error(500, "veilpix failed on this request", "veilpix_error")
            return
        finally:
            await exchange.settle()
        if exchange.disconnected:
            raise _Closed

    async def _error(self, status: int, message: str, code: str) -> None:
        """A vendor-shaped error; the connection closes after it."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            raise _Closed
        body = json.dumps(vendor_error(self.dest.vendor, status, message, code)).encode()
        fields = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        try:
            head = h11.Response(status_code=status, headers=fields, reason=_reason(status))
            data = (self.conn.send(head) or b"") + (self.conn.send(h11.Data(data=body)) or b"")
            data += self.conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise _Closed from exc
        self.writer.write(data)
        await self.writer.drain()


class _Exchange:
    """ASGI ``receive`` and ``send`` for one request of a :class:`_Session`."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.conn = session.conn
        self.body_done = False
        self.disconnected = False
        self.started = False
        self._watch: asyncio.Task[Any] | None = None  # the task waiting for a disconnect

    async def settle(self) -> None:
        """Wait until the gateway's disconnect watch has really stopped reading, so the next
        request can read (the gateway cancels it but does not wait for it)."""
        watch, self._watch = self._watch, None
        if watch is not None and not watch.done():
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def receive(self) -> Message:
        if self.disconnected:
            return {"type": "http.disconnect"}
        if self.body_done:
            return await self._await_disconnect()
        conn = self.conn
        if conn.they_are_waiting_for_100_continue:
            self._write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        try:
            event = await _next_event(conn, self.session.reader)
        except (h11.RemoteProtocolError, OSError, ssl.SSLError):
            # "peer closed connection without sending complete message body", or a reset
            self.disconnected = True
            return {"type": "http.disconnect"}
        if isinstance(event, h11.Data):
            return {"type": "http.request", "body": bytes(event.data), "more_body": True}
        if isinstance(event, h11.EndOfMessage):
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        self.disconnected = True  # ConnectionClosed
        return {"type": "http.disconnect"}

    async def _await_disconnect(self) -> Message:
        """After the body: wait until the client goes away (the gateway cancels this when
        the exchange ends). Pipelined bytes are kept for the next request, up to a bound."""
        conn, reader = self.conn, self.session.reader
        self._watch = asyncio.current_task()
        while len(conn.trailing_data[0]) <= self.session.proxy.max_head:
            try:
                data = await reader.read(_READ)
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                self.disconnected = True
                return {"type": "http.disconnect"}
            conn.receive_data(data)
        await asyncio.Event().wait()  # too much pipelined: stop reading until cancelled
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, message: Message) -> None:
        conn = self.conn
        kind = message["type"]
        if kind == "http.response.start":
            status = int(message["status"])
            self.started = True
            head = h11.Response(
                status_code=status, headers=list(message.get("headers", [])), reason=_reason(status)
            )
            data = conn.send(head)
        elif kind == "http.response.body":
            body = message.get("body", b"")
            data = conn.send(h11.Data(data=body)) if body else b""
            if not message.get("more_body", False):
                data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
        else:
            return
        self._write(data)
        if self.session.writer.transport.get_write_buffer_size() > _DRAIN_AT:
            await self.session.writer.drain()

    def _write(self, data: bytes | None) -> None:
        writer = self.session.writer
        if data and not writer.transport.is_closing():
            writer.write(data)  # a client that left is noticed by receive(), not here


# -- helpers --------------------------------------------------------------------------------------

_TEXT = "text/plain; charset=utf-8"


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    """The next h11 event, reading from ``reader`` as needed (b"" = the client closed)."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(_READ))


async def _next_head(
    conn: h11.Connection, reader: asyncio.StreamReader, wait: float, head: float, *, fresh: bool
) -> Any:
    """:func:`_next_event` for a request head: nothing for ``wait`` seconds, or an
    incomplete head ``head`` seconds after its first byte, is a :class:`TimeoutError`. On a
    ``fresh`` connection the whole head is due in ``wait``: its first byte changes nothing."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(wait) as timer:
        begun = fresh
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if not begun and conn.trailing_data[0]:  # part of the head is in
                begun = True
                timer.reschedule(loop.time() + head)
            data = await reader.read(_READ)
            conn.receive_data(data)
            if data and not begun:
                begun = True
                timer.reschedule(loop.time() + head)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, with backpressure; then pass the EOF on (half-close)."""
    while data := await reader.read(_READ):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof() and not writer.transport.is_closing():
        writer.write_eof()


async def _linger(reader: asyncio.StreamReader, seconds: float = 1.0, limit: int = 1 << 26) -> None:
    """Read and drop what the client still sends (for up to ``seconds`` and ``limit`` bytes)
    before the connection closes: closing a socket with unread data resets it, and a reset
    can destroy the answer before the client has read it."""
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        async with asyncio.timeout(seconds):
            while limit > 0 and (data := await reader.read(_READ)):
                limit -= len(data)


def _split_authority(text: str, default: int | None) -> tuple[str, int | None]:
    """``host[:port]`` (``[v6]:port`` too) as (lower-case host without brackets or a
    trailing dot, port or ``default``); ``("", None)`` for a bad port."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    host = host.lower().removesuffix(".")
    if not port_text:
        return host, default
    if not port_text.isdigit() or len(port_text) > 5:
        return "", None
    return host, int(port_text)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


# -- serving ------------------------------------------------------------------------------------


def intercept_upstream(config: Config) -> UpstreamPool:
    """The pool to the vendors with ``[intercept] upstream_hosts`` (dial another address,
    keep the name for SNI and certificate checks) and ``upstream_ca`` (trusted besides the
    system roots). Give it to the gateway (``build_gateway(config, upstream=...)``): both
    doors then share it."""
    from veilpix.proxy._upstream import UpstreamPool

    settings = config.intercept
    return UpstreamPool(
        resolve=dict(settings.upstream_hosts),
        extra_ca=str(settings.upstream_ca) if settings.upstream_ca is not None else None,
    )


def load_authority(config: Config, ca_dir: str | Path | None = None) -> Authority:
    """The CA from ``ca_dir`` / ``$VEILPIX_CA_DIR`` / ``[intercept] ca_dir`` / the default,
    with a hint to create it when there is none."""
    from veilpix._ca import Authority
    from veilpix._errors import CAError

    directory = config.ca_dir(ca_dir)
    try:
        return Authority.load(directory)
    except CAError as exc:
        if not (directory / "ca-key.pem").exists():
            raise CAError(
                exc.message, hint="create it with `veilpix ca init` (see docs/intercept.md)"
            ) from exc
        raise


async def start_intercept(
    config: Config,
    gateway: Gateway,
    host: str | None = None,
    port: int | None = None,
    *,
    authority: Authority | None = None,
    only_vendors: bool | None = None,
    token: str | None = None,
    allow_remote: bool | None = None,
    ca_dir: str | Path | None = None,
    sock: socket.socket | None = None,
) -> InterceptProxy:
    """An :class:`InterceptProxy` for ``config``, listening when this returns (call its
    ``aclose()`` at shutdown). ``None`` arguments come from the config: host from ``[proxy]``,
    port and ``only_vendors`` from ``[intercept]``, token from the gateway. A non-loopback
    host needs ``allow_remote`` and a token, as for the gateway. ``sock``: listen on this
    bound socket instead (``host`` is still checked)."""
    from veilpix.proxy._serve import check_bind

    host = host or config.proxy.host
    port = config.intercept.port if port is None else port
    token = token if token is not None else gateway.token
    allow_remote = config.proxy.allow_remote if allow_remote is None else allow_remote
    check_bind(host, allow_remote=allow_remote, token=token, token_env=config.proxy.token_env)
    proxy = InterceptProxy(
        gateway,
        authority if authority is not None else load_authority(config, ca_dir),
        only_vendors=config.intercept.only_vendors if only_vendors is None else only_vendors,
        token=token,
        max_connections=config.proxy.max_connections,
        max_connections_per_client=config.proxy.max_connections_per_client,
        handshake_timeout=config.proxy.header_timeout,
        header_timeout=config.proxy.header_timeout,
        idle_timeout=config.proxy.idle_timeout,
    )
    try:
        await proxy.start(host, port, sock=sock)
    except OSError as exc:
        from veilpix._errors import ConfigError

        raise ConfigError(
            f"the intercept proxy could not listen on {host}:{port}: {exc.strerror or exc}",
            hint="is the port already in use? choose another one ([intercept] port)",
        ) from exc
    return proxy


async def run_intercept(
    config: Config,
    gateway: Gateway,
    host: str | None = None,
    port: int | None = None,
    **options: Any,
) -> None:
    """:func:`start_intercept`, then serve until cancelled; open connections are closed on
    the way out (the gateway is not: its owner closes it)."""
    proxy = await start_intercept(config, gateway, host, port, **options)
    try:
        await proxy.serve_forever()
    finally:
        await proxy.aclose()
