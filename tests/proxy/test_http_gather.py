"""The gateway's uvicorn protocol gathers the writes of one event-loop pass into one."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from servers import Server
from veilpix.proxy._http import _AT_ONCE, _Gathering, http_protocol


class Recording:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)


def test_writes_of_one_pass_leave_together() -> None:
    async def main() -> Recording:
        t = Recording()
        g = _Gathering(t, asyncio.get_running_loop())  # type: ignore[arg-type]
        g.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        g.write(b"")
        g.write(b"ok")
        assert t.writes == [] and g.get_write_buffer_size() == 40
        await asyncio.sleep(0)
        assert t.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        g.write(b"next")  # a later pass: its own write
        await asyncio.sleep(0)
        assert t.writes[1:] == [b"next"]
        assert g.get_extra_info("peername") == ("127.0.0.1", 5)
        return t

    asyncio.run(main())


def test_big_writes_go_at_once_and_close_flushes() -> None:
    async def main() -> None:
        t = Recording()
        g = _Gathering(t, asyncio.get_running_loop())  # type: ignore[arg-type]
        big = b"x" * _AT_ONCE
        g.write(big)
        assert t.writes == [big]  # nothing to join it with: straight out
        g.write(b"head")
        g.write(big)
        assert t.writes[1:] == [b"head" + big]  # over the threshold: out without waiting
        g.write(b"last")
        g.close()
        assert t.writes[2:] == [b"last"] and t.closed
        await asyncio.sleep(0)  # the scheduled flush finds nothing left
        assert len(t.writes) == 3

    asyncio.run(main())


def test_abort_and_a_closed_transport_drop_pending_bytes() -> None:
    async def main() -> None:
        t = Recording()
        g = _Gathering(t, asyncio.get_running_loop())  # type: ignore[arg-type]
        g.write(b"a")
        g.abort()
        await asyncio.sleep(0)
        assert t.writes == [] and t.aborted
        t2 = Recording()
        g2 = _Gathering(t2, asyncio.get_running_loop())  # type: ignore[arg-type]
        g2.write(b"b")
        t2.closed = True  # the peer went away before the pass ended
        await asyncio.sleep(0)
        assert t2.writes == []

    asyncio.run(main())


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for i in range(3):
            await send(
                {"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True}
            )
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    await send({"type": "http.response.body", "body": b"hello"})


def _recv_all(sock: socket.socket, until: bytes) -> list[tuple[float, bytes]]:
    got: list[tuple[float, bytes]] = []
    data = b""
    while until not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got.append((time.monotonic(), chunk))
        data += chunk
    return got


def test_a_small_response_arrives_in_one_piece_and_streams_still_stream() -> None:
    assert http_protocol() != "auto"
    with Server(_app) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        pieces = _recv_all(sock, b"hello")
        assert len(pieces) == 1 and pieces[0][1].endswith(b"\r\n\r\nhello")
        start = time.monotonic()
        sock.sendall(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        pieces = _recv_all(sock, b"0\r\n\r\n")
        first = next(t for t, chunk in pieces if b"data: 0" in chunk)
        assert first - start < 0.15  # the first event did not wait for the others
        assert b"".join(c for _, c in pieces).count(b"data: ") == 3


@pytest.mark.parametrize("size", [10, _AT_ONCE * 3 + 7])
def test_bodies_arrive_whole(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        for i in range(0, len(body), 10_000):
            await send(
                {"type": "http.response.body", "body": body[i : i + 10_000], "more_body": True}
            )
        await send({"type": "http.response.body", "body": b""})

    with Server(app) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b"".join(c for _, c in _recv_all(sock, b"\x00never\x00"))
        assert data.split(b"\r\n\r\n", 1)[1] == body
