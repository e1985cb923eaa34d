"""The proxy's road to the vendors: a small HTTP/1.1 client with a keep-alive pool.

Built for the one job the gateway (and the intercept proxy) has: send a request whose body is
already in memory, then hand the response head over at once and its body piece by piece as
it arrives, raw (a compressed body stays compressed, chunked framing is undone by h11).
It is a fraction of a general client's cost per call (no redirects, cookies, auth flows,
proxies or URL objects), which matters when every call also pays for sanitizing and two
durable log commits.

- TLS is always verified (the system's roots, plus ``extra_ca`` when given) with SNI and
  ALPN ``http/1.1``; plain HTTP is used only where the URL says so (the guard allows that
  only to loopback).
- Connect timeout only: no read timeout, because streams (SSE) and slow image generations may
  take minutes; a caller that goes away cancels the call instead.
- A connection goes back to the pool only after a complete exchange that both sides keep
  alive; a cancelled or failed exchange closes it. An idle connection the server has closed
  is noticed before reuse; a request that meets a server-side close on a reused connection,
  before any byte of an answer, is sent once more on a fresh connection (the server closed
  that keep-alive connection before reading the request).
- ``resolve`` maps a host name to another ``(host, port)`` to connect to, keeping the name
  for SNI and certificate checks (tests and air-gapped setups).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

__all__ = ["UpstreamError", "UpstreamPool", "UpstreamResponse"]

_READ = 256 * 1024
_DRAIN_AT = 256 * 1024  # buffered outgoing bytes before the writer waits for the socket
_JOIN_UP_TO = 64 * 1024  # bodies up to this size are copied into one write with the head


class UpstreamError(Exception):
    """The vendor could not be reached, or broke the exchange. ``kind`` names what happened:
    ``connect``, ``timeout``, ``tls``, ``protocol`` or ``closed``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(eq=False)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0
    reused: bool = False
    received: int = 0  # bytes read in the current exchange

    def usable(self, now: float, idle_limit: float) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.transport.is_closing()
            and now - self.idle_since < idle_limit
        )

    def close(self) -> None:
        self.writer.transport.abort()  # no TLS close_notify dance: the exchange is over

    async def next_event(self) -> object:
        """The next h11 event (``Response``, ``Data``, ``EndOfMessage``, ``ConnectionClosed``
        or the ``PAUSED`` sentinel), reading from the socket as needed."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.reader.read(_READ)
            self.received += len(data)
            self.h11.receive_data(data)  # b"" = the server closed its side


class UpstreamResponse:
    """The head of an answer; :meth:`chunks` yields its body as it arrives. Call
    :meth:`aclose` when done (it returns a fully read connection to the pool)."""

    def __init__(
        self, pool: UpstreamPool, key: tuple[str, str, int], conn: _Conn, head: h11.Response
    ) -> None:
        self._pool, self._key = pool, key
        self._conn: _Conn | None = conn
        self.status: int = head.status_code
        self.reason: bytes = head.reason
        self.headers: list[tuple[bytes, bytes]] = list(head.headers.raw_items())
        self._complete = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise UpstreamError("closed", "the response is closed")
        while True:
            try:
                event = await conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamError("protocol", f"the vendor broke the response: {exc}") from exc
            except OSError as exc:
                raise UpstreamError("closed", f"the vendor connection failed: {exc}") from exc
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._complete = True
                return
            else:  # ConnectionClosed before the end, or PAUSED
                raise UpstreamError("closed", "the vendor closed the connection mid-response")

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._complete and conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            try:
                conn.h11.start_next_cycle()
            except h11.LocalProtocolError:
                conn.close()
                return
            conn.received = 0
            self._pool._release(self._key, conn)
        else:
            conn.close()


class UpstreamPool:
    """Keep-alive connections per (scheme, host, port). Safe for one event loop."""

    def __init__(
        self,
        *,
        connect_timeout: float = 15.0,
        extra_ca: str | None = None,
        resolve: Mapping[str, tuple[str, int]] | None = None,
        max_idle_per_host: int = 64,
        idle_seconds: float = 60.0,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.resolve = {k.lower(): v for k, v in (resolve or {}).items()}
        self.max_idle = max_idle_per_host
        self.idle_seconds = idle_seconds
        self._extra_ca = extra_ca
        self._tls: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._closed = False

    def tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            if self._extra_ca:
                ctx.load_verify_locations(cafile=self._extra_ca)
            ctx.set_alpn_protocols(["http/1.1"])
            self._tls = ctx  # check_hostname and CERT_REQUIRED are the defaults
        return self._tls

    async def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str | bytes, str | bytes]],
        body: bytes,
    ) -> UpstreamResponse:
        """Send and return the response head. ``headers`` are sent as given, plus ``Host``
        (from the URL) and ``Content-Length``."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError("connect", f"not an http(s) URL: {url!r}")
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = port == (443 if scheme == "https" else 80)
        authority = (f"[{host}]" if ":" in host else host) + ("" if default_port else f":{port}")
        fields = [("host", authority), *headers, ("content-length", str(len(body)))]
        try:
            head = h11.Request(method=method, target=target.encode("latin-1"), headers=fields)  # type: ignore[arg-type]
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            raise UpstreamError("protocol", f"cannot send this request: {exc}") from exc
        for attempt in (0, 1):
            # the retry takes a fresh connection: another idle one may be just as stale
            conn = await (self._connect(key) if attempt else self._acquire(key))
            try:
                return await self._exchange(key, conn, head, body)
            except _StaleConnection:
                conn.close()
                if attempt:
                    raise UpstreamError("closed", "the vendor closed the connection") from None
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(
        self, key: tuple[str, str, int], conn: _Conn, head: h11.Request, body: bytes
    ) -> UpstreamResponse:
        writer = conn.writer
        try:
            start = conn.h11.send(head) or b""
            data = (conn.h11.send(h11.Data(data=body)) or b"") if body else b""
            end = conn.h11.send(h11.EndOfMessage()) or b""  # b"" with a Content-Length
            try:
                if len(data) <= _JOIN_UP_TO:  # one write, one send() for a small request
                    writer.write(b"".join((start, data, end)))
                else:
                    writer.writelines((start, data, end))
            except RuntimeError as exc:  # uvloop: the peer reset and the transport is gone
                raise ConnectionResetError(str(exc)) from exc
            if writer.transport.get_write_buffer_size() > _DRAIN_AT:
                await writer.drain()
            event = await conn.next_event()
            while isinstance(event, h11.InformationalResponse):  # 100 Continue and friends
                event = await conn.next_event()
        except (h11.RemoteProtocolError, ConnectionError) as exc:
            if conn.reused and not conn.received:
                raise _StaleConnection from exc
            if not conn.received:  # h11 reports a close before any answer as a protocol error
                raise UpstreamError(
                    "closed", "the vendor closed the connection without answering"
                ) from exc
            raise UpstreamError("protocol", f"the vendor broke the exchange: {exc}") from exc
        except OSError as exc:
            raise UpstreamError("closed", f"the vendor connection failed: {exc}") from exc
        if isinstance(event, h11.ConnectionClosed):
            if conn.reused and not conn.received:
                raise _StaleConnection
            raise UpstreamError("closed", "the vendor closed the connection without answering")
        if not isinstance(event, h11.Response):  # pragma: no cover - h11 yields nothing else
            raise UpstreamError("protocol", f"unexpected {type(event).__name__} from the vendor")
        return UpstreamResponse(self, key, conn, event)

    async def _acquire(self, key: tuple[str, str, int]) -> _Conn:
        if self._closed:
            raise UpstreamError("closed", "the upstream pool is closed")
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now, self.idle_seconds):
                conn.reused = True
                return conn
            conn.close()
        return await self._connect(key)

    async def _connect(self, key: tuple[str, str, int]) -> _Conn:
        scheme, host, port = key
        address = self.resolve.get(host.lower(), (host, port))
        tls = self.tls_context() if scheme == "https" else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    address[0], address[1], ssl=tls, server_hostname=host if tls else None,
                    limit=_READ,
                ),
                self.connect_timeout,
            )  # fmt: skip
        except TimeoutError as exc:
            raise UpstreamError(
                "timeout", f"no connection to {host}:{port} within {self.connect_timeout:g} s"
            ) from exc
        except ssl.SSLError as exc:
            raise UpstreamError("tls", f"TLS with {host} failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise UpstreamError("connect", f"cannot connect to {host}:{port}: {exc}") from exc
        return _Conn(reader, writer)

    def _release(self, key: tuple[str, str, int], conn: _Conn) -> None:
        idle = self._idle.setdefault(key, [])
        if self._closed or len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


class _StaleConnection(Exception):
    """A reused keep-alive connection turned out closed before the request got an answer."""
