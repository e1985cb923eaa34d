"""HTTP/1.1 on the intercept proxy's client connections, parsed by h11, and the bridge from an
intercepted TLS session to the gateway's ASGI side.

:class:`Link` is a client connection before TLS: it reads the ``CONNECT`` (or plain) request
and writes the proxy's own short answers. :class:`Session` runs the requests inside one
intercepted TLS connection (keep-alive, chunked bodies, ``Expect: 100-continue``, request
head timeouts): each one becomes an ASGI request (:class:`Exchange` is its ``receive`` and
``send``) handed to :meth:`Gateway.forward <veilpix.proxy.Gateway.forward>` with its
:class:`~veilpix.proxy._gateway.Route`. Nothing here decides what a host is or who may
connect: that is the door's (``veilpix.proxy._intercept``).

h11 comes with the 'proxy' extra and is imported where it is used: ``veilpix.proxy``
imports this module, and must import without the extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from veilpix._net import split_authority
from veilpix.proxy._asgi import Message, Scope, vendor_error
from veilpix.proxy._gateway import Route

if TYPE_CHECKING:
    import h11

    from veilpix.proxy._gateway import Gateway

__all__ = ["READ", "Closed", "Destination", "Link", "Session", "linger"]

_log = logging.getLogger("veilpix.proxy.intercept")

READ = 256 * 1024  # bytes read from a socket at a time
_DRAIN_AT = 256 * 1024  # buffered outgoing bytes before a writer waits for the socket
_TEXT = "text/plain; charset=utf-8"


class Closed(Exception):
    """The client went away, broke HTTP, or sat idle too long: close the connection."""


@dataclass(frozen=True)
class Destination:
    """Where an intercepted connection's requests go, as the door decided at the CONNECT."""

    host: str
    port: int
    vendor: str
    app: str | None  # from the CONNECT's Basic user name, when it names an app

    @property
    def origin(self) -> str:
        return f"https://{self.host}" + ("" if self.port == 443 else f":{self.port}")


