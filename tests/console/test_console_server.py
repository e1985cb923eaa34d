"""The console's server against the clients a demanding reviewer sent: a head trickled a
line at a time, a crowd from one address, a huge body announced before anyone signed in, a
silent connection to the TLS port, odd Content-Length values, escape codes in a path."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import veilpix.console._http as console_http
from consolekit import console, fill_log
from pki import VendorPKI
from veilpix.cli._audit_serve import access_text
from veilpix.console._serve import Running, start


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("server") / "audit.db"
    fill_log(path, 3, hostile=False)
    return path


@pytest.fixture
def served(logged: Path) -> Iterator[tuple[Running, list[str]]]:
    lines: list[str] = []
    app = console(logged, hosts=frozenset())
    running = start(app, port=0)
    # the lines as veilpix audit serve --access-log writes them
    running.server._access_log = lambda m, p, s: lines.append(access_text(m, p, s))
    try:
        yield running, lines
    finally:
        running.stop()
        app.log.close()


def _connect(running: Running, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", running.server.port), timeout=10, source_address=(source, 0)
    )
    return sock


def _answer(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                break
    except (ConnectionError, TimeoutError):
        pass
    return data


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def test_a_trickled_head_is_cut_off(served, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    running, _ = served
    monkeypatch.setattr(console_http, "HEAD_DEADLINE", 1.0)
    sock = _connect(running)
    sock.sendall(b"GET / HTTP/1.1\r\n")
    started = time.monotonic()
    try:
        for i in range(6):  # a header line every 0.5 s: each read is quick, the head is not
            sock.sendall(f"X-Slow-{i}: y\r\n".encode())
            time.sleep(0.5)
    except OSError:
        pass
    assert _closed_within(sock, 5)
    assert time.monotonic() - started < 5
    sock.close()


def test_an_idle_keep_alive_connection_is_let_go(served, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    running, _ = served
    monkeypatch.setattr(console_http, "HEAD_DEADLINE", 1.0)
    sock = _connect(running)
    sock.sendall(f"GET /login HTTP/1.1\r\nHost: 127.0.0.1:{running.server.port}\r\n\r\n".encode())
    assert b"200 OK" in _answer(sock)
    assert _closed_within(sock, 5)  # nothing more sent: closed after the deadline
    sock.close()


def test_one_address_cannot_take_every_connection(served, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    running, _ = served
    monkeypatch.setattr(console_http, "MAX_PER_CLIENT", 3)
    crowd = [_connect(running) for _ in range(3)]
    time.sleep(0.2)
    extra = _connect(running)
    assert b"503" in _answer(extra)
    other = _connect(running, source="127.0.0.2")  # another client is still served
    host = f"127.0.0.1:{running.server.port}"
    other.sendall(f"GET /login HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    assert b"200 OK" in _answer(other)
    for s in [*crowd, extra, other]:
        s.close()


def test_a_big_body_is_refused_before_it_is_read(served) -> None:  # type: ignore[no-untyped-def]
    running, _ = served
    for target in ("/login", "/lookup", "/actions/erase"):
        sock = _connect(running)
        # 60 MiB announced, none sent: the answer comes at once, not after a read
        sock.sendall(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {60 << 20}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
        )
        sock.settimeout(5)
        assert b"413" in _answer(sock), target
        sock.close()


def test_a_refused_photo_gets_a_readable_answer(served) -> None:  # type: ignore[no-untyped-def]
    """Signed out (a restarted console, an expired session), a photo's body is refused
    unread, and the browser still reads the refusal rather than a reset connection."""
    running, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=10)
    body = b"\xff\xd8" + b"x" * (4 << 20)
    conn.request(
        "POST",
        "/lookup",
        body,
        {"Host": f"127.0.0.1:{running.server.port}", "Content-Type": "application/octet-stream"},
    )
    r = conn.getresponse()
    assert r.status == 413 and b"sign in again" in r.read()


def test_when_full_a_waiting_connection_makes_room(served, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    running, _ = served
    monkeypatch.setattr(console_http, "MAX_CONNECTIONS", 3)
    host = f"127.0.0.1:{running.server.port}"
    waiting = []
    for source in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
        sock = _connect(running, source=source)
        sock.sendall(f"GET /login HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert b"200 OK" in _answer(sock)  # answered; kept alive, waiting for more
        waiting.append(sock)
    time.sleep(0.3)  # (each handler is back waiting for its next request)
    newcomer = _connect(running, source="127.0.0.6")
    newcomer.sendall(f"GET /login HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    assert b"200 OK" in _answer(newcomer)
    for s in [*waiting, newcomer]:
        s.close()


def test_a_signed_in_viewer_may_send_a_photo(served) -> None:  # type: ignore[no-untyped-def]
    running, _ = served
    link = running.login_url().split(running.url, 1)[1]
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=10)
    conn.request("GET", link)
    r = conn.getresponse()
    r.read()
    cookie = (r.getheader("Set-Cookie") or "").split(";")[0]
    body = b"\xff\xd8" + b"x" * (2 << 20)
    conn.request(
        "POST",
        "/lookup",
        body,
        {"Cookie": cookie, "Content-Type": "application/octet-stream", "X-CSRF-Token": "nope"},
    )
    r = conn.getresponse()
    r.read()
    assert r.status == 403  # read (it was allowed in), then refused for its token


@pytest.mark.parametrize("value", ["+3", "5_0", " 1e3", "-1", "0x10", "１"])
def test_odd_content_lengths_are_refused(served, value: str) -> None:  # type: ignore[no-untyped-def]
    running, _ = served
    sock = _connect(running)
    sock.sendall(f"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\nabc".encode())
    assert b"400" in _answer(sock)
    sock.close()


def test_two_content_lengths_are_refused(served) -> None:  # type: ignore[no-untyped-def]
    running, _ = served
    sock = _connect(running)
    sock.sendall(
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc"
    )
    assert b"400" in _answer(sock)
    sock.close()


def test_the_access_log_escapes_the_path(served) -> None:  # type: ignore[no-untyped-def]
    running, lines = served
    sock = _connect(running)
    sock.sendall(
        b"GET /a\x1b[31mRED\x07?token=secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    _answer(sock)
    sock.close()
    time.sleep(0.2)
    line = next(x for x in lines if "RED" in x)
    assert "\x1b" not in line and "\\x1b" in line and "\\x07" in line
    assert "secret" not in line


def test_a_silent_client_does_not_stall_tls(logged: Path, tmp_path: Path) -> None:
    pki = VendorPKI.create(tmp_path, "console test CA", "localhost")
    app = console(logged, hosts=frozenset())
    running = start(app, port=0, tls_cert=str(pki.cert), tls_key=str(pki.key))
    try:
        silent = socket.create_connection(("127.0.0.1", running.server.port))  # says nothing
        context = ssl.create_default_context(cafile=str(pki.ca))
        done: list[int] = []

        def fetch() -> None:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", running.server.port, context=context, timeout=5
            )
            conn.request("GET", "/login")
            done.append(conn.getresponse().status)

        worker = threading.Thread(target=fetch)
        worker.start()
        worker.join(8)
        assert done == [200]
        silent.close()
    finally:
        running.stop()
        app.log.close()
