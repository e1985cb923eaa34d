"""The proxy's road to the vendors: a small HTTP/1.1 client with a keep-alive pool.

Built for the one job the gateway (and the intercept proxy) has: send a request whose body is
already in memory, then hand the response head over at once and its body piece by piece as
it arrives, raw (a compressed body stays compressed, chunked framing is undone). It is a
fraction of a general client's cost per call (no redirects, cookies, auth flows, proxies or
URL objects), which matters when every call also pays for sanitizing and two durable log
commits.

How: each connection is an ``asyncio.Protocol`` that feeds what it receives straight into
``httptools.HttpResponseParser`` (llhttp, in C); the parser's callbacks collect the head
(header names lower-cased, duplicates and order kept) and buffer the body, and the caller
is woken only when there is something for it (no stream reader in between, no event
objects, no future at all for body that is already there). Informational answers (100,
103...) are skipped; 101, a malformed answer or a head over 64 KiB is a protocol error.
The request head is written by hand: ``host`` from the URL, the headers as given (str or
bytes), ``content-length``. It is checked first, as h11 did: method and header names are
tokens, the target is visible ASCII, header values hold no CR, LF or NUL; a ``Host``, a
``Transfer-Encoding`` or a ``Content-Length`` other than the body's is refused. A small
request goes out in one write together with its body.

- TLS is always verified (the system's roots, plus ``extra_ca`` when given) with SNI and
  ALPN ``http/1.1``; plain HTTP is used only where the URL says so (the guard allows that
  only to loopback).
- Connect timeout only: no read timeout, because streams (SSE) and slow image generations may
  take minutes; a caller that goes away cancels the call instead.
- A connection goes back to the pool only after a complete exchange that both sides keep
  alive, its body read to the end; a cancelled or failed exchange, a ``HEAD`` (the parser
  cannot be told that its answer has no body), a body that ends with the connection, or
  bytes after the answer close it. An idle connection the server has closed is noticed
  before reuse; a request that meets a server-side close on a reused connection, before any
  byte of an answer, is sent once more on a fresh connection (the server closed that
  keep-alive connection before reading the request).
- Flow control both ways: a large request body is written in slices as the socket takes it,
  and the body of an answer the caller reads slowly is buffered up to 256 KiB, then the
  socket is no longer read until the caller catches up.
- ``resolve`` maps a host name to another ``(host, port)`` to connect to, keeping the name
  for SNI and certificate checks (tests and air-gapped setups).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from urllib.parse import SplitResult, urlsplit

from veilpix._errors import VeilpixError

try:
    import httptools
except ImportError:  # pragma: no cover - the 'proxy' extra installs it
    httptools = None  # type: ignore[assignment]  # veilpix.proxy still imports; calls fail

__all__ = ["UpstreamError", "UpstreamPool", "UpstreamResponse"]

_BUFFERED = 256 * 1024  # body bytes held for a slow reader before the socket is paused
_JOIN_UP_TO = 64 * 1024  # bodies up to this size are copied into one write with the head
_SLICE = 256 * 1024  # a larger body is written in slices of this size, as the socket drains
_MAX_HEAD = 64 * 1024  # bytes received without a complete head (1xx answers included)

_Key = tuple[str, str, int]


class UpstreamError(VeilpixError):
    """The vendor could not be reached, or broke the exchange. ``kind`` names what happened:
    ``connect``, ``timeout``, ``tls``, ``protocol`` or ``closed``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message, hint="")
        self.kind = kind


class _PeerClosed(ConnectionError):
    """The vendor closed its side (EOF) before the answer was complete."""


class _Stop(Exception):
    """Raised in a parser callback to stop parsing (a HEAD answer, a second answer)."""


class _Malformed(Exception):
    """An answer this client refuses although it parses (101, a head without end)."""


_PARSE_ERRORS: tuple[type[Exception], ...] = (_Malformed,)
if httptools is not None:
    _PARSE_ERRORS += (httptools.HttpParserError, httptools.HttpParserUpgrade)


