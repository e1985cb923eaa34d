"""Helpers for tests that drive the intercept proxy on loopback: a TLS fake vendor, the proxy
on its own event loop, raw CONNECT and TLS sockets through it, and an h11 client that parses
answers with h11 rather than with the proxy's own code."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import h11

from pki import VendorPKI
from servers import Server
from veilpix.proxy._intercept import InterceptProxy

OPENAI = "api.openai.com"


class TLSServer(Server):
    """The shared loopback Server helper, serving TLS."""

    def __init__(self, app: Any, pki: VendorPKI) -> None:
        super().__init__(app)
        self.server.config.ssl_certfile = str(pki.cert)
        self.server.config.ssl_keyfile = str(pki.key)


class Running:
    """An InterceptProxy on its own event loop in a thread (the tests' clients block)."""

    def __init__(self, proxy: InterceptProxy) -> None:
        self.proxy = proxy
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        self.call(self.proxy.start("127.0.0.1", 0))
        return self

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    @property
    def port(self) -> int:
        return self.proxy.address[1]

    @property
    def url(self) -> str:
        return self.proxy.url

    def metrics(self) -> str:
        return self.proxy.gateway.metrics.render()

    def __exit__(self, *exc: object) -> None:
        self.call(self.proxy.aclose())
        self.call(self.proxy.gateway.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def connect(port: int, target: str, *headers: str) -> tuple[socket.socket, int, bytes]:
    """A raw CONNECT to the proxy: the socket, the status and the head of the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = "".join(f"{h}\r\n" for h in headers)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{lines}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)  # one at a time: nothing after the head may be consumed
        if not byte:
            break
        head += byte
    status = int(head.split(b" ", 2)[1]) if head else 0
    return sock, status, head


def read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def tls(port: int, ca: Path, host: str = OPENAI, sni: str | None = None) -> ssl.SSLSocket:
    """A TLS connection through the proxy, verified against the proxy's CA."""
    sock, status, head = connect(port, f"{host}:443")
    assert status == 200, head
    context = ssl.create_default_context(cafile=str(ca))
    return context.wrap_socket(sock, server_hostname=sni or host)


class H11Client:
    """HTTP/1.1 over a socket, parsed with h11 (not with the proxy's own code path)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.conn = h11.Connection(h11.CLIENT)

    def send(self, *events: Any) -> None:
        for event in events:
            self.sock.sendall(self.conn.send(event) or b"")

    def event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(self.sock.recv(65536))

    def response(self) -> tuple[int, dict[str, str], bytes]:
        head = self.event()
        while isinstance(head, h11.InformationalResponse):
            head = self.event()
        assert isinstance(head, h11.Response), head
        body = b""
        while not isinstance(event := self.event(), h11.EndOfMessage):
            body += event.data
        headers = {k.decode(): v.decode() for k, v in head.headers}
        return head.status_code, headers, body

    def next_cycle(self) -> None:
        self.conn.start_next_cycle()


def request(method: str, target: str, *headers: tuple[str, str], host: str = OPENAI) -> h11.Request:
    return h11.Request(method=method, target=target, headers=[("host", host), *headers])
