"""``veilpix.proxy.UpstreamPool`` on real loopback sockets: uvicorn (tests/servers.py) where a
well-behaved server will do, and a raw asyncio server in the test's own event loop where the
server has to misbehave on cue (close an idle connection, close mid-answer, hold a body back).
Connections are counted on the server side, by what it accepted."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")

from pki import TestCA, cert_pem, key_pem
from servers import FakeVendor, Server
from veilpix.proxy._upstream import UpstreamError, UpstreamPool

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# -- a scriptable raw server ----------------------------------------------------------------------

Handler = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Raw:
    """An HTTP/1.1 server by hand, in the running event loop. ``handler(n, reader, writer)``
    runs for the n-th accepted connection (from 0); ``requests`` collects every request read
    with :func:`read_request`, as (connection number, raw head, body)."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.accepted = 0
        self.closed: list[asyncio.Event] = []  # set when the n-th connection saw EOF or closed
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Raw:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = self.accepted
        self.accepted += 1
        self.closed.append(asyncio.Event())
        try:
            await self.handler(n, reader, writer)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()  # FIN (or RST when the handler set SO_LINGER 0)
            self.closed[n].set()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """(head, body) of the next request on the connection, None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


async def answer_ok(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    seen: list[Any],
    *,
    heads_only: bool = False,
) -> None:
    """Answer every request on the connection with OK, keeping each (head, body), or its
    head only, in ``seen`` as it comes."""
    while (req := await read_request(reader)) is not None:
        seen.append(req[0] if heads_only else req)
        writer.write(OK)


async def until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def header_lines(head: bytes) -> list[tuple[str, str]]:
    out = []
    for line in head.split(b"\r\n")[1:]:
        if line:
            name, _, value = line.decode("latin-1").partition(":")
            out.append((name, value.strip()))
    return out


# -- a well-behaved server (uvicorn) ------------------------------------------------------------


class Echo:
    """ASGI: answers ``{"n": i, "body": ...}`` with a Content-Length, and records the client
    port of each request (one port = one TCP connection)."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.ports.append(scope["client"][1])
        data = json.dumps({"n": len(self.ports), "body": body.decode()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})


@pytest.fixture
def echo() -> Iterator[tuple[Echo, Server]]:
    app = Echo()
    with Server(app) as server:
        yield app, server


def test_keep_alive_reuses_one_connection(echo: tuple[Echo, Server]) -> None:
    app, server = echo

    async def run() -> list[Any]:
        pool = UpstreamPool()
        got = []
        for i in range(3):
            resp = await pool.request("POST", f"{server.url}/v1/x", [], f"b{i}".encode())
            got.append((resp.status, resp.header(b"content-length"), json.loads(await resp.read())))
            await resp.aclose()
            assert pool.idle_count() == 1
        await pool.aclose()
        assert pool.idle_count() == 0
        return got

    got = asyncio.run(run())
    assert [g[2] for g in got] == [{"n": i + 1, "body": f"b{i}"} for i in range(3)]
    assert all(status == 201 and length is not None for status, length, _ in got)
    assert len(app.ports) == 3 and len(set(app.ports)) == 1  # three requests, one connection


def test_content_length_body_is_read_whole(echo: tuple[Echo, Server]) -> None:
    _, server = echo

    async def run() -> tuple[int, bytes, bytes | None]:
        pool = UpstreamPool()
        resp = await pool.request("POST", f"{server.url}/x", [], b"x" * 300_000)
        body = await resp.read()
        await resp.aclose()
        await pool.aclose()
        return resp.status, body, resp.header(b"content-length")

    status, body, length = asyncio.run(run())
    assert status == 201 and length == str(len(body)).encode()
    assert json.loads(body)["body"] == "x" * 300_000


def test_sse_stream_from_uvicorn_arrives_chunked_and_whole() -> None:
    fake = FakeVendor()
    with Server(fake) as server:

        async def run() -> tuple[list[tuple[bytes, bytes]], list[bytes], int]:
            pool = UpstreamPool()
            resp = await pool.request(
                "POST",
                f"{server.url}/v1/chat/completions",
                [("content-type", "application/json")],
                b'{"stream": true}',
            )
            chunks = [c async for c in resp.chunks()]
            await resp.aclose()
            idle = pool.idle_count()
            await pool.aclose()
            return resp.headers, chunks, idle

        headers, chunks, idle = asyncio.run(run())
    assert (b"transfer-encoding", b"chunked") in headers
    events = b"".join(chunks).split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""] and len(events) == 5
    assert [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:3]] == [
        "w0 ",
        "w1 ",
        "w2 ",
    ]
    assert all(b"\r\n" not in c for c in chunks)  # the chunked framing is undone
    assert idle == 1  # a complete chunked exchange goes back to the pool


