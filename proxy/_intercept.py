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

This module is the door: who may connect, what a host is, tunnel or terminate TLS. The HTTP/1.1
inside an intercepted connection, and its bridge to the gateway, are in
``veilpix.proxy._bridge``; starting the proxy from ``veilpix.toml`` is in
``veilpix.proxy._serve`` (:func:`~veilpix.proxy._serve.start_intercept`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from veilpix import adapters
from veilpix._errors import ConfigError
from veilpix._install import install_command
from veilpix._net import split_authority
from veilpix.proxy._asgi import HEALTH_PATH, METRICS_PATH, METRICS_TYPE, TOKEN_HEADER
from veilpix.proxy._bridge import READ, Closed, Destination, Link, Session, linger
from veilpix.proxy._limits import RETRY_AFTER, busy_response, client_key

if TYPE_CHECKING:
    import h11

    from veilpix._ca import Authority
    from veilpix.proxy._gateway import Gateway

__all__ = ["InterceptProxy", "InterceptStats"]

_log = logging.getLogger("veilpix.proxy.intercept")

_TOKEN_RAW = TOKEN_HEADER.encode()


@dataclass
class InterceptStats:
    """Connection counters (requests are counted by the gateway's metrics)."""

    connections: int = 0  # accepted
    intercepted: int = 0  # CONNECTs whose TLS the proxy terminated
    tunnelled: int = 0  # CONNECTs relayed untouched
    refused: int = 0  # CONNECTs and plain requests answered with 4xx/5xx
    busy: int = 0  # connections turned away by the connection caps
    tls_failed: int = 0  # handshakes with the client that did not complete


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
        # the gateway's (every app's: a host any app calls a vendor's is intercepted), then
        # this proxy's own
        hosts = dict(gateway.vendor_hosts)
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
        try:
            import h11  # noqa: F401 - used by veilpix.proxy._bridge, for every connection
        except ImportError as exc:
            raise ConfigError(
                "the intercept proxy needs h11", hint=install_command("proxy")
            ) from exc
        self._tls = self.authority.server_context(on_refuse=self._sni_refused)
        if sock is not None:
            self._server = await asyncio.start_server(self._accept, sock=sock, limit=READ)
        else:
            self._server = await asyncio.start_server(self._accept, host, port, limit=READ)

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
        return adapters.vendor_name(host.lower().removesuffix("."), port, self.vendor_hosts)

    def _sni_refused(self, name: str | None) -> None:
        _log.info("TLS refused: the client asked for %r, which the CA may not sign for", name)

    # -- one client connection ----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import h11  # the 'proxy' extra's (start() checks it is there)

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
        link = Link.open(reader, writer, self.max_head)
        try:
            await self._connection(link, busy=busy)
        except (Closed, ConnectionError, TimeoutError, ssl.SSLError, h11.ProtocolError):
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
        message = (
            f"veilpix: too many connections from your address ({held} open, "
            f"max_connections_per_client = {self.max_connections_per_client}); retry shortly"
        )
        writer.write(busy_response(message))
        with contextlib.suppress(OSError, RuntimeError):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        with contextlib.suppress(asyncio.CancelledError):
            await linger(reader)

    async def _connection(self, link: Link, *, busy: bool) -> None:
        request = await link.first_request(self.handshake_timeout)
        if request is None:
            return
        health = request.method != b"CONNECT" and request.target == HEALTH_PATH.encode()
        if busy and not health:  # the health check is answered however busy the proxy is
            self.stats.busy += 1
            self.gateway.outcome("-", "busy")
            message = "veilpix: too many connections (max_connections); retry shortly"
            await link.reply(503, message, headers=[("retry-after", RETRY_AFTER)])
            return
        if request.method == b"CONNECT":
            await self._connect(link, request)
        else:
            await self._plain(link, request)

    async def _plain(self, link: Link, request: h11.Request) -> None:
        """A request that is not a CONNECT: health and metrics, else a refusal."""
        target = request.target.decode("latin-1")
        if target == HEALTH_PATH:
            await link.reply(200, json.dumps({"status": "ok"}), content_type="application/json")
            return
        if target == METRICS_PATH:
            text = self.gateway.metrics.render()
            await link.reply(200, text, content_type=METRICS_TYPE)
            return
        self.stats.refused += 1
        if not target.lower().startswith("http://"):
            message = (
                "this is veilpix's intercept proxy: use it as HTTPS_PROXY (CONNECT); for "
                "base-URL access use the gateway"
            )
            await link.reply(400, message)
            return
        host, port = split_authority(target[7:].split("/", 1)[0].rsplit("@", 1)[-1], 80)
        vendor = self.vendor_for(host, port) if host and port else None
        self.gateway.outcome(vendor or "-", "refused")
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
            if name == _TOKEN_RAW:
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

    async def _connect(self, link: Link, request: h11.Request) -> None:
        authority = request.target.decode("latin-1")
        host, port = split_authority(authority, None)
        if not host or port is None or not 0 < port <= 65535:
            self.stats.refused += 1
            await link.reply(400, f"CONNECT needs host:port, not {authority!r}")
            return
        ok, user = self._authorized(request)
        if not ok:
            self.stats.refused += 1
            challenge = [("proxy-authenticate", 'Basic realm="veilpix"')]
            await link.reply(407, "veilpix: missing or wrong proxy token", headers=challenge)
            return
        vendor = self.vendor_for(host, port)
        permitted = self.authority.permits(host)
        if vendor is not None and permitted:
            app = user if user and user in self.gateway.apps else None
            await self._intercept(link, Destination(host, port, vendor, app))
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
        self.gateway.outcome(vendor or "-", "refused")
        await link.reply(403, refusal)

    # -- blind tunnel ---------------------------------------------------------------------------

    async def _tunnel(self, link: Link, host: str, port: int) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=READ), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            self.stats.refused += 1
            await link.reply(502, f"veilpix: cannot connect to {host}:{port}: {exc}")
            return
        self.stats.tunnelled += 1
        self.gateway.outcome("-", "tunnelled")
        try:
            link.writer.write(link.established())
            early = link.early_bytes()  # bytes the client sent before our 200
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

    async def _intercept(self, link: Link, dest: Destination) -> None:
        assert self._tls is not None, "start() makes the TLS context"
        now = time.time()
        if self._warm.get(dest.host, 0.0) < now:  # a new leaf is made on a thread, off the loop
            await asyncio.get_running_loop().run_in_executor(
                None, self.authority.leaf_context, dest.host
            )
            self._warm[dest.host] = now + 3600.0
        link.writer.write(link.established())
        if link.early_bytes():  # a ClientHello before our 200: not what a conforming client does
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
        session = Session(
            self.gateway,
            link.reader,
            link.writer,
            dest,
            client,
            max_head=self.max_head,
            header_timeout=self.header_timeout,
            idle_timeout=self.idle_timeout,
        )
        try:
            await session.run()
        finally:
            if not link.writer.transport.is_closing():
                link.writer.close()  # close_notify, then the socket goes
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(link.writer.wait_closed(), 1.0)


# -- helpers --------------------------------------------------------------------------------------


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, with backpressure; then pass the EOF on (half-close)."""
    while data := await reader.read(READ):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof() and not writer.transport.is_closing():
        writer.write_eof()
