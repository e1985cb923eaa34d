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
connection is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["DISCONNECT", "http_protocol"]

DISCONNECT = "veilpix.disconnect"

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


def http_protocol() -> Any:
    """The protocol class for ``uvicorn.Config(http=...)``: httptools with gathered writes,
    or ``"auto"`` (uvicorn's choice) when httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools comes with the proxy extra
        return "auto"

    class GatewayHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self.veilpix_on_lost: list[Callable[[], None]] = []
            super().connection_made(_Gathering(transport, self.loop))  # type: ignore[arg-type]

        def on_headers_complete(self) -> None:
            # (the request's task starts only after this returns)
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[DISCONNECT] = self.veilpix_on_lost
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            for callback in list(self.veilpix_on_lost):
                callback()

    return GatewayHttpToolsProtocol
