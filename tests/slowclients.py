"""Misbehaving clients for the proxy's limits: connections from other loopback addresses
(127.0.0.2, ...: Linux routes all of 127/8 to lo), and a slowloris that sends a request head a
byte at a time and notes when the server closes each connection. Loopback only."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

ATTACKERS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def need_other_loopback_addresses() -> None:
    """Skip where 127.0.0.2 cannot be a source address (macOS has only 127.0.0.1)."""
    try:
        with socket.socket() as sock:
            sock.bind((ATTACKERS[-1], 0))
    except OSError:
        pytest.skip("127.0.0.2-4 are not usable as source addresses here")


def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``check`` until it holds; fail the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def connect_from(source: str, port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
    )


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes (a reset after an answer counts as a
    close); TimeoutError when it keeps the connection open longer than ``timeout``."""
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def header(answer: bytes, name: str) -> str | None:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


class Slowloris:
    """``per_address`` connections from each of ``addresses``, each sending ``head`` and then
    one more byte every 0.1 s (never the end of the head), until the server closes it.
    ``lifetimes`` holds how long each lived; ``answers`` what the server sent."""

    def __init__(
        self,
        port: int,
        head: bytes,
        *,
        addresses: tuple[str, ...] = ATTACKERS,
        per_address: int = 8,
    ) -> None:
        self.port, self.head = port, head
        self.addresses, self.per_address = addresses, per_address
        self.socks: list[socket.socket] = []
        self.opened: list[float] = []
        self.lifetimes: dict[int, float] = {}
        self.answers: dict[int, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def __enter__(self) -> Slowloris:
        for address in self.addresses:
            for _ in range(self.per_address):
                sock = connect_from(address, self.port)
                self.opened.append(time.monotonic())
                sock.sendall(self.head)
                sock.setblocking(False)
                self.socks.append(sock)
        self._thread.start()
        return self

    def _trickle(self) -> None:
        while not self._stop.is_set() and len(self.lifetimes) < len(self.socks):
            for i, sock in enumerate(self.socks):
                if i in self.lifetimes:
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data:
                    self.answers[i] = self.answers.get(i, b"") + data
                    continue
                if data is not None:  # EOF or reset: the server closed it
                    self.lifetimes[i] = time.monotonic() - self.opened[i]
                    continue
                try:
                    sock.send(b"a")
                except BlockingIOError:
                    pass
                except OSError:
                    self.lifetimes[i] = time.monotonic() - self.opened[i]
            self._stop.wait(0.1)

    def open_count(self) -> int:
        return len(self.socks) - len(self.lifetimes)

    def wait_all_closed(self, seconds: float = 10.0) -> list[float]:
        """How long each connection lived; fails when some are still open after ``seconds``."""
        deadline = time.monotonic() + seconds
        while len(self.lifetimes) < len(self.socks):
            assert time.monotonic() < deadline, f"{self.open_count()} slow connections still open"
            time.sleep(0.05)
        return [self.lifetimes[i] for i in range(len(self.socks))]

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.socks:
            sock.close()