class _Conn(asyncio.Protocol):
    """One connection: its transport, its parser and the state of the current exchange.
    Safe for one event loop; at most one exchange at a time."""

    __slots__ = (
        "_body",
        "_broken",
        "_buffered",
        "_done",
        "_eof",
        "_failure",
        "_head",
        "_head_done",
        "_headers",
        "_informational",
        "_keep_alive",
        "_loop",
        "_parser",
        "_read_paused",
        "_reason",
        "_received",
        "_status",
        "_waiter",
        "_write_paused",
        "active",
        "idle_since",
        "reused",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self._waiter: asyncio.Future[None] | None = None
        self.active = False  # an exchange is under way (between _begin and release or close)
        self.reused = False
        self.idle_since = 0.0
        self._eof = False  # the server closed its side (or the connection is gone)
        self._broken = False  # never to be reused
        self._read_paused = False
        self._write_paused = False
        # the current exchange
        self._head = False  # a HEAD request: its answer ends with its head
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_done = False
        self._informational = False  # parsing a 1xx answer, to be skipped
        self._done = False  # the final answer is complete
        self._keep_alive = False
        self._failure: BaseException | None = None
        self._body: list[bytes] = []
        self._buffered = 0
        self._received = 0  # bytes received in the current exchange

    # -- the transport's side --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._done or not self.active:  # nothing asked for: not ours to parse
            self._broken = True
            self.transport.abort()
            return
        if self._failure is not None:  # the exchange is over already: the caller will close
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except _PARSE_ERRORS as exc:
            self._parse_failed(exc)
        if not self._head_done and self._received > _MAX_HEAD and self._failure is None:
            self._failure = _Malformed(f"no complete head in {_MAX_HEAD // 1024} KiB")
        if self._buffered > _BUFFERED and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and (self._head_done or self._failure is not None):
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _parse_failed(self, exc: Exception) -> None:
        if self._done:  # stopped after the answer (HEAD), or bytes came after it
            self._broken = True
        elif self._failure is None:
            self._failure = exc

    def eof_received(self) -> None:
        self._ended(None)  # the transport closes itself (returning None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    def _ended(self, exc: BaseException | None) -> None:
        self._eof = self._broken = True
        if self.active and not self._done and self._failure is None:
            if exc is not None:
                self._failure = exc
            elif self._head_done and _delimited_by_close(self._headers):
                self._done = True  # a body without a length ends with the connection
                self._keep_alive = False
            else:
                self._failure = _PeerClosed("the vendor closed the connection")
        self._wake()

    # -- the parser's callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done:  # a second answer to one request: never ours
            raise _Stop
        self._headers = []
        self._reason = b""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._head_done:  # (trailers after a chunked body are dropped)
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._status = status
        if status < 200:
            if status == 101:
                self._failure = _Malformed("the vendor switched protocols (101)")
                raise _Stop
            self._informational = True  # 100 Continue, 103 Early Hints...: skipped
            return
        self._head_done = True
        if self._head:  # the answer to a HEAD has no body, whatever its head says
            self._done = True
            raise _Stop

    def on_body(self, body: bytes) -> None:
        if not self._informational:
            self._body.append(body)
            self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._done = True
        self._keep_alive = self._parser.should_keep_alive()

    # -- the client's side -----------------------------------------------------------------

    def _begin(self, head: bool) -> None:
        self.active = True
        self._head = head
        self._head_done = self._done = self._keep_alive = self._informational = False
        self._failure = None
        self._received = 0

    def _arm(self) -> asyncio.Future[None]:
        """A future that the next relevant event (head, body, end, failure, drain) resolves."""
        waiter = self._waiter = self._loop.create_future()
        return waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def usable(self, now: float, idle_limit: float) -> bool:
        return (
            not self._broken
            and not self.transport.is_closing()
            and now - self.idle_since < idle_limit
        )

    def close(self) -> None:
        self._broken = True
        self._waiter = None
        self.active = False
        if self.transport is not None:
            self.transport.abort()  # no TLS close_notify dance: the exchange is over

    # What the tests (and anyone used to the stream version) look at: the connection as its
    # own reader and writer.
    @property
    def reader(self) -> _Conn:
        return self

    @property
    def writer(self) -> _Conn:
        return self

    def at_eof(self) -> bool:
        return self._eof


def _delimited_by_close(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a response body with these headers ends only when the connection does (no
    Content-Length, and chunked is not the last transfer coding): llhttp reads it that way."""
    coding = None
    for name, value in headers:
        if name == b"content-length":
            return False
        if name == b"transfer-encoding":
            coding = value
    return coding is None or not coding.rstrip().lower().endswith(b"chunked")


class UpstreamResponse:
    """The head of an answer; :meth:`chunks` yields its body as it arrives. Call
    :meth:`aclose` when done (it returns a fully read connection to the pool)."""

    __slots__ = ("_complete", "_conn", "_key", "_pool", "headers", "reason", "status")

    def __init__(self, pool: UpstreamPool, key: _Key, conn: _Conn) -> None:
        self._pool = pool
        self._key = key
        self._conn: _Conn | None = conn
        self.status: int = conn._status
        self.reason: bytes = conn._reason
        self.headers: list[tuple[bytes, bytes]] = conn._headers  # names lower-case, in order
        self._complete = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise UpstreamError("closed", "the response is closed")
        while True:
            body = conn._body
            if body:  # what has arrived, at once (no waiting when it is already here)
                conn._body = []
                conn._buffered = 0
                if conn._read_paused:
                    conn._read_paused = False
                    if not conn.transport.is_closing():
                        conn.transport.resume_reading()
                yield body[0] if len(body) == 1 else b"".join(body)
            elif conn._done:
                self._complete = True
                return
            elif conn._failure is not None:
                raise _body_error(conn._failure) from conn._failure
            else:
                try:
                    await conn._arm()
                except BaseException:
                    conn.close()  # cancelled: the rest of the answer is of no use
                    raise

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._complete and conn._keep_alive and not conn._broken:
            conn.active = False
            conn._received = 0
            self._pool._release(self._key, conn)
        else:
            conn.close()


def _body_error(failure: BaseException) -> UpstreamError:
    if isinstance(failure, _PARSE_ERRORS):
        return UpstreamError("protocol", f"the vendor broke the response: {failure}")
    if isinstance(failure, _PeerClosed):
        return UpstreamError("closed", "the vendor closed the connection mid-response")
    return UpstreamError("closed", f"the vendor connection failed: {failure}")


# -- the request head -------------------------------------------------------------------------

_token = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+").fullmatch
_target = re.compile(rb"[\x21-\x7e]+").fullmatch  # as h11: visible ASCII, nothing else
_bad_value = re.compile(rb"[\r\n\x00]").search

_PLAIN, _HOST, _LENGTH, _CODING = 0, 1, 2, 3
_SPECIAL = {b"host": _HOST, b"content-length": _LENGTH, b"transfer-encoding": _CODING}
_CACHED = 1024  # validated header names and methods kept (the gateway forwards clients' names)
_names: dict[str | bytes, tuple[bytes, int]] = {}  # name as given -> (b"Name: ", kind)
_methods: dict[str, bytes] = {}


class _Refused(Exception):
    pass


def _name(name: str | bytes) -> tuple[bytes, int]:
    raw = name.encode("ascii") if isinstance(name, str) else bytes(name)
    if _token(raw) is None:
        raise _Refused(f"illegal header name {raw!r}")
    entry = raw + b": ", _SPECIAL.get(raw.lower(), _PLAIN)
    if len(_names) >= _CACHED:
        _names.clear()
    _names[name] = entry
    return entry


def _method(method: str) -> bytes:
    raw = method.encode("ascii")
    if _token(raw) is None:
        raise _Refused(f"illegal method {method!r}")
    if len(_methods) >= _CACHED:
        _methods.clear()
    _methods[method] = raw
    return raw


def _request_head(
    method: str,
    target: str,
    authority: bytes,
    headers: Sequence[tuple[str | bytes, str | bytes]],
    length: int,
) -> bytes:
    """``METHOD target HTTP/1.1``, ``host``, the headers as given, ``content-length``."""
    raw_method = _methods.get(method) or _method(method)
    raw_target = target.encode("ascii")
    if _target(raw_target) is None:
        raise _Refused(f"illegal target {target!r}")
    size = str(length).encode()
    parts = [raw_method, b" ", raw_target, b" HTTP/1.1\r\nhost: ", authority, b"\r\n"]
    add = parts.append
    names = _names
    for name, given in headers:
        prefix, kind = names.get(name) or _name(name)
        value = given.encode("ascii") if type(given) is str else given
        if _bad_value(value) is not None:  # type: ignore[arg-type]
            raise _Refused(f"illegal header value {value!r}")
        if kind:
            if kind == _HOST:
                raise _Refused("Host comes from the URL")
            if kind == _CODING:
                raise _Refused("the body goes with a Content-Length, not Transfer-Encoding")
            if {v.strip() for v in value.split(b",")} != {size}:  # type: ignore[arg-type]
                raise _Refused("conflicting Content-Length headers")
            continue  # the same length as the body's: sent once, below
        add(prefix)
        add(value)  # type: ignore[arg-type]
        add(b"\r\n")
    add(b"content-length: ")
    add(size)
    add(b"\r\n\r\n")
    return b"".join(parts)


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
        self._idle: dict[_Key, list[_Conn]] = {}
        self._origins: dict[tuple[str, str], tuple[_Key, bytes]] = {}
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
        key, authority = self._origins.get((parts.scheme, parts.netloc)) or self._origin(url, parts)
        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        try:
            head = _request_head(method, target, authority, headers, len(body))
        except (_Refused, UnicodeEncodeError) as exc:
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

    def _origin(self, url: str, split: SplitResult) -> tuple[_Key, bytes]:
        """(pool key, Host value) of a URL's scheme and authority, remembered."""
        scheme = split.scheme.lower()
        try:
            host, port = split.hostname, split.port
        except ValueError as exc:  # a port that is no number, or out of range
            raise UpstreamError("connect", f"not an http(s) URL: {url!r}") from exc
        if scheme not in ("http", "https") or not host:
            raise UpstreamError("connect", f"not an http(s) URL: {url!r}")
        default = 443 if scheme == "https" else 80
        port = port or default
        name = f"[{host}]" if ":" in host else host
        try:
            authority = (name if port == default else f"{name}:{port}").encode("ascii")
        except UnicodeEncodeError as exc:
            raise UpstreamError("protocol", f"cannot send this request: {exc}") from exc
        if _bad_value(authority) is not None or b" " in authority:
            raise UpstreamError("protocol", f"cannot send this request: host {host!r}")
        origin = (scheme, host, port), authority
        if len(self._origins) >= _CACHED:
            self._origins.clear()
        self._origins[split.scheme, split.netloc] = origin
        return origin

    async def _exchange(self, key: _Key, conn: _Conn, head: bytes, body: bytes) -> UpstreamResponse:
        failure: BaseException | None
        try:
            transport = conn.transport
            if conn._broken or transport.is_closing():  # gone before a byte was written
                raise ConnectionResetError("the connection is closed")
            conn._begin(head.startswith(b"HEAD "))
            try:
                if len(body) <= _JOIN_UP_TO:  # one write, one send() for a small request
                    transport.write(head + body)
                else:
                    transport.write(head)
                    await _write_body(conn, memoryview(body))
            except RuntimeError as exc:  # uvloop: the peer reset and the transport is gone
                raise ConnectionResetError(str(exc)) from exc
            while not conn._head_done and conn._failure is None:
                await conn._arm()
            failure = conn._failure
        except ConnectionError as exc:
            failure = exc
        if conn._head_done:
            return UpstreamResponse(self, key, conn)
        assert failure is not None
        if isinstance(failure, ConnectionError):
            if not conn._received:
                if conn.reused:
                    raise _StaleConnection from failure
                raise UpstreamError(
                    "closed", "the vendor closed the connection without answering"
                ) from failure
            raise UpstreamError(
                "protocol", f"the vendor broke the exchange: {failure}"
            ) from failure
        if isinstance(failure, _PARSE_ERRORS):
            raise UpstreamError(
                "protocol", f"the vendor broke the exchange: {failure}"
            ) from failure
        raise UpstreamError("closed", f"the vendor connection failed: {failure}") from failure

    async def _acquire(self, key: _Key) -> _Conn:
        if self._closed:
            raise UpstreamError("closed", "the upstream pool is closed")
        idle = self._idle.get(key)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if conn.usable(now, self.idle_seconds):
                    conn.reused = True
                    return conn
                conn.close()
        return await self._connect(key)

    async def _connect(self, key: _Key) -> _Conn:
        scheme, host, port = key
        if httptools is None:  # pragma: no cover
            raise UpstreamError("connect", "the upstream client needs httptools: veilpix[proxy]")
        address = self.resolve.get(host.lower(), (host, port))
        tls = self.tls_context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        conn = _Conn(loop)
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn,
                    address[0],
                    address[1],
                    ssl=tls,
                    server_hostname=host if tls else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise UpstreamError(
                "timeout", f"no connection to {host}:{port} within {self.connect_timeout:g} s"
            ) from exc
        except ssl.SSLError as exc:
            raise UpstreamError("tls", f"TLS with {host} failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise UpstreamError("connect", f"cannot connect to {host}:{port}: {exc}") from exc
        return conn

    def _release(self, key: _Key, conn: _Conn) -> None:
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = []
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


async def _write_body(conn: _Conn, body: memoryview) -> None:
    """Write a large body a slice at a time, each once the socket has taken the last. An
    answer (or a failure) that comes before the whole body went out ends the writing: the
    connection then cannot be reused."""
    write = conn.transport.write
    for start in range(0, len(body), _SLICE):
        while conn._write_paused and not conn._head_done and conn._failure is None:
            await conn._arm()
        if conn._head_done or conn._failure is not None:
            conn._broken = True
            return
        write(body[start : start + _SLICE])


class _StaleConnection(Exception):
    """A reused keep-alive connection turned out closed before the request got an answer."""