def test_a_chunked_body_is_handed_over_as_it_arrives() -> None:
    """The server holds the second chunk back until the client has the first: a client that
    buffered the whole body would wait forever (the test would hang, not pass)."""

    async def run() -> list[bytes]:
        first_seen = asyncio.Event()

        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                b"7\r\ndata: 1\r\n"
            )
            await writer.drain()
            await first_seen.wait()
            writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
            await writer.drain()
            await until_eof(reader)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", f"{raw.url}/stream", [], b"")
            got = []
            async for chunk in resp.chunks():
                got.append(chunk)
                first_seen.set()
            await resp.aclose()
            assert pool.idle_count() == 1
            await pool.aclose()
        return got

    assert asyncio.run(asyncio.wait_for(run(), 20)) == [b"data: 1", b"data: 2"]


# -- what is sent -----------------------------------------------------------------------------------


def test_request_headers_as_given_plus_host_and_length_once() -> None:
    async def run() -> tuple[bytes, bytes, int]:
        seen: list[tuple[bytes, bytes]] = []

        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await answer_ok(reader, writer, seen)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            given: list[tuple[str | bytes, str | bytes]] = [
                ("Authorization", "Bearer sk-x"),
                ("X-Dup", "1"),
                (b"x-dup", b"2"),
                ("Content-Type", "application/json"),
            ]
            resp = await pool.request("PUT", f"{raw.url}/v1/a%20b?x=1&y=2", given, b'{"a":1}')
            await resp.read()
            await resp.aclose()
            await pool.aclose()
            return seen[0][0], seen[0][1], raw.port

    head, body, port = asyncio.run(run())
    assert head.split(b"\r\n")[0] == b"PUT /v1/a%20b?x=1&y=2 HTTP/1.1"
    lines = header_lines(head)
    lower = [(k.lower(), v) for k, v in lines]
    assert [v for k, v in lower if k == "host"] == [f"127.0.0.1:{port}"]
    assert [v for k, v in lower if k == "content-length"] == ["7"] and body == b'{"a":1}'
    assert [(k, v) for k, v in lower if k not in ("host", "content-length")] == [
        ("authorization", "Bearer sk-x"),
        ("x-dup", "1"),
        ("x-dup", "2"),
        ("content-type", "application/json"),
    ]


def test_a_host_or_length_from_the_caller_is_never_sent_twice() -> None:
    async def run() -> tuple[list[bytes], UpstreamError, UpstreamError]:
        seen: list[bytes] = []

        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await answer_ok(reader, writer, seen, heads_only=True)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("POST", raw.url, [("Content-Length", "3")], b"abc")
            await resp.read()
            await resp.aclose()
            with pytest.raises(UpstreamError) as host:
                await pool.request("POST", raw.url, [("Host", "evil.example")], b"abc")
            with pytest.raises(UpstreamError) as length:
                await pool.request("POST", raw.url, [("Content-Length", "99")], b"abc")
            await pool.aclose()
        return seen, host.value, length.value

    seen, host, length = asyncio.run(run())
    assert len(seen) == 1  # the two refused requests sent nothing
    assert [v for k, v in header_lines(seen[0]) if k.lower() == "content-length"] == ["3"]
    assert host.kind == "protocol" and length.kind == "protocol"


def test_an_empty_body_is_sent_with_content_length_zero() -> None:
    async def run() -> bytes:
        seen: list[bytes] = []

        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            req = await read_request(reader)
            assert req is not None
            seen.append(req[0])
            writer.write(OK)
            await until_eof(reader)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            assert await resp.read() == b"ok"
            await resp.aclose()
            await pool.aclose()
        return seen[0]

    head = asyncio.run(run())
    assert head.startswith(b"GET / HTTP/1.1\r\n")
    assert [v for k, v in header_lines(head) if k.lower() == "content-length"] == ["0"]


def test_informational_responses_are_skipped() -> None:
    async def run() -> tuple[int, bytes]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
            await until_eof(reader)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("POST", raw.url, [], b"x")
            body = await resp.read()
            await resp.aclose()
            await pool.aclose()
        return resp.status, body

    assert asyncio.run(run()) == (200, b"ok")


# -- connections that end -------------------------------------------------------------------------


