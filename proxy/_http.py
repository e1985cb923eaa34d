"""uvicorn's httptools protocol, with a response's head and body leaving in one write.

uvicorn writes the head of a response as soon as the app sends ``http.response.start`` and
each body message as it comes: two ``send()`` calls for even the smallest answer, and for the
client two wake-ups. The gateway sends its head and (when the vendor's answer is already
buffered) the whole body in one go, so the writes of one pass of the event loop are gathered
here and go out together at its end. Nothing waits longer than that pass: a streamed response
still leaves chunk by chunk as the vendor sends it, and 64 KiB or more goes out at once.

It also tells the app when a client goes away, without the app having to keep a task
waiting in ``receive()`` for every request: the scope's extension ``veilpix.disconnect`` is a
list the app may append a callback to (and remove it from); each is called when the
connection is lost (reading resumes once a request's body is complete, so the loss is seen
however the body arrived).

Given :class:`~veilpix.proxy._limits.ConnectionLimits` (``veilpix proxy`` always gives them),
it also bounds what a client can hold, which uvicorn alone does not (it has no timeout before
the first request, and its concurrency limit counts idle connections and refuses the health
check with everything else):

- a request head must be complete ``header_timeout`` after the connection was accepted (on a
  kept-alive connection: after its first byte), and at most ``max_head`` bytes (else 431);
- a kept-alive connection idles at most ``idle_timeout`` between requests;
- a request body the app no longer reads (it answered early: 401, 413, 503) must still
  arrive at the body pace (:class:`~veilpix.proxy._limits.BodyClock`) or the connection
  closes; while the app reads a body, the app keeps that pace itself (``Gateway``);
- ``max_connections_per_client`` open connections per client address: a further one gets a
  503 with ``Retry-After`` at once and is closed, before anything is read;
- at ``max_connections`` open connections or requests in progress, a request gets a 503 with
  ``Retry-After`` in its vendor's error shape, except ``/_veilpix/health``, which is always
  answered.

One timer per connection, armed at the earliest deadline and re-armed when it fires early.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from veilpix._errors import ConfigError
from veilpix._install import install_command
from veilpix.proxy._asgi import DISCONNECT, HEALTH_PATH, reply, reply_text, vendor_error
from veilpix.proxy._limits import RETRY_AFTER, BodyClock, busy_response, client_key

if TYPE_CHECKING:
    from veilpix.proxy._limits import ConnectionLimits

__all__ = ["http_protocol"]

_AT_ONCE = 64 * 1024  # gathered bytes that are written without waiting for the pass to end


class _Gathering:
    """The transport as uvicorn's protocol sees it: writes are joined until the end of the
    event loop's pass (or until a close), everything else goes straight through."""

    __slots__ = ("_loop", "_pending", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            if len(data) >= _AT_ONCE:
                self._transport.write(data)
                return
            self._loop.call_soon(self._flush)
        self._pending.append(data)
        self._size += len(data)
        if self._size >= _AT_ONCE:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._flush()
        self._transport.set_protocol(protocol)

    def __getattr__(self, name: str) -> Any:  # anything else uvicorn may grow to use
        return getattr(self._transport, name)


def http_protocol(limits: ConnectionLimits | None = None) -> Any:
    """The protocol class for ``uvicorn.Config(http=...)``: httptools with gathered writes,
    or ``"auto"`` (uvicorn's choice) when httptools is not installed. With ``limits``, a
    class that also enforces them (see the module's text), with its own per-client counts:
    make one per server."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError as exc:  # pragma: no cover - httptools comes with the proxy extra
        if limits is None:
            return "auto"
        raise ConfigError(
            "the proxy needs httptools for its connection limits",
            hint=install_command("proxy"),
        ) from exc

    class GatewayHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self.veilpix_on_lost: list[Callable[[], None]] = []
            super().connection_made(_Gathering(transport, self.loop))  # type: ignore[arg-type]

        def on_headers_complete(self) -> None:
            # (the request's task starts only after this returns)
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[DISCONNECT] = self.veilpix_on_lost
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            # uvicorn pauses reading while a body waits for the app and resumes it only when
            # the app calls receive() again; after the last piece it does not, so a client
            # that leaves while the vendor works would go unnoticed (its FIN unread). What
            # comes next is a pipelined request, which uvicorn pauses on by itself.
            self.flow.resume_reading()

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            for callback in list(self.veilpix_on_lost):
                callback()

    if limits is None:
        return GatewayHttpToolsProtocol
    return _bounded(GatewayHttpToolsProtocol, limits)


class _Watch:
    """A connection's place in the request cycle, for its deadlines."""

    __slots__ = (
        "armed",
        "drain",
        "head_bytes",
        "head_started",
        "idle_since",
        "in_body",
        "in_head",
        "timer",
    )

    def __init__(self, now: float) -> None:
        self.in_head = True  # from the accept: the first head is due header_timeout after it
        self.head_started = now
        self.head_bytes = 0
        self.in_body = False  # between a head and the end of its body
        self.drain: BodyClock | None = None  # the pace of a body the app no longer reads
        self.idle_since = now
        self.timer: asyncio.TimerHandle | None = None
        self.armed = 0.0  # when the timer fires


def _bounded(base: Any, limits: ConnectionLimits) -> Any:
    import httptools

    open_per_client: dict[str, int] = {}  # this server's connections, by client_key()
    health = HEALTH_PATH.encode()

    class BoundedHttpToolsProtocol(base):  # type: ignore[misc]
        app: Any  # uvicorn's (the ASGI app), swapped for a refusal when too busy
        veilpix_watch: _Watch | None = None  # None: turned away at the accept
        veilpix_linger: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            self.veilpix_key = key = client_key(transport.get_extra_info("peername"))
            self.veilpix_app = self.app
            held = open_per_client.get(key, 0)
            if held >= limits.max_connections_per_client:
                self.transport = transport
                message = (
                    f"veilpix: too many connections from your address ({held} open, "
                    f"max_connections_per_client = {limits.max_connections_per_client}); "
                    "retry shortly"
                )
                self.veilpix_linger = _turn_away(transport, self.loop, message)
                return
            open_per_client[key] = held + 1
            self.veilpix_watch = _Watch(self.loop.time())
            super().connection_made(transport)
            self.veilpix_schedule()

        def connection_lost(self, exc: Exception | None) -> None:
            watch = self.veilpix_watch
            if watch is None:  # turned away
                if self.veilpix_linger is not None:
                    self.veilpix_linger.cancel()
                return
            if watch.timer is not None:
                watch.timer.cancel()
                watch.timer = None
            left = open_per_client.get(self.veilpix_key, 0) - 1
            if left > 0:
                open_per_client[self.veilpix_key] = left
            else:
                open_per_client.pop(self.veilpix_key, None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            watch = self.veilpix_watch
            if watch is None:  # turned away: what it still sends is dropped
                return
            began = watch.in_head
            super().data_received(data)
            # A head still incomplete: count what came for it (from the next chunk on when it
            # began inside this one, which may also hold the end of the previous body).
            if began and watch.in_head and not self.transport.is_closing():
                watch.head_bytes += len(data)
                if watch.head_bytes > limits.max_head:
                    self.veilpix_refuse_head()

        # -- the request cycle ------------------------------------------------------------------

        def on_message_begin(self) -> None:
            super().on_message_begin()
            watch = self.veilpix_watch
            assert watch is not None
            if not watch.in_head:  # a kept-alive connection's next request: due from now
                watch.in_head = True
                watch.head_started = self.loop.time()
                watch.head_bytes = 0
                self.veilpix_schedule()

        def on_headers_complete(self) -> None:
            watch = self.veilpix_watch
            assert watch is not None
            watch.in_head, watch.in_body, watch.head_bytes = False, True, 0
            watch.drain = None
            limit = limits.max_connections
            size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
            if size > limits.max_head:  # a head that came whole in one read
                self.app = _too_large_head(limits.max_head)
            elif len(self.connections) >= limit or len(self.tasks) >= limit:
                try:
                    path = httptools.parse_url(self.url).path
                except httptools.HttpParserError:
                    path = b""
                if path != health:  # the health check is answered however busy it is
                    self.app = _too_busy(self.veilpix_app)
            try:
                super().on_headers_complete()
            finally:
                self.app = self.veilpix_app

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            watch = self.veilpix_watch
            if watch is not None and watch.drain is not None:
                watch.drain.progress(self.loop.time(), len(body))

        def on_message_complete(self) -> None:
            super().on_message_complete()
            watch = self.veilpix_watch
            assert watch is not None
            watch.in_body, watch.drain = False, None
            watch.idle_since = self.loop.time()
            self.veilpix_schedule()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._unset_keepalive_if_required()  # the idle deadline below replaces uvicorn's
            watch = self.veilpix_watch
            if watch is not None:
                watch.idle_since = self.loop.time()
                self.veilpix_schedule()

        # -- deadlines --------------------------------------------------------------------------

        def veilpix_deadline(self) -> float | None:
            """When this connection is overdue, or None while a request is in progress (the
            vendor's answer may take minutes; the app paces the body it reads)."""
            watch = self.veilpix_watch
            assert watch is not None
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                return None
            if watch.in_body:  # answered before the whole body came: it must keep coming
                if watch.drain is None:
                    now = self.loop.time()
                    watch.drain = BodyClock(now, limits.idle_timeout, limits.min_body_rate)
                return watch.drain.deadline()
            if watch.in_head:
                return watch.head_started + limits.header_timeout
            return watch.idle_since + limits.idle_timeout

        def veilpix_schedule(self) -> None:
            """Arm the timer for the current deadline, unless it already fires earlier (it
            then looks again)."""
            watch = self.veilpix_watch
            assert watch is not None
            deadline = self.veilpix_deadline()
            if deadline is None or self.transport.is_closing():
                return
            if watch.timer is not None:
                if watch.armed <= deadline:
                    return
                watch.timer.cancel()
            watch.armed = deadline
            watch.timer = self.loop.call_at(deadline, self.veilpix_expire)

        def veilpix_expire(self) -> None:
            watch = self.veilpix_watch
            assert watch is not None
            watch.timer = None
            deadline = self.veilpix_deadline()
            if deadline is None or self.transport.is_closing():
                return
            if self.loop.time() < deadline:
                watch.armed = deadline
                watch.timer = self.loop.call_at(deadline, self.veilpix_expire)
                return
            self.transport.close()  # a slow or idle client: nothing more is waited for

        def veilpix_refuse_head(self) -> None:
            cycle = self.cycle
            if cycle is None or cycle.response_complete:  # nothing else is being answered
                self.transport.write(_head_refusal(limits.max_head))
            self.transport.close()

    return BoundedHttpToolsProtocol


def _turn_away(
    transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, message: str
) -> asyncio.TimerHandle:
    """Answer a connection 503 before reading anything, and close it: at once when the client
    closes its side, else after a second (what it sends meanwhile is read and dropped, so the
    close does not reset the answer away)."""
    transport.write(busy_response(message))
    if transport.can_write_eof():
        transport.write_eof()
    return loop.call_later(1.0, transport.close)


def _head_refusal(limit: int) -> bytes:
    text = f"request head over {limit:,} bytes\n".encode()
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        + f"content-length: {len(text)}\r\n".encode()
        + b"connection: close\r\n\r\n"
        + text
    )


def _too_large_head(limit: int) -> Any:
    """The ASGI app for a request whose head is over ``limit`` bytes: 431, then close."""

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        text = f"request head over {limit:,} bytes\n"
        close = [(b"connection", b"close")]
        await reply_text(send, 431, text, "text/plain; charset=utf-8", close)

    return refuse


def _too_busy(app: Any) -> Any:
    """The ASGI app for a request over ``max_connections``: 503 with ``Retry-After``, in the
    error shape of the vendor the path names, counted as ``busy`` by the app when it counts
    outcomes (the gateway's :meth:`~veilpix.proxy.Gateway.outcome`)."""

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        segment = str(scope.get("path", "")).split("/")[1:2]
        vendor = segment[0].lower() if segment and segment[0] else "-"
        count = getattr(app, "outcome", None)
        if count is not None:
            count(vendor, "busy")
        message = "veilpix is busy (max_connections reached); retry shortly"
        body = vendor_error(vendor, 503, message, "veilpix_busy")
        await reply(
            send, 503, body, [(b"retry-after", RETRY_AFTER.encode()), (b"connection", b"close")]
        )

    return refuse