@dataclass(eq=False)
class Link:
    """A client connection before TLS: its streams and the h11 state of the CONNECT."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: h11.Connection

    @classmethod
    def open(
        cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_head: int
    ) -> Link:
        import h11

        return cls(reader, writer, h11.Connection(h11.SERVER, max_incomplete_event_size=max_head))

    async def first_request(self, timeout: float) -> h11.Request | None:
        """The request (with its body, if any, read and dropped) that came within
        ``timeout`` seconds; None when nothing complete came, or a malformed one (answered)."""
        import h11

        try:
            async with asyncio.timeout(timeout):
                request = await _next_event(self.conn, self.reader)
                if not isinstance(request, h11.Request):
                    return None
                end = await _next_event(self.conn, self.reader)
                while isinstance(end, h11.Data):  # a CONNECT has no body; others are refused
                    end = await _next_event(self.conn, self.reader)
        except h11.RemoteProtocolError as exc:
            await self.reply(exc.error_status_hint, f"bad request: {exc}")
            return None
        except TimeoutError:
            return None  # nothing useful arrived in time
        return request if isinstance(end, h11.EndOfMessage) else None

    def early_bytes(self) -> bytes:
        """What the client sent after its request, before the proxy answered it."""
        return bytes(self.conn.trailing_data[0])

    def established(self) -> bytes:
        import h11

        response = h11.Response(status_code=200, headers=[], reason=b"Connection established")
        return self.conn.send(response) or b""

    async def reply(
        self,
        status: int,
        text: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        content_type: str = _TEXT,
    ) -> None:
        """The proxy's own answer to a CONNECT or a plain request; the connection closes
        after it."""
        import h11

        body = (text if text.endswith("\n") or content_type != _TEXT else text + "\n").encode()
        fields = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("connection", "close"),
            *headers,
        ]
        try:
            data = _whole_response(self.conn, status, fields, body)
        except h11.LocalProtocolError:  # h11 gave up on the request: answer by hand
            data = f"HTTP/1.1 {status} {_reason(status).decode()}\r\n".encode()
            data += b"".join(f"{k}: {v}\r\n".encode() for k, v in fields) + b"\r\n" + body
        self.writer.write(data)
        with contextlib.suppress(OSError):
            await self.writer.drain()
        if self.writer.can_write_eof():
            with contextlib.suppress(OSError):
                self.writer.write_eof()  # a FIN: the answer is complete
        await linger(self.reader)


class Session:
    """The HTTP/1.1 requests inside one intercepted TLS connection, each forwarded through
    ``gateway``. ``max_head`` bounds a request head, ``header_timeout`` its arrival (the
    first from now, a later one from its first byte), ``idle_timeout`` the wait for the next
    request on a kept-alive connection."""

    def __init__(
        self,
        gateway: Gateway,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dest: Destination,
        client: tuple[str, int] | None,
        *,
        max_head: int,
        header_timeout: float,
        idle_timeout: float,
    ) -> None:
        import h11

        self.gateway = gateway
        self.reader = reader
        self.writer = writer
        self.dest = dest
        self.client = client
        self.max_head = max_head
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)

    async def run(self) -> None:
        import h11

        conn = self.conn
        fresh = True  # the first request's head is due header_timeout after the handshake
        while True:
            try:
                wait = self.header_timeout if fresh else self.idle_timeout
                event = await _next_head(conn, self.reader, wait, self.header_timeout, fresh=fresh)
                fresh = False
            except h11.RemoteProtocolError as exc:
                await self._error(exc.error_status_hint, f"bad request: {exc}", "veilpix_http")
                await linger(self.reader)  # the rest of what it sends is dropped
                return
            except TimeoutError:
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed
            await self._exchange(event)
            if conn.their_state is h11.SEND_BODY:  # answered before the whole body came
                await linger(self.reader, limit=self.gateway.max_body)
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # a client that left, Connection: close, HTTP/1.0
            conn.start_next_cycle()

    def _check(self, request: h11.Request) -> tuple[int, str, str] | None:
        """Why this request is refused before the guard sees it (status, message, code)."""
        dest, gateway = self.dest, self.gateway
        for name, value in request.headers:
            if name == b"host":
                named, _ = split_authority(value.decode("latin-1"), dest.port)
                if named != dest.host:
                    message = (
                        f"Host {value.decode('latin-1')!r} is not {dest.host}, the host this "
                        "connection was opened for"
                    )
                    return 421, message, "veilpix_misdirected"
            elif name == b"upgrade":
                message = (
                    "protocol upgrades (WebSocket) cannot be inspected and are not relayed by "
                    "the intercept proxy"
                )
                return 501, message, "veilpix_upgrade"
            elif name == b"content-length" and int(value) > gateway.max_body:
                gateway.outcome(dest.vendor, "too_large")
                return 413, f"request body over {gateway.max_body:,} bytes", "veilpix_too_large"
        return None

    async def _exchange(self, request: h11.Request) -> None:
        dest = self.dest
        target = request.target.decode("latin-1")
        if not target.startswith("/"):  # absolute-form: accepted for this origin only
            origin = dest.origin.lower()
            if target.lower() == origin or target.lower().startswith(origin + "/"):
                target = target[len(origin) :] or "/"
            else:
                message = f"the request target must be a path on {dest.host}"
                await self._error(400, message, "veilpix_target")
                return
        refusal = self._check(request)
        if refusal is not None:
            await self._error(*refusal)
            return
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
            "headers": list(request.headers),
            "client": self.client,
            "server": (dest.host, dest.port),
        }
        route = Route(dest.vendor, dest.origin + target, door="intercept", app=dest.app)
        exchange = Exchange(self)
        try:
            await self.gateway.forward(route, scope, exchange.receive, exchange.send)
        except Closed:
            raise
        except Exception as exc:
            if exchange.started:  # the head is out: all that is left is to cut the answer short
                raise Closed from exc
            _log.exception("intercept proxy: a request to %s failed", dest.host)
            await self._error(500, "veilpix failed on this request", "veilpix_error")
            return
        finally:
            await exchange.settle()
        if exchange.disconnected:
            raise Closed

    async def _error(self, status: int, message: str, code: str) -> None:
        """A vendor-shaped error; the connection closes after it."""
        import h11

        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            raise Closed
        body = json.dumps(vendor_error(self.dest.vendor, status, message, code)).encode()
        fields = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        try:
            data = _whole_response(self.conn, status, fields, body)
        except h11.LocalProtocolError as exc:
            raise Closed from exc
        self.writer.write(data)
        await self.writer.drain()


class Exchange:
    """ASGI ``receive`` and ``send`` for one request of a :class:`Session`."""

    def __init__(self, session: Session) -> None:
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
        import h11

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
        while len(conn.trailing_data[0]) <= self.session.max_head:
            try:
                data = await reader.read(READ)
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                self.disconnected = True
                return {"type": "http.disconnect"}
            conn.receive_data(data)
        await asyncio.Event().wait()  # too much pipelined: stop reading until cancelled
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, message: Message) -> None:
        import h11

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


async def linger(reader: asyncio.StreamReader, seconds: float = 1.0, limit: int = 1 << 26) -> None:
    """Read and drop what the client still sends (for up to ``seconds`` and ``limit`` bytes)
    before the connection closes: closing a socket with unread data resets it, and a reset
    can destroy the answer before the client has read it."""
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        async with asyncio.timeout(seconds):
            while limit > 0 and (data := await reader.read(READ)):
                limit -= len(data)


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    """The next h11 event, reading from ``reader`` as needed (b"" = the client closed)."""
    import h11

    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(READ))


async def _next_head(
    conn: h11.Connection, reader: asyncio.StreamReader, wait: float, head: float, *, fresh: bool
) -> Any:
    """:func:`_next_event` for a request head: nothing for ``wait`` seconds, or an
    incomplete head ``head`` seconds after its first byte, is a :class:`TimeoutError`. On a
    ``fresh`` connection the whole head is due in ``wait``: its first byte changes nothing."""
    import h11

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
            data = await reader.read(READ)
            conn.receive_data(data)
            if data and not begun:
                begun = True
                timer.reschedule(loop.time() + head)


def _whole_response(
    conn: h11.Connection, status: int, fields: list[tuple[str, str]], body: bytes
) -> bytes:
    """A complete response (head, ``body``, end) as ``conn`` writes it; h11's
    ``LocalProtocolError`` when it cannot send one now."""
    import h11

    head = h11.Response(status_code=status, headers=fields, reason=_reason(status))
    data = (conn.send(head) or b"") + (conn.send(h11.Data(data=body)) or b"")
    return data + (conn.send(h11.EndOfMessage()) or b"")


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