def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    """The server answers, then closes the kept-alive connection. Once the client has seen
    the close, the next request takes a fresh connection and succeeds."""

    async def run() -> tuple[int, int, list[int]]:
        served: list[int] = []

        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            served.append(n)
            writer.write(OK)
            await writer.drain()
            writer.close()  # FIN after a keep-alive answer

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            assert await resp.read() == b"ok"
            await resp.aclose()
            assert pool.idle_count() == 1
            (idle,) = [c for conns in pool._idle.values() for c in conns]
            await raw.closed[0].wait()
            for _ in range(1000):  # until the client's transport has taken in the FIN
                if idle.reader.at_eof():
                    break
                await asyncio.sleep(0.005)
            assert idle.reader.at_eof()
            exchanges = 0
            real = pool._exchange

            async def counting(*args: Any) -> Any:
                nonlocal exchanges
                exchanges += 1
                return await real(*args)

            pool._exchange = counting  # type: ignore[method-assign,assignment]
            resp = await pool.request("GET", raw.url, [], b"")
            status = resp.status
            assert await resp.read() == b"ok"
            await resp.aclose()
            await pool.aclose()
            assert exchanges == 1  # not tried on the closed connection first
            return status, raw.accepted, served

    status, accepted, served = asyncio.run(run())
    assert status == 200 and accepted == 2 and served == [0, 1]


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_reused_connection_closed_before_any_answer_is_retried_once(how: str) -> None:
    """The stale check cannot see it (the server closes only when the second request comes):
    the request goes once more on a fresh connection."""

    async def run() -> tuple[int, bytes, int, list[int]]:
        answered: list[int] = []

        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            if n == 0:  # first connection: answer once, keep alive, then drop the next request
                writer.write(OK)
                answered.append(n)
                await read_request(reader)
                if how == "rst":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                return  # Raw closes the connection
            writer.write(OK)
            answered.append(n)
            await until_eof(reader)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            await resp.read()
            await resp.aclose()
            resp = await pool.request("POST", raw.url, [], b"again")
            body = await resp.read()
            await resp.aclose()
            await pool.aclose()
            return resp.status, body, raw.accepted, answered

    status, body, accepted, answered = asyncio.run(run())
    assert (status, body) == (200, b"ok") and accepted == 2 and answered == [0, 1]


def test_a_reused_connection_that_began_an_answer_is_not_retried() -> None:
    """Once a byte of the answer came, the server has the request: sending it again could
    do it twice."""

    async def run() -> tuple[UpstreamError, int, int]:
        asked = 0

        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            nonlocal asked
            while await read_request(reader) is not None:
                asked += 1
                if asked == 1:
                    writer.write(OK)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-")
                    await writer.drain()
                    return

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            await resp.read()
            await resp.aclose()
            with pytest.raises(UpstreamError) as info:
                await pool.request("POST", raw.url, [], b"charge the card")
            await pool.aclose()
            return info.value, raw.accepted, asked

    err, accepted, asked = asyncio.run(run())
    assert err.kind == "protocol" and accepted == 1 and asked == 2


def test_a_fresh_connection_closed_without_an_answer_is_not_retried() -> None:
    async def run() -> tuple[UpstreamError, int, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)  # and close without a word

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            with pytest.raises(UpstreamError) as info:
                await pool.request("POST", raw.url, [], b"once")
            idle = pool.idle_count()
            await pool.aclose()
            return info.value, raw.accepted, idle

    err, accepted, idle = asyncio.run(run())
    assert err.kind in ("closed", "protocol") and accepted == 1 and idle == 0


