"""Bounded work at the gateway (``veilpix proxy``, issue 15): header and idle timeouts, the
per-client connection cap, the health check under a full ``max_connections``, request bodies
that trickle, and the memory budget. The gateway runs as ``veilpix proxy`` runs it (the
config's ``[proxy]`` settings, ``build_gateway``, uvicorn with veilpix's protocol) on real
loopback sockets; the slow clients come from 127.0.0.2-4. Timeouts are short (0.5 s) and
every wait is generous (5-10 s); nothing asserts an upper bound tighter than that."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

pytest.importorskip("uvicorn")

from servers import FakeVendor, Server
from slowclients import (
    ATTACKERS,
    Slowloris,
    connect_from,
    header,
    need_other_loopback_addresses,
    read_until_closed,
    status_of,
    wait_for,
)
from veilpix import ConfigError, load_config
from veilpix._config import Config
from veilpix.proxy import Gateway, build_gateway
from veilpix.proxy._limits import BodyClock, MemoryBudget, client_key
from veilpix.proxy._serve import _server

SLOW_HEAD = b"POST /openai/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


class Running:
    """``_server()`` (what ``veilpix proxy`` runs) in a thread, on a free port."""

    def __init__(self, config: Config, gateway: Gateway) -> None:
        self.gateway = gateway
        self.server = _server(gateway, config, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "no start"
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        return self.gateway.metrics.render()

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def vendor() -> Iterator[tuple[FakeVendor, Server]]:
    fake = FakeVendor()
    with Server(fake) as server:
        yield fake, server


@pytest.fixture
def run(vendor: tuple[FakeVendor, Server], tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """run(**[proxy] settings) -> the gateway, started from a veilpix.toml with them."""
    _, upstream = vendor
    running: list[Running] = []

    def start(token: str | None = None, **proxy: Any) -> Running:
        lines = [f"{k} = {json.dumps(v)}" for k, v in proxy.items()]
        cfg = tmp_path / f"veilpix-{len(running)}.toml"
        cfg.write_text(
            f'[vendors.openai]\nbase_url = "{upstream.url}/v1"\n[proxy]\n' + "\n".join(lines)
        )
        config = load_config(cfg)
        gateway = build_gateway(config, log_path=tmp_path / f"audit-{len(running)}.db", token=token)
        server = Running(config, gateway).__enter__()
        running.append(server)
        return server

    yield start
    for server in running:
        server.__exit__()


def post(url: str, body: Any, **kw: Any) -> httpx2.Response:
    return httpx2.post(f"{url}/openai/responses", json=body, timeout=30, trust_env=False, **kw)


def health(url: str) -> httpx2.Response:
    return httpx2.get(f"{url}/_veilpix/health", timeout=30, trust_env=False)


# -- settings ----------------------------------------------------------------------------------


def test_defaults_and_settings(tmp_path: Path) -> None:
    proxy = load_config(None).proxy
    assert (proxy.header_timeout, proxy.idle_timeout, proxy.min_body_rate) == (10.0, 30.0, 8192)
    assert proxy.max_connections_per_client == 32 and proxy.max_image_memory == 512 * 1024**2
    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(
        "[proxy]\nheader_timeout = 2\nidle_timeout = 0.5\nmin_body_rate = 100\n"
        "max_connections_per_client = 4\nmax_image_memory = 1000000\n"
    )
    proxy = load_config(cfg).proxy
    assert proxy.header_timeout == 2.0 and isinstance(proxy.header_timeout, float)
    assert (proxy.idle_timeout, proxy.min_body_rate) == (0.5, 100)
    assert (proxy.max_connections_per_client, proxy.max_image_memory) == (4, 1_000_000)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("header_timeout = 0", "proxy.header_timeout must be over 0 and at most 3600"),
        ("idle_timeout = -1", "proxy.idle_timeout must be over 0"),
        ("idle_timeout = 86400", "proxy.idle_timeout must be over 0 and at most 3600"),
        ("header_timeout = '10s'", "proxy.header_timeout must be a int or float"),
        ("min_body_rate = 0", "proxy.min_body_rate must be above 0"),
        ("min_body_rate = 1.5", "proxy.min_body_rate must be a int"),
        ("max_connections_per_client = 0", "proxy.max_connections_per_client must be above 0"),
        ("max_image_memory = -5", "proxy.max_image_memory must be above 0"),
        ("max_image_memory = true", "proxy.max_image_memory must be a number"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(f"[proxy]\n{text}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)


def test_client_key_groups_ipv6_by_64() -> None:
    assert client_key(("192.0.2.7", 5000)) == "192.0.2.7"
    assert client_key(("::ffff:192.0.2.7", 5000, 0, 0)) == "192.0.2.7"
    one = client_key(("2001:db8:1:2:aaaa::1", 5000, 0, 0))
    assert one == client_key(("2001:db8:1:2:ffff::9", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert one != client_key(("2001:db8:1:3::1", 1, 0, 0))
    assert client_key("/run/veilpix.sock") == ""


def test_body_clock_and_memory_budget() -> None:
    clock = BodyClock(100.0, idle=5.0, rate=1000)
    assert clock.deadline() == 105.0  # nothing yet: one idle period
    clock.progress(101.0, 10_000)  # 10 s of credit at 1000 B/s, but a pause is still 5 s
    assert clock.deadline() == 106.0
    clock.progress(105.0, 0)  # an empty chunk is no progress
    assert clock.deadline() == 106.0
    clock.progress(115.0, 1)
    assert clock.deadline() == pytest.approx(100.0 + 5.0 + 10.001)  # the average now binds

    budget = MemoryBudget(1000)
    a, b = budget.lease(), budget.lease()
    assert a.reserve(5000) and a.held == 1000  # alone, any request fits (clamped)
    assert not b.reserve(1) and b.held == 0 and budget.used == 1000
    a.shrink_to(300)
    assert b.reserve(700) and not b.reserve(701) and budget.used == 1000
    a.release()
    b.release()
    assert budget.used == 0


# -- the header timeout and slowloris -----------------------------------------------------------


def test_slowloris_cannot_starve_the_gateway(run: Callable[..., Running]) -> None:
    need_other_loopback_addresses()
    gw = run(header_timeout=0.5, max_connections=64, max_connections_per_client=8)
    # 3 addresses x 8 connections (each address at its cap), each sending a request head a
    # byte every 0.1 s, never finishing it
    with Slowloris(gw.port, SLOW_HEAD, per_address=8) as attack:
        assert health(gw.url).json() == {"status": "ok"}  # during the attack
        assert post(gw.url, {"input": "hi"}).status_code == 200
        lifetimes = attack.wait_all_closed()
    # trickling does not keep a head alive: each was closed, unanswered, once its 0.5 s
    # from the accept were up
    assert len(lifetimes) == 24 and min(lifetimes) >= 0.45
    assert attack.answers == {}
    assert health(gw.url).status_code == 200


def test_health_is_answered_when_max_connections_is_reached(run: Callable[..., Running]) -> None:
    need_other_loopback_addresses()
    gw = run(max_connections=4)  # the default 10 s header timeout: the idlers stay
    idlers = [connect_from(ATTACKERS[0], gw.port) for _ in range(4)]
    try:
        assert health(gw.url).json() == {"status": "ok"}
        busy = post(gw.url, {"input": "hi"})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["code"] == "veilpix_busy"  # the vendor's error shape
        assert 'veilpix_requests_total{vendor="openai",outcome="busy"} 1' in gw.metrics()
    finally:
        for sock in idlers:
            sock.close()
    wait_for(lambda: post(gw.url, {"input": "again"}).status_code == 200)


def test_a_kept_alive_connection_is_closed_when_idle(run: Callable[..., Running]) -> None:
    gw = run(idle_timeout=0.5, header_timeout=0.5)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"GET /_veilpix/health HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        answer = read_until_closed(sock, timeout=4.5)  # (uvicorn's own would wait 5 s)
        assert status_of(answer) == 200 and answer.endswith(b'{"status": "ok"}')
        assert time.monotonic() - started >= 0.45  # kept alive, then closed when idle


@pytest.mark.parametrize("end", [b"", b"\r\n"], ids=["unfinished", "whole"])
def test_oversized_heads_get_431(run: Callable[..., Running], end: bytes) -> None:
    gw = run()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        pad = b"".join(b"X-Pad-%d: " % i + b"p" * 10_000 + b"\r\n" for i in range(7))
        sock.sendall(b"GET /_veilpix/health HTTP/1.1\r\nHost: x\r\n" + pad + end)  # 70 kB
        answer = read_until_closed(sock)
    assert status_of(answer) == 431 and answer.endswith(b"request head over 65,536 bytes\n")


# -- the per-client cap -----------------------------------------------------------------------------


def test_a_client_over_its_cap_gets_a_quick_503(run: Callable[..., Running]) -> None:
    need_other_loopback_addresses()
    gw = run(max_connections_per_client=3)
    mine = [connect_from(ATTACKERS[0], gw.port) for _ in range(3)]
    try:
        with connect_from(ATTACKERS[0], gw.port) as extra:  # sends nothing: answered anyway
            answer = read_until_closed(extra)
        assert status_of(answer) == 503 and header(answer, "retry-after") == "1"
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["code"] == "veilpix_busy"
        assert "max_connections_per_client = 3" in body["error"]["message"]
        # another address is not affected
        with connect_from(ATTACKERS[1], gw.port) as other:
            other.sendall(b"GET /_veilpix/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert status_of(read_until_closed(other)) == 200
        assert post(gw.url, {"input": "hi"}).status_code == 200
    finally:
        mine.pop().close()
    # one of its own closed: the client may open one again

    def admitted() -> bool:
        with connect_from(ATTACKERS[0], gw.port) as again:
            again.sendall(b"GET /_veilpix/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return status_of(read_until_closed(again)) == 200

    wait_for(admitted)
    for sock in mine:
        sock.close()


# -- request bodies that trickle ---------------------------------------------------------------


def test_a_trickling_body_gets_a_408(
    run: Callable[..., Running], vendor: tuple[FakeVendor, Server]
) -> None:
    fake, _ = vendor
    gw = run(idle_timeout=0.5, min_body_rate=1000)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(
            b"POST /openai/responses HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
        )
        sock.settimeout(0.1)
        answer = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a byte every 0.1 s: no pause, but far too slow
            try:
                sock.sendall(b" ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
    assert status_of(answer) == 408, answer
    assert header(answer, "connection") == "close"
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "veilpix_timeout"
    assert 'outcome="timeout"} 1' in gw.metrics() and fake.seen == []


def test_a_paused_body_gets_a_408(run: Callable[..., Running]) -> None:
    gw = run(idle_timeout=0.5)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(
            b"POST /openai/responses HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b" " * 50
        )
        started = time.monotonic()
        answer = read_until_closed(sock)
    assert status_of(answer) == 408 and time.monotonic() - started >= 0.45


def test_a_body_left_unread_must_still_come(run: Callable[..., Running]) -> None:
    # Refused at once (no token), the rest of its body is read and dropped; a client that
    # trickles it is cut off rather than holding the connection for ever.
    gw = run(token="t0ken", idle_timeout=0.5, min_body_rate=1000)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(
            b"POST /openai/responses HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"
        )
        sock.settimeout(0.1)
        answer, closed = b"", False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not closed:
            try:
                sock.sendall(b" ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            answer += chunk
            closed = not chunk
    assert status_of(answer) == 401 and closed


# -- the memory budget ----------------------------------------------------------------------------


def test_the_memory_budget_answers_503_instead_of_growing(
    run: Callable[..., Running], vendor: tuple[FakeVendor, Server]
) -> None:
    fake, _ = vendor
    gw = run(max_image_memory=1_000_000)
    big = json.dumps({"input": "x" * 200_000}).encode()
    hanging = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    hanging.sendall(
        b"POST /openai/hang HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(big)}\r\n\r\n".encode()
        + big
    )
    try:
        wait_for(lambda: len(fake.seen) == 1)  # sanitized and sent: it keeps its two bodies
        held = gw.gateway.budget.used
        assert len(big) < held < 1_000_000
        # 100 kB more would be 800 kB by the estimate: over the budget, refused unread
        refused = post(gw.url, {"input": "y" * 100_000})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        error = refused.json()["error"]
        assert error["code"] == "veilpix_busy" and "max_image_memory" in error["message"]
        assert post(gw.url, {"input": "small"}).status_code == 200  # small ones still fit
        assert 'outcome="busy"} 1' in gw.metrics() and len(fake.seen) == 2
    finally:
        hanging.close()
    wait_for(lambda: gw.gateway.budget.used == 0)  # the call was cancelled: its share is back
    assert post(gw.url, {"input": "y" * 100_000}).status_code == 200


def test_a_chunked_body_is_budgeted_as_it_grows(
    run: Callable[..., Running], vendor: tuple[FakeVendor, Server]
) -> None:
    fake, _ = vendor
    gw = run(max_image_memory=1_000_000)
    hanging = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    hanging.sendall(
        b'POST /openai/hang HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n{"input":"hi"}'
    )
    try:
        wait_for(lambda: len(fake.seen) == 1)

        def chunks() -> Iterator[bytes]:
            yield b'{"input": "'
            for _ in range(20):
                yield b"z" * 10_000
            yield b'"}'

        refused = httpx2.post(
            f"{gw.url}/openai/responses", content=chunks(), timeout=30, trust_env=False
        )
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    finally:
        hanging.close()
    assert len(fake.seen) == 1