@pytest.mark.parametrize("fresh_answers", [True, False])
def test_the_retry_goes_to_a_fresh_connection_once(fresh_answers: bool) -> None:
    """Two kept-alive connections, both dropped by the server at their next request (a
    vendor restart the client has not noticed yet): the retry takes a fresh connection, not
    the other stale one, and is made once only."""

    async def run() -> tuple[Any, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            if n < 2:
                writer.write(OK)
                await read_request(reader)  # then close, unanswered
            elif fresh_answers:
                writer.write(OK)
                await until_eof(reader)
            # else: a fresh connection is closed unanswered too

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            first = await pool.request("GET", raw.url, [], b"")
            second = await pool.request("GET", raw.url, [], b"")  # the first is still busy
            for resp in (first, second):
                await resp.read()
                await resp.aclose()
            assert pool.idle_count() == 2
            try:
                resp = await pool.request("GET", raw.url, [], b"")
            except UpstreamError as exc:
                result: Any = exc
            else:
                result = (resp.status, await resp.read())
                await resp.aclose()
            await pool.aclose()
            return result, raw.accepted

    result, accepted = asyncio.run(run())
    assert accepted == 3
    if fresh_answers:
        assert result == (200, b"ok")
    else:
        assert isinstance(result, UpstreamError) and result.kind in ("closed", "protocol")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",  # short body
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",  # no last chunk
    ],
    ids=["content-length", "chunked"],
)
def test_a_server_that_closes_mid_response(answer: bytes) -> None:
    async def run() -> tuple[list[bytes], UpstreamError, int, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            got: list[bytes] = []
            with pytest.raises(UpstreamError) as info:
                async for chunk in resp.chunks():
                    got.append(chunk)  # noqa: PERF401 - what came before the break
            await resp.aclose()
            idle = pool.idle_count()
            with pytest.raises(UpstreamError, match="closed"):
                await resp.read()  # the response is over
            await pool.aclose()
            return got, info.value, idle, raw.accepted

    got, err, idle, accepted = asyncio.run(run())
    assert err.kind in ("closed", "protocol") and idle == 0 and accepted == 1
    assert b"".join(got) in (b"0123456789", b"hello")


def test_a_server_that_closes_mid_head_is_a_protocol_error() -> None:
    async def run() -> tuple[UpstreamError, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Ty")
            await writer.drain()

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            with pytest.raises(UpstreamError) as info:
                await pool.request("GET", raw.url, [], b"")
            idle = pool.idle_count()
            await pool.aclose()
            return info.value, idle

    err, idle = asyncio.run(run())
    assert err.kind == "protocol" and idle == 0


def test_a_response_closed_before_its_end_is_not_reused() -> None:
    async def run() -> tuple[int, int, list[int]]:
        answered: list[int] = []
        big = b"y" * 1_000_000

        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            while await read_request(reader) is not None:
                answered.append(n)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
                await writer.drain()

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            async for _ in resp.chunks():
                break  # one piece, then give up on the rest
            await resp.aclose()
            after_partial = pool.idle_count()
            resp = await pool.request("GET", raw.url, [], b"")  # unread: closed at once
            await resp.aclose()
            after_unread = pool.idle_count()
            resp = await pool.request("GET", raw.url, [], b"")
            assert await resp.read() == big
            await resp.aclose()
            after_whole = pool.idle_count()
            await pool.aclose()
            return after_partial + after_unread, after_whole, answered

    not_kept, kept, answered = asyncio.run(run())
    assert not_kept == 0 and kept == 1 and answered == [0, 1, 2]  # three connections


def test_cancelled_mid_body_closes_the_connection() -> None:
    async def run() -> tuple[list[bytes], int, bool]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await until_eof(reader)  # the rest never comes; wait for the client to leave

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            got: list[bytes] = []
            first = asyncio.Event()

            async def relay() -> None:  # as the gateway does: aclose in finally
                resp = await pool.request("GET", raw.url, [], b"")
                try:
                    async for chunk in resp.chunks():
                        got.append(chunk)
                        first.set()
                finally:
                    await resp.aclose()

            task = asyncio.ensure_future(relay())
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(raw.closed[0].wait(), 10)  # the server saw the close
            idle = pool.idle_count()
            await pool.aclose()
            return got, idle, raw.closed[0].is_set()

    got, idle, closed = asyncio.run(run())
    assert got == [b"first"] and idle == 0 and closed


def test_cancelled_while_waiting_for_the_head_closes_the_connection() -> None:
    async def run() -> tuple[int, int]:
        asked = asyncio.Event()

        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            asked.set()
            await until_eof(reader)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            task = asyncio.ensure_future(pool.request("POST", raw.url, [], b"slow"))
            await asked.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(raw.closed[0].wait(), 10)
            idle = pool.idle_count()
            await pool.aclose()
            return idle, raw.accepted

    assert asyncio.run(run()) == (0, 1)


def test_idle_limits() -> None:
    async def run() -> tuple[int, int, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            while await read_request(reader) is not None:
                writer.write(OK)

        async with Raw(handler) as raw:
            expired = UpstreamPool(idle_seconds=0)  # every idle connection is already too old
            for _ in range(2):
                resp = await expired.request("GET", raw.url, [], b"")
                await resp.read()
                await resp.aclose()
            await expired.aclose()
            after_expired = raw.accepted
            capped = UpstreamPool(max_idle_per_host=1)
            a = await capped.request("GET", raw.url, [], b"")
            b = await capped.request("GET", raw.url, [], b"")
            for resp in (a, b):
                await resp.read()
                await resp.aclose()
            idle = capped.idle_count()
            await capped.aclose()
            return after_expired, idle, raw.accepted

    assert asyncio.run(run()) == (2, 1, 4)


def test_a_closed_pool_refuses_and_drops_what_comes_back() -> None:
    async def run() -> tuple[UpstreamError, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            while await read_request(reader) is not None:
                writer.write(OK)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            await pool.aclose()
            await resp.read()
            await resp.aclose()  # complete, but the pool is closed: not kept
            idle = pool.idle_count()
            with pytest.raises(UpstreamError) as info:
                await pool.request("GET", raw.url, [], b"")
            return info.value, idle

    err, idle = asyncio.run(run())
    assert err.kind == "closed" and idle == 0


# -- not getting there ----------------------------------------------------------------------------


def test_connect_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens here once closed

    async def run() -> UpstreamError:
        pool = UpstreamPool()
        with pytest.raises(UpstreamError) as info:
            await pool.request("GET", f"http://127.0.0.1:{dead}/v1", [], b"")
        await pool.aclose()
        return info.value

    err = asyncio.run(run())
    assert err.kind == "connect" and str(dead) in str(err)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http:///nohost", "127.0.0.1:80/x"])
def test_not_an_http_url(url: str) -> None:
    async def run() -> UpstreamError:
        with pytest.raises(UpstreamError) as info:
            await UpstreamPool().request("GET", url, [], b"")
        return info.value

    assert asyncio.run(run()).kind == "connect"


def test_an_unsendable_request_is_a_protocol_error() -> None:
    async def run() -> UpstreamError:
        with pytest.raises(UpstreamError) as info:
            await UpstreamPool().request("GET", "http://127.0.0.1:9/x", [("bad\nname", "v")], b"")
        return info.value

    assert asyncio.run(run()).kind == "protocol"


def test_connect_timeout() -> None:
    """A loopback listener whose accept queue is full drops further SYNs (Linux), so a
    connect to it hangs. The test checks that this holds here before relying on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    try:
        for _ in range(8):
            probe = socket.socket()
            probe.settimeout(0.2)
            held.append(probe)
            try:
                probe.connect(("127.0.0.1", port))
            except TimeoutError:
                break  # the queue is full: connects now hang
            except OSError:
                pytest.skip("a full accept queue refuses here instead of dropping")
        else:
            pytest.skip("cannot fill a loopback accept queue on this system")

        async def run() -> UpstreamError:
            pool = UpstreamPool(connect_timeout=0.2)
            with pytest.raises(UpstreamError) as info:
                await pool.request("GET", f"http://127.0.0.1:{port}/", [], b"")
            await pool.aclose()
            return info.value

        err = asyncio.run(run())
        assert err.kind == "timeout" and "0.2 s" in str(err)
    finally:
        for s in held:
            s.close()
        listener.close()


# -- TLS --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and two leaves it signed: api.openai.com and evil.example."""
    folder = tmp_path_factory.mktemp("pki")
    ca = TestCA.create()
    out = {"ca": ca.write(folder / "ca.pem")}
    for host in ("api.openai.com", "evil.example"):
        cert, key = ca.leaf(host)
        out[host] = folder / f"{host}.pem"
        out[host].write_bytes(cert_pem(cert) + key_pem(key))
    return out


def tls_server_context(pem: Path, names: list[str | None]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    ctx.set_alpn_protocols(["http/1.1"])

    def sni(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    ctx.sni_callback = sni
    return ctx


def tls_exchange(
    pki: dict[str, Path], leaf: str, extra_ca: bool
) -> tuple[Any, list[str | None], list[bytes], list[str | None]]:
    """One request to https://api.openai.com/v1/models, dialled at a loopback TLS server that
    shows ``leaf``. Returns (status and body, or the UpstreamError), SNI names, request
    heads, negotiated ALPN."""
    names: list[str | None] = []
    heads: list[bytes] = []
    alpn: list[str | None] = []

    async def run() -> Any:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            alpn.append(writer.get_extra_info("ssl_object").selected_alpn_protocol())
            await answer_ok(reader, writer, heads, heads_only=True)

        async with Raw(handler, tls_server_context(pki[leaf], names)) as raw:
            pool = UpstreamPool(
                resolve={"API.OpenAI.com": ("127.0.0.1", raw.port)},
                extra_ca=str(pki["ca"]) if extra_ca else None,
            )
            try:
                resp = await pool.request("GET", "https://api.openai.com/v1/models", [], b"")
            except UpstreamError as exc:
                return exc
            body = await resp.read()
            await resp.aclose()
            second = await pool.request("GET", "https://api.openai.com/v1/models", [], b"")
            await second.read()
            await second.aclose()
            await pool.aclose()
            return resp.status, body, raw.accepted

    return asyncio.run(run()), names, heads, alpn


def test_https_with_the_extra_ca_succeeds(pki: dict[str, Path]) -> None:
    result, names, heads, alpn = tls_exchange(pki, "api.openai.com", extra_ca=True)
    assert result == (200, b"ok", 1)  # two requests, one TLS connection
    assert names == ["api.openai.com"]  # SNI is the name, not the address dialled
    assert alpn == ["http/1.1"]
    assert [v for k, v in header_lines(heads[0]) if k.lower() == "host"] == ["api.openai.com"]


def test_https_without_the_ca_fails_verification(pki: dict[str, Path]) -> None:
    result, _, heads, _ = tls_exchange(pki, "api.openai.com", extra_ca=False)
    assert isinstance(result, UpstreamError) and result.kind == "tls", result
    assert "certificate" in str(result).lower() and heads == []


def test_https_with_a_leaf_for_another_name_fails(pki: dict[str, Path]) -> None:
    result, _, heads, _ = tls_exchange(pki, "evil.example", extra_ca=True)
    assert isinstance(result, UpstreamError) and result.kind == "tls", result
    assert heads == []  # nothing was sent to the wrong server


def test_writing_to_a_connection_the_peer_already_reset_is_an_upstream_error() -> None:
    """uvloop raises RuntimeError when writing to a transport that a reset has closed (the
    gateway answered 500 once in CI); it must come out as UpstreamError like any reset."""
    uvloop = pytest.importorskip("uvloop")
    import h11

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    async def run() -> None:
        pool = UpstreamPool()
        key = ("http", "127.0.0.1", port)
        conn = await pool._connect(key)
        peer, _ = listener.accept()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()  # RST
        for _ in range(100):  # until the event loop has seen the reset
            if conn.writer.transport.is_closing():
                break
            await asyncio.sleep(0.01)
        head = h11.Request(
            method="POST", target="/v1/x", headers=[("host", "x"), ("content-length", "2")]
        )
        with pytest.raises(UpstreamError) as info:
            await pool._exchange(key, conn, head, b"{}")
        assert info.value.kind in ("closed", "protocol")
        conn.close()
        await pool.aclose()

    try:
        uvloop.run(run())
    finally:
        listener.close()


# -- the httptools client's edge cases --------------------------------------------------------


def run_on(loop: str, main: Callable[[], Awaitable[Any]]) -> Any:
    """``main()`` on the stdlib event loop or on uvloop (what the gateway runs on)."""
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(asyncio.wait_for(main(), 20))
    return asyncio.run(asyncio.wait_for(main(), 20))


LOOPS = ["asyncio", "uvloop"]


@pytest.mark.parametrize("loop", LOOPS)
def test_head_ends_with_its_head_and_is_not_pooled(loop: str) -> None:
    """The answer to a HEAD names a length it does not send: the exchange is complete at the
    head (not waiting for 5 bytes that never come), and that connection is not reused."""

    async def main() -> tuple[int, bytes | None, bytes, int, bytes, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            while (req := await read_request(reader)) is not None:
                if req[0].startswith(b"HEAD "):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
                else:
                    writer.write(OK)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("HEAD", raw.url, [], b"")
            body = await resp.read()
            await resp.aclose()
            idle = pool.idle_count()
            after = await pool.request("GET", raw.url, [], b"")
            after_body = await after.read()
            await after.aclose()
            await pool.aclose()
            return resp.status, resp.header(b"content-length"), body, idle, after_body, raw.accepted

    assert run_on(loop, main) == (200, b"5", b"", 0, b"ok", 2)


def test_informational_answers_with_headers_are_skipped_and_101_is_refused() -> None:
    async def main() -> tuple[int, list[tuple[bytes, bytes]], bytes, UpstreamError]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            if n == 0:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
                writer.write(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                    b"HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok"
                )
            else:
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\n\r\n\x81\x00"
                )
            await until_eof(reader)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("POST", raw.url, [], b"x")
            body = await resp.read()
            await resp.aclose()
            pool2 = UpstreamPool()
            with pytest.raises(UpstreamError) as info:
                await pool2.request("GET", raw.url, [], b"")
            await pool.aclose()
            await pool2.aclose()
        return resp.status, resp.headers, body, info.value

    status, headers, body, err = run_on("asyncio", main)
    assert (status, headers, body) == (201, [(b"x-a", b"1"), (b"content-length", b"2")], b"ok")
    assert err.kind == "protocol" and "101" in str(err)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_body_delimited_by_the_close_is_read_to_the_end(loop: str) -> None:
    async def main() -> tuple[list[tuple[bytes, bytes]], bytes, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst,")
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(b"second")
            await writer.drain()  # then FIN: the end of the body

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            body = await resp.read()
            await resp.aclose()
            idle = pool.idle_count()
            await pool.aclose()
        return resp.headers, body, idle

    headers, body, idle = run_on(loop, main)
    assert headers == [(b"content-type", b"text/plain")]
    assert body == b"first,second" and idle == 0  # complete, but the connection is gone


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_chunked_body_cut_short_is_a_closed_error(how: str) -> None:
    async def main() -> tuple[list[bytes], UpstreamError, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)  # the client is waiting for the next chunk by now
            if how == "rst":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            got: list[bytes] = []
            with pytest.raises(UpstreamError) as info:
                async for chunk in resp.chunks():
                    got.append(chunk)  # noqa: PERF401 - what came before the break
            await resp.aclose()
            idle = pool.idle_count()
            await pool.aclose()
        return got, info.value, idle

    got, err, idle = run_on("asyncio", main)
    assert got == [b"hello"] and err.kind == "closed" and idle == 0


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "extra", [b"GARBAGE", OK, b"late"], ids=["garbage", "a-second-answer", "late-bytes"]
)
def test_bytes_after_an_answer_are_not_taken_for_the_next(loop: str, extra: bytes) -> None:
    """Whatever follows a complete answer on a kept-alive connection (in the same segment, or
    later while the connection is idle) belongs to no request: that connection is closed,
    and the next request gets its own answer on a fresh one."""

    async def main() -> tuple[bytes, bytes, int, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            while await read_request(reader) is not None:
                if n == 0 and extra == b"late":
                    writer.write(OK)
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
                elif n == 0:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" + extra)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            first = await resp.read()
            await resp.aclose()
            if extra == b"late":
                await asyncio.wait_for(raw.closed[0].wait(), 10)  # the client dropped it
            resp = await pool.request("GET", raw.url, [], b"")
            second = await resp.read()
            await resp.aclose()
            idle = pool.idle_count()
            await pool.aclose()
        return first, second, idle, raw.accepted

    first, second, idle, accepted = run_on(loop, main)
    assert (first, second) == (b"first" if extra != b"late" else b"ok", b"second")
    assert accepted == 2 and idle == 1


@pytest.mark.parametrize(
    ("method", "url", "headers"),
    [
        ("GE T", "/x", []),
        ("GET\r\nX-Evil: 1", "/x", []),
        ("GET", "/a b", []),
        ("GET", "/caf\u00e9", []),
        ("GET", "/x", [("", "v")]),
        ("GET", "/x", [("X Name", "v")]),
        ("GET", "/x", [(b"x:name", b"v")]),
        ("GET", "/x", [("X-A", "v\r\nX-Evil: 1")]),
        ("GET", "/x", [("X-A", "v\nx")]),
        ("GET", "/x", [(b"X-A", b"v\x00")]),
        ("GET", "/x", [("X-A", "caf\u00e9")]),
        ("GET", "/x", [("Transfer-Encoding", "chunked")]),
        ("GET", "/x", [("host", "127.0.0.1")]),
    ],
)
def test_an_unsendable_request_sends_nothing(
    method: str, url: str, headers: list[tuple[str | bytes, str | bytes]]
) -> None:
    async def main() -> tuple[UpstreamError, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await until_eof(reader)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            with pytest.raises(UpstreamError) as info:
                await pool.request(method, raw.url + url, headers, b"")
            await pool.aclose()
            await asyncio.sleep(0)
        return info.value, raw.accepted

    err, accepted = run_on("asyncio", main)
    assert err.kind == "protocol" and "cannot send this request" in str(err)
    assert accepted == 0  # refused before a connection was even made


def test_header_names_as_bytes_or_str_are_sent_as_given() -> None:
    async def main() -> bytes:
        heads: list[bytes] = []

        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await answer_ok(reader, writer, heads, heads_only=True)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            for _ in range(2):  # the second time from the validated-name cache
                resp = await pool.request(
                    "OPTIONS", raw.url + "/x?q=%20", [(b"X-Bytes", "s"), ("X-Str", b"b")], b""
                )
                await resp.read()
                await resp.aclose()
            await pool.aclose()
        assert heads[0] == heads[1]
        return heads[0]

    head = run_on("asyncio", main)
    assert head.split(b"\r\n")[0] == b"OPTIONS /x?q=%20 HTTP/1.1"
    assert b"\r\nX-Bytes: s\r\nX-Str: b\r\ncontent-length: 0\r\n\r\n" in head


@pytest.mark.parametrize("loop", LOOPS)
def test_response_headers_lower_case_duplicates_in_order(loop: str) -> None:
    async def main() -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes | None, bytes]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            for piece in (
                b"HTTP/1.1 404 Not ",
                b"Found\r\nX-Dup: 1\r\nSet-Cookie: a=1\r\nx-dup",
                b": 2\r\nSET-COOKIE: b=2\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
            ):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.005)
            await until_eof(reader)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            body = await resp.read()
            await resp.aclose()
            await pool.aclose()
        return resp.status, resp.reason, resp.headers, resp.header(b"x-dup"), body

    status, reason, headers, dup, body = run_on(loop, main)
    assert (status, reason, dup, body) == (404, b"Not Found", b"1", b"abc")
    assert headers == [
        (b"x-dup", b"1"),
        (b"set-cookie", b"a=1"),
        (b"x-dup", b"2"),
        (b"set-cookie", b"b=2"),
        (b"transfer-encoding", b"chunked"),
    ]  # and no trailer


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_slow_reader_pauses_the_socket_and_gets_every_byte(loop: str, framing: str) -> None:
    """16 MiB sent as fast as the server can; the reader takes one piece, then dawdles: the
    client buffers a bounded amount and stops reading the socket, then resumes as the reader
    catches up, and the body arrives byte for byte (and the connection is kept)."""
    big = bytes(range(256)) * (64 * 1024)  # 16 MiB

    async def main() -> tuple[bytes, list[int], bool, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            while await read_request(reader) is not None:
                if framing == "length":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big))
                    writer.write(big)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for i in range(0, len(big), 1 << 20):
                        writer.write(b"%x\r\n%s\r\n" % (1 << 20, big[i : i + (1 << 20)]))
                    writer.write(b"0\r\n\r\n")
                await writer.drain()

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            conn = resp._conn
            assert conn is not None
            got: list[bytes] = []
            buffered: list[int] = []
            paused = False
            async for chunk in resp.chunks():
                got.append(chunk)
                if len(got) == 1:  # dawdle: let the socket fill what it will
                    for _ in range(20):
                        await asyncio.sleep(0.005)
                        buffered.append(conn._buffered)
                    paused = conn._read_paused
            await resp.aclose()
            idle = pool.idle_count()
            await pool.aclose()
        return b"".join(got), buffered, paused, idle

    body, buffered, paused, idle = run_on(loop, main)
    assert body == big and idle == 1
    assert paused and max(buffered) <= 256 * 1024 + (1 << 20)  # the limit, plus one read


@pytest.mark.parametrize("loop", LOOPS)
def test_a_large_request_body_arrives_whole_through_a_slow_reader(loop: str) -> None:
    body = bytes(range(256)) * (32 * 1024)  # 8 MiB: the writer waits for the socket

    async def main() -> tuple[int, bytes]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await asyncio.sleep(0.1)  # let the client's writes back up
            req = await read_request(reader)
            assert req is not None
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
            writer.write(b"ok" if req[1] == body else b"no")
            await until_eof(reader)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("PUT", raw.url, [], body)
            got = await resp.read()
            await resp.aclose()
            await pool.aclose()
        return resp.status, got

    assert run_on(loop, main) == (200, b"ok")


def test_an_answer_before_the_whole_body_went_out_ends_the_writing() -> None:
    """A server that answers 413 without reading the body, and keeps the connection: the
    client takes the answer instead of waiting to write the rest, and drops the connection."""
    body = b"z" * (64 * 1024 * 1024)

    async def main() -> tuple[int, bytes, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
            await writer.drain()
            await asyncio.sleep(30)  # never reads the body, never closes

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("POST", raw.url, [], body)
            got = await resp.read()
            await resp.aclose()
            idle = pool.idle_count()
            await pool.aclose()
        return resp.status, got, idle

    assert run_on("asyncio", main) == (413, b"big", 0)


def test_uvloops_runtime_error_on_write_is_a_reset() -> None:
    """uvloop raises RuntimeError when writing to a transport a reset has closed, before the
    protocol hears of it; it comes out as a connection that closed without an answer."""
    from veilpix.proxy._upstream import _Conn

    class Gone(asyncio.Transport):
        def write(self, data: Any) -> None:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

        def is_closing(self) -> bool:
            return False

        def abort(self) -> None:
            pass

    async def main() -> UpstreamError:
        pool = UpstreamPool()
        conn = _Conn(asyncio.get_running_loop())
        conn.connection_made(Gone())
        with pytest.raises(UpstreamError) as info:
            await pool._exchange(("http", "x", 80), conn, b"GET / HTTP/1.1\r\n\r\n", b"")
        return info.value

    assert run_on("asyncio", main).kind == "closed"


@pytest.mark.parametrize("loop", LOOPS)
def test_cancelled_waiting_leaves_no_waiter_and_closes(loop: str) -> None:
    async def main() -> tuple[bool, bool, bool, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
            await until_eof(reader)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            resp = await pool.request("GET", raw.url, [], b"")
            conn = resp._conn
            assert conn is not None
            reading = asyncio.ensure_future(resp.read())
            for _ in range(100):
                await asyncio.sleep(0.005)
                if conn._waiter is not None:
                    break
            waiting = conn._waiter is not None
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            await asyncio.wait_for(raw.closed[0].wait(), 10)
            await resp.aclose()
            idle = pool.idle_count()
            await pool.aclose()
        return waiting, conn._waiter is None, conn.transport.is_closing(), idle

    assert run_on(loop, main) == (True, True, True, 0)


@pytest.mark.parametrize("endless", ["headers", "continues"])
def test_a_head_that_never_ends_is_a_protocol_error(endless: str) -> None:
    async def main() -> tuple[UpstreamError, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            if endless == "headers":
                writer.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(10_000):
                if endless == "headers":
                    writer.write(b"X-Pad: " + b"p" * 100 + b"\r\n")
                else:
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
            await until_eof(reader)

        async with Raw(handler) as raw:
            pool = UpstreamPool()
            with pytest.raises(UpstreamError) as info:
                await pool.request("GET", raw.url, [], b"")
            idle = pool.idle_count()
            await pool.aclose()
        return info.value, idle

    err, idle = run_on("asyncio", main)
    assert err.kind == "protocol" and "head" in str(err) and idle == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_a_slow_reader_over_tls_pauses_and_gets_every_byte(pki: dict[str, Path], loop: str) -> None:
    big = bytes(range(256)) * (16 * 1024)  # 4 MiB

    async def main() -> tuple[bytes, bool, int]:
        async def handler(
            n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            while await read_request(reader) is not None:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
                await writer.drain()

        names: list[str | None] = []
        async with Raw(handler, tls_server_context(pki["api.openai.com"], names)) as raw:
            pool = UpstreamPool(
                resolve={"api.openai.com": ("127.0.0.1", raw.port)}, extra_ca=str(pki["ca"])
            )
            resp = await pool.request("GET", "https://api.openai.com/v1/files/x", [], b"")
            conn = resp._conn
            assert conn is not None
            got: list[bytes] = []
            paused = False
            async for chunk in resp.chunks():
                got.append(chunk)
                if len(got) == 1:
                    for _ in range(50):
                        await asyncio.sleep(0.005)
                        if conn._read_paused:
                            paused = True
                            break
            await resp.aclose()
            idle = pool.idle_count()
            await pool.aclose()
        return b"".join(got), paused, idle

    body, paused, idle = run_on(loop, main)
    assert body == big and paused and idle == 1
