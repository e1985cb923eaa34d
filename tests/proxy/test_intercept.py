"""The intercept (``HTTPS_PROXY``) proxy on real loopback sockets.

A fake vendor serves TLS on 127.0.0.1 with a certificate for api.openai.com from a test CA
made here; the proxy's upstream pool dials it for that name (``resolve``) and trusts the test
CA (``extra_ca``), exactly as ``[intercept] upstream_hosts`` and ``upstream_ca`` do. Clients
(curl, the official openai SDK, raw sockets) trust the proxy's own name-constrained CA. What
reaches the vendor must be clean, the log must say ``door: intercept``, other hosts must pass
untouched (or be refused), and nothing may reach the vendor when a client leaves mid-upload.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import httpx2
import pytest

import factories
from interceptkit import OPENAI, H11Client, Running, TLSServer, connect, read_all, request, tls

pytest.importorskip("uvicorn")

from pki import VendorPKI
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
from veilpix import AuditLog, Guard, Policy, verify_log
from veilpix._ca import Authority
from veilpix._config import Config
from veilpix._errors import CAError, ConfigError
from veilpix.proxy import Gateway
from veilpix.proxy._intercept import InterceptProxy
from veilpix.proxy._serve import intercept_upstream, load_authority, start_intercept
from veilpix.proxy._upstream import UpstreamPool
from wire import Captured, form_parts

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only (the CA)")

PHOTO = factories.jpeg()
TOKEN = "s3cret-proxy-token-0123"


# -- a test PKI for the fake vendor (not the proxy's CA) --------------------------------------


@pytest.fixture(scope="session")
def vendor_pki(tmp_path_factory: pytest.TempPathFactory) -> VendorPKI:
    folder = tmp_path_factory.mktemp("vendor-pki")
    return VendorPKI.create(folder, "test vendor root", OPENAI, "api.anthropic.com")


@pytest.fixture(scope="session")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """The proxy's CA (one per test worker): signs for the vendors' names only."""
    return Authority.init(tmp_path_factory.mktemp("intercept") / "ca")


@dataclass
class Setup:
    fake: FakeVendor
    vendor: Server
    log: AuditLog
    pki: VendorPKI
    authority: Authority

    def seen(self) -> Captured:
        s = self.fake.last
        return Captured(s.method, s.path, s.headers, s.body)


@pytest.fixture
def setup(vendor_pki: VendorPKI, authority: Authority, tmp_path: Path) -> Iterator[Setup]:
    fake = FakeVendor()
    log = AuditLog(tmp_path / "audit.db")
    with TLSServer(fake, vendor_pki) as server:
        yield Setup(fake, server, log, vendor_pki, authority)
    log.close()


@pytest.fixture
def make(setup: Setup) -> Iterator[Callable[..., Running]]:
    """make(**InterceptProxy options, guards=..., max_body=..., gateway={Gateway options})
    -> a running proxy whose gateway dials the fake vendor for api.openai.com and
    api.anthropic.com."""
    running: list[Running] = []

    def build(
        *,
        guards: dict[str, Guard] | None = None,
        max_body: int = 2_000_000,
        gateway: dict[str, Any] | None = None,
        **options: Any,
    ) -> Running:
        address = ("127.0.0.1", setup.vendor.port)
        pool = UpstreamPool(
            resolve={OPENAI: address, "api.anthropic.com": address}, extra_ca=str(setup.pki.ca)
        )
        gateway = Gateway(
            guards or {"": Guard(Policy(), setup.log)},
            max_body=max_body,
            upstream=pool,
            **(gateway or {}),
        )
        run = Running(InterceptProxy(gateway, setup.authority, **options)).__enter__()
        running.append(run)
        return run

    yield build
    for run in running:
        run.__exit__()


@pytest.fixture
def proxy(make: Callable[..., Running]) -> Running:
    return make()


# -- clients ----------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """An environment without the caller's proxy and CA settings."""
    drop = {
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
    }
    env = {k: v for k, v in os.environ.items() if k.upper() not in drop}
    env.update(extra)
    return env


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=clean_env(),
    )


def image_part(got: Captured) -> bytes:
    (image,) = [p for p in form_parts(got) if p[0] == "image"]
    return image[3]


def no_metadata(data: bytes) -> None:
    for marker in (factories.SERIAL.encode(), factories.SECRET.encode(), b"Exif\x00\x00"):
        assert marker not in data


# -- the vendor path -------------------------------------------------------------------------


def test_curl_multipart_edit_is_sanitized_and_logged(
    setup: Setup, proxy: Running, tmp_path: Path, assert_clean: Any
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(PHOTO)
    setup.fake.reply = {"created": 1, "data": [{"b64_json": "eA=="}]}
    out = curl(
        "-f",
        "--proxy",
        proxy.url,
        "--cacert",
        str(setup.authority.cert_path),
        f"https://{OPENAI}/v1/images/edits",
        "-H",
        "Authorization: Bearer sk-test",
        "-F",
        "model=gpt-image-2",
        "-F",
        "prompt=add a hat",
        "-F",
        f"image=@{photo};type=image/jpeg",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == setup.fake.reply
    got = setup.seen()
    assert setup.fake.last.path == "/v1/images/edits" and got.headers["host"] == OPENAI
    assert got.headers["authorization"] == "Bearer sk-test"
    assert "proxy-authorization" not in got.headers and "expect" not in got.headers
    assert [p[3] for p in form_parts(got) if p[0] == "prompt"] == [b"add a hat"]
    no_metadata(image_part(got))
    assert_clean(image_part(got), "curl.jpg")
    (rec,) = setup.log.records()
    assert rec.outcome == "sent" and rec.who["door"] == "intercept"
    assert rec.where["vendor"] == "openai" and rec.who["client"] == "127.0.0.1"
    assert proxy.proxy.stats.intercepted == 1


def test_openai_sdk_through_the_proxy_with_keep_alive(setup: Setup, proxy: Running) -> None:
    openai = pytest.importorskip("openai")
    setup.fake.reply = {"created": 1, "data": [{"b64_json": base64.b64encode(b"x").decode()}]}
    verify = ssl.create_default_context(cafile=str(setup.authority.cert_path))
    with openai.OpenAI(
        api_key="sk-test-abcdefghijklmnop",
        base_url=f"https://{OPENAI}/v1",
        http_client=openai.DefaultHttpxClient(proxy=proxy.url, verify=verify, trust_env=False),
        max_retries=0,
    ) as client:
        client.images.edit(model="gpt-image-2", image=("cat.jpg", PHOTO, "image/jpeg"), prompt="x")
        no_metadata(image_part(setup.seen()))
        corrupt = b"\xff\xd8\xff\xe0" + b"\x00" * 40 + b"not really a jpeg"
        with pytest.raises(openai.PermissionDeniedError) as info:
            client.images.edit(model="m", image=("a.jpg", corrupt, "image/jpeg"), prompt="x")
        assert "blocked by veilpix" in str(info.value)
        assert proxy.proxy.stats.intercepted == 1  # one CONNECT so far: kept alive
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        words = [c.choices[0].delta.content for c in stream if c.choices]
        assert words == ["w0 ", "w1 ", "w2 "]
    assert len(setup.fake.seen) == 2  # the blocked call never left
    assert [(r.outcome, r.who["door"]) for r in setup.log.records()] == [
        ("sent", "intercept"),
        ("blocked", "intercept"),
        ("sent", "intercept"),
    ]


def test_openai_sdk_with_https_proxy_and_ssl_cert_file(
    setup: Setup, proxy: Running, tmp_path: Path
) -> None:
    pytest.importorskip("openai")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(PHOTO)
    setup.fake.reply = {"created": 1, "data": [{"b64_json": "eA=="}]}
    script = (
        "import openai, sys\n"
        "c = openai.OpenAI(max_retries=0)\n"
        "r = c.images.edit(model='gpt-image-2', image=open(sys.argv[1], 'rb'), prompt='hat')\n"
        "print(r.data[0].b64_json)\n"
    )
    env = clean_env(
        HTTPS_PROXY=proxy.url,
        SSL_CERT_FILE=str(setup.authority.cert_path),
        OPENAI_API_KEY="sk-test-abcdefghijklmnop",
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(photo)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "eA=="
    no_metadata(image_part(setup.seen()))
    (rec,) = setup.log.records()
    assert rec.who["door"] == "intercept" and rec.outcome == "sent"


def test_expect_100_continue_chunked_body_and_keep_alive(setup: Setup, proxy: Running) -> None:
    client = H11Client(tls(proxy.port, setup.authority.cert_path))
    body = json.dumps({"model": "gpt-5", "input": "hi " * 200_000}).encode()  # 600 kB
    client.send(
        request(
            "POST",
            "/v1/responses",
            ("content-type", "application/json"),
            ("transfer-encoding", "chunked"),
            ("expect", "100-continue"),
        )
    )
    assert isinstance(client.event(), h11.InformationalResponse)  # 100 before any body byte
    for i in range(0, len(body), 50_000):
        client.send(h11.Data(data=body[i : i + 50_000]))
    client.send(h11.EndOfMessage())
    status, _, answer = client.response()
    assert status == 200 and json.loads(answer) == setup.fake.reply
    got = setup.seen()
    assert "transfer-encoding" not in got.headers and "expect" not in got.headers
    assert json.loads(got.body)["input"] == "hi " * 200_000
    assert json.loads(got.body)["store"] is False  # the guard's controls applied
    client.next_cycle()  # the same connection serves the next request
    client.send(request("GET", "/v1/models?limit=2"), h11.EndOfMessage())
    assert client.response()[0] == 200
    assert setup.fake.last.path == "/v1/models" and setup.fake.last.query == "limit=2"
    client.sock.close()


def test_bodies_over_the_cap_are_refused(setup: Setup, proxy: Running) -> None:
    declared = H11Client(tls(proxy.port, setup.authority.cert_path))
    declared.send(
        request(
            "POST", "/v1/images/edits", ("content-length", "3000000"), ("expect", "100-continue")
        )
    )
    head = declared.event()  # no 100: the refusal comes at once, the body is never read
    assert isinstance(head, h11.Response) and head.status_code == 413
    declared.sock.close()
    chunked = H11Client(tls(proxy.port, setup.authority.cert_path))
    chunked.send(request("POST", "/v1/responses", ("transfer-encoding", "chunked")))
    try:
        for _ in range(25):
            chunked.send(h11.Data(data=b"x" * 100_000))  # 2.5 MB against a 2 MB cap
    except OSError:
        pass  # the proxy may stop reading once it has answered
    status, _, body = chunked.response()
    assert status == 413 and json.loads(body)["error"]["code"] == "veilpix_too_large"
    assert setup.fake.seen == [] and list(setup.log.records()) == []


def test_a_client_that_leaves_mid_upload_sends_nothing(setup: Setup, proxy: Running) -> None:
    sock = tls(proxy.port, setup.authority.cert_path)
    sock.sendall(
        b"POST /v1/images/edits HTTP/1.1\r\nHost: api.openai.com\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n" + PHOTO[:500]
    )
    sock.close()
    wait_for(lambda: 'vendor="openai",outcome="client_disconnected"} 1' in proxy.metrics())
    assert setup.fake.seen == [] and list(setup.log.records()) == []


def test_a_client_that_gives_up_while_the_vendor_thinks_cancels_the_call(
    setup: Setup, proxy: Running
) -> None:
    client = H11Client(tls(proxy.port, setup.authority.cert_path))
    client.send(
        request("POST", "/v1/hang", ("content-type", "application/json"), ("content-length", "14")),
        h11.Data(data=b'{"input":"hi"}'),
        h11.EndOfMessage(),
    )
    wait_for(lambda: len(setup.fake.seen) == 1)  # it was sent ...
    client.sock.close()
    wait_for(lambda: [r.outcome for r in setup.log.records()] == ["failed"])
    (rec,) = setup.log.records()
    assert "cancelled" in rec.to_dict()["reason"]  # ... and the record says it was cut off


def test_concurrent_connections(setup: Setup, proxy: Running) -> None:
    verify = ssl.create_default_context(cafile=str(setup.authority.cert_path))

    def calls(n: int) -> list[int]:
        with httpx2.Client(proxy=proxy.url, verify=verify, trust_env=False, timeout=30) as c:
            return [
                c.post(f"https://{OPENAI}/v1/responses", json={"input": f"{n}-{i}"}).status_code
                for i in range(3)
            ]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(calls, range(8)))
    assert results == [[200, 200, 200]] * 8
    inputs = sorted(json.loads(s.body)["input"] for s in setup.fake.seen)
    assert inputs == sorted(f"{n}-{i}" for n in range(8) for i in range(3))
    records = list(setup.log.records())
    assert len(records) == 24 and {r.who["door"] for r in records} == {"intercept"}
    assert proxy.proxy.stats.intercepted == 8


def test_the_host_header_must_name_the_connected_host(setup: Setup, proxy: Running) -> None:
    # TLS for api.anthropic.com (SNI) inside a CONNECT to api.openai.com: the certificate is
    # fine, but the request goes nowhere but to the CONNECT's host, so it is refused.
    client = H11Client(tls(proxy.port, setup.authority.cert_path, sni="api.anthropic.com"))
    client.send(
        request("POST", "/v1/messages", ("content-length", "2"), host="api.anthropic.com"),
        h11.Data(data=b"{}"),
        h11.EndOfMessage(),
    )
    status, _, body = client.response()
    assert status == 421 and json.loads(body)["error"]["code"] == "veilpix_misdirected"
    client = H11Client(tls(proxy.port, setup.authority.cert_path))
    client.send(
        request("GET", "/v1/realtime", ("connection", "upgrade"), ("upgrade", "websocket")),
        h11.EndOfMessage(),
    )
    assert client.response()[0] == 501
    assert setup.fake.seen == []


def test_sni_the_ca_may_not_sign_is_refused(setup: Setup, proxy: Running) -> None:
    with pytest.raises(ssl.SSLError):
        tls(proxy.port, setup.authority.cert_path, sni="www.example.com")
    wait_for(lambda: proxy.proxy.stats.tls_failed == 1)


# -- other hosts and refusals --------------------------------------------------------------


@pytest.fixture
def echo() -> Iterator[tuple[int, list[int]]]:
    """A plain TCP echo server that passes on the client's EOF; yields (port, accepts)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], accepted
    listener.close()


def test_other_hosts_are_tunnelled_byte_for_byte(proxy: Running, echo: Any) -> None:
    port, _ = echo
    sock, status, _ = connect(proxy.port, f"127.0.0.1:{port}")
    assert status == 200
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value

    def send() -> None:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # the EOF must come back through the tunnel too

    sender = threading.Thread(target=send)
    sender.start()
    back = read_all(sock)  # ends when the echo server passes our EOF back
    sender.join()
    sock.close()
    assert back == payload and proxy.proxy.stats.tunnelled == 1
    assert 'veilpix_requests_total{vendor="-",outcome="tunnelled"} 1' in proxy.metrics()


def test_tls_to_another_host_is_not_touched(setup: Setup, proxy: Running, tmp_path: Path) -> None:
    """The fake vendor by IP address: not a vendor host, so the client's own TLS (verified
    against the vendor's test CA, which the proxy does not have) goes through as it is, and
    the photo arrives with its metadata: the proxy did not, and could not, look."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(PHOTO)
    out = curl(
        "-f",
        "--proxy",
        proxy.url,
        "--cacert",
        str(setup.pki.ca),
        f"https://127.0.0.1:{setup.vendor.port}/v1/images/edits",
        "-F",
        f"image=@{photo};type=image/jpeg",
    )
    assert out.returncode == 0, out.stderr
    assert image_part(setup.seen()) == PHOTO
    assert list(setup.log.records()) == [] and proxy.proxy.stats.intercepted == 0


def test_only_vendors_refuses_other_hosts(setup: Setup, make: Any, echo: Any) -> None:
    port, accepted = echo
    strict = make(only_vendors=True)
    sock, status, _ = connect(strict.port, f"127.0.0.1:{port}")
    body = read_all(sock)
    sock.close()
    assert status == 403 and b"only_vendors" in body and accepted == []
    sock, status, _ = connect(strict.port, f"{OPENAI}:443")  # vendors still go through
    sock.close()
    assert status == 200
    assert 'vendor="-",outcome="refused"} 1' in strict.metrics()


@pytest.mark.parametrize(
    ("target", "says"),
    [
        (f"http://{OPENAI}/v1/models", b"must use https://"),
        ("http://example.test/", b"not a plain-HTTP forward proxy"),
        ("/v1/models", b"use it as HTTPS_PROXY"),
    ],
)
def test_plain_http_is_refused(setup: Setup, proxy: Running, target: str, says: bytes) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = read_all(sock)
    assert answer.split(b" ", 2)[1] in (b"400", b"403") and says in answer
    assert setup.fake.seen == []


def test_oversized_heads_are_refused(setup: Setup, proxy: Running) -> None:
    big = "X-Junk: " + "j" * 400_000
    sock, status, _ = connect(
        proxy.port, f"{OPENAI}:443", big
    )  # heads are bounded (64 KiB + a read)
    sock.close()
    assert status == 431
    client = tls(proxy.port, setup.authority.cert_path)
    client.sendall(f"GET /v1/models HTTP/1.1\r\nHost: {OPENAI}\r\n{big}\r\n\r\n".encode())
    answer = read_all(client)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"veilpix_http" in answer
    assert setup.fake.seen == []


def test_vendor_hosts_the_ca_cannot_cover_are_refused(setup: Setup, make: Any) -> None:
    guards = {"": Guard(Policy(vendor_hosts={"llm.corp.example": "openai"}), setup.log)}
    run = make(guards=guards)
    for target, says in [
        ("llm.corp.example:443", b"may not sign for it"),  # a vendor's, outside the CA
        ("files.api.openai.com:443", b"no vendor is configured"),  # the CA's, no vendor's
    ]:
        sock, status, _ = connect(run.port, target)
        body = read_all(sock)
        sock.close()
        assert status == 403 and says in body, body
    assert run.proxy.stats.refused == 2 and run.proxy.stats.tunnelled == 0


def test_the_token_rule(setup: Setup, make: Any) -> None:
    guards = {"": Guard(Policy(), setup.log), "marketing": Guard(Policy(), setup.log)}
    run = make(guards=guards, token=TOKEN)
    sock, status, head = connect(run.port, f"{OPENAI}:443")
    sock.close()
    assert status == 407 and b'proxy-authenticate: basic realm="veilpix"' in head.lower()
    sock, status, _ = connect(run.port, f"{OPENAI}:443", "Proxy-Authorization: Bearer wrong")
    sock.close()
    assert status == 407
    ca = str(setup.authority.cert_path)
    url = f"https://{OPENAI}/v1/responses"
    basic = run.url.replace("http://", f"http://marketing:{TOKEN}@")
    out = curl("-f", "--proxy", basic, "--cacert", ca, url, "--json", '{"input": "a"}')
    assert out.returncode == 0, out.stderr
    out = curl(
        "-f",
        "--proxy",
        run.url,
        "--proxy-header",
        f"Proxy-Authorization: Bearer {TOKEN}",
        "--cacert",
        ca,
        url,
        "--json",
        '{"input": "b"}',
    )
    assert out.returncode == 0, out.stderr
    out = curl("-f", "--proxy", run.url, "--cacert", ca, url, "--json", "{}")
    assert out.returncode != 0 and "407" in out.stderr
    assert [r.who["app"] for r in setup.log.records()] == ["marketing", None]
    assert all(TOKEN not in json.dumps(s.headers) for s in setup.fake.seen)
    assert TOKEN.encode() not in (setup.log.path).read_bytes()


def test_idle_clients_are_dropped_and_connections_capped(setup: Setup, make: Any) -> None:
    run = make(max_connections=1, handshake_timeout=0.5)
    idle = socket.create_connection(("127.0.0.1", run.port), timeout=10)
    wait_for(lambda: run.proxy.stats.connections == 1)
    sock, status, head = connect(run.port, f"{OPENAI}:443")  # the one slot is taken
    sock.close()
    assert status == 503 and run.proxy.stats.busy == 1
    assert b"\r\nretry-after: 1\r\n" in head.lower()
    # however busy: the health check is answered
    assert httpx2.get(f"{run.url}/_veilpix/health", trust_env=False).json() == {"status": "ok"}
    started = time.monotonic()
    assert idle.recv(1) == b""  # closed by the proxy once the CONNECT head is overdue
    assert time.monotonic() - started < 5
    idle.close()
    sock, status, _ = connect(run.port, f"{OPENAI}:443")  # the slot is free again
    sock.close()
    assert status == 200


SLOW_CONNECT = f"CONNECT {OPENAI}:443 HTTP/1.1\r\nHost: {OPENAI}:443\r\nX-Slow: ".encode()


def test_slowloris_cannot_starve_the_intercept_proxy(setup: Setup, make: Any) -> None:
    need_other_loopback_addresses()
    run = make(handshake_timeout=0.5, max_connections=64, max_connections_per_client=8)
    verify = ssl.create_default_context(cafile=str(setup.authority.cert_path))
    # 3 addresses x 8 connections (each at its cap) sending a CONNECT head a byte every 0.1 s
    with Slowloris(run.port, SLOW_CONNECT, per_address=8) as attack:
        health = httpx2.get(f"{run.url}/_veilpix/health", trust_env=False)
        assert health.json() == {"status": "ok"}  # during the attack, and a vendor call too:
        with httpx2.Client(proxy=run.url, verify=verify, trust_env=False, timeout=30) as client:
            sent = client.post(f"https://{OPENAI}/v1/responses", json={"input": "hi"})
        assert sent.status_code == 200
        lifetimes = attack.wait_all_closed()
    # closed, unanswered, once the 0.5 s for the CONNECT head were up
    assert len(lifetimes) == 24 and min(lifetimes) >= 0.45 and attack.answers == {}


def test_slow_request_heads_and_idle_sessions_are_closed(setup: Setup, make: Any) -> None:
    run = make(header_timeout=0.5, idle_timeout=0.5)
    sock = tls(run.port, setup.authority.cert_path)  # the CONNECT and the handshake are done
    started = time.monotonic()
    sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: api.openai.com\r\n")
    sock.settimeout(0.1)
    closed = False
    while not closed and time.monotonic() - started < 10:  # trickle the rest of the head
        try:
            sock.sendall(b"x")
            closed = sock.recv(1) == b""
        except TimeoutError:
            continue
        except (OSError, ssl.SSLError):
            closed = True
    assert closed and time.monotonic() - started >= 0.45
    sock.close()
    client = H11Client(tls(run.port, setup.authority.cert_path))  # one request, then idle
    client.send(request("GET", "/_veilpix/nothing"), h11.EndOfMessage())
    client.response()
    started = time.monotonic()
    client.sock.settimeout(10)
    assert client.sock.recv(1) == b""  # closed once idle for 0.5 s
    assert time.monotonic() - started >= 0.45
    client.sock.close()
    assert setup.fake.seen[-1].path == "/_veilpix/nothing"


def test_a_client_over_its_cap_gets_a_quick_503(setup: Setup, make: Any) -> None:
    need_other_loopback_addresses()
    run = make(max_connections_per_client=2)
    mine = [connect_from(ATTACKERS[0], run.port) for _ in range(2)]
    try:
        wait_for(lambda: run.proxy.stats.connections == 2)
        with connect_from(ATTACKERS[0], run.port) as extra:  # sends nothing: answered anyway
            answer = read_until_closed(extra)
        assert status_of(answer) == 503 and header(answer, "retry-after") == "1"
        assert b"max_connections_per_client = 2" in answer and run.proxy.stats.busy == 1
        sock, status, _ = connect(run.port, f"{OPENAI}:443")  # 127.0.0.1 is not affected
        sock.close()
        assert status == 200
    finally:
        for each in mine:
            each.close()


def test_a_trickling_body_gets_a_408(setup: Setup, make: Any) -> None:
    run = make(gateway={"idle_timeout": 0.5, "min_body_rate": 1000})
    client = H11Client(tls(run.port, setup.authority.cert_path))
    client.send(
        request(
            "POST",
            "/v1/responses",
            ("content-type", "application/json"),
            ("content-length", "100000"),
        ),
        h11.Data(data=b"{"),
    )
    client.sock.settimeout(0.1)
    deadline = time.monotonic() + 10
    answer: Any = None
    while answer is None and time.monotonic() < deadline:  # a byte every 0.1 s: too slow
        try:
            client.sock.sendall(b" ")
            client.conn.receive_data(client.sock.recv(65536))
        except TimeoutError:
            continue
        answer = client.conn.next_event()
        answer = None if answer is h11.NEED_DATA else answer
    assert isinstance(answer, h11.Response) and answer.status_code == 408
    assert (b"connection", b"close") in answer.headers
    assert 'vendor="openai",outcome="timeout"} 1' in run.metrics()
    assert setup.fake.seen == [] and list(setup.log.records()) == []


def test_health_and_metrics_on_the_proxy_address(setup: Setup, proxy: Running) -> None:
    assert httpx2.get(f"{proxy.url}/_veilpix/health", trust_env=False).json() == {"status": "ok"}
    text = httpx2.get(f"{proxy.url}/_veilpix/metrics", trust_env=False).text
    assert "veilpix_requests_total" in text


# -- serving helpers -------------------------------------------------------------------------


def test_serving_helpers(vendor_pki: VendorPKI, authority: Authority, tmp_path: Path) -> None:
    from veilpix._config import InterceptConfig

    config = Config(
        intercept=InterceptConfig(
            upstream_ca=vendor_pki.ca, upstream_hosts={OPENAI: ("127.0.0.1", 9443)}, port=0
        )
    )
    pool = intercept_upstream(config)
    assert pool.resolve == {OPENAI: ("127.0.0.1", 9443)}
    pool.tls_context()  # the extra CA loads
    with pytest.raises(CAError) as info:
        load_authority(config, tmp_path / "nowhere")
    assert "veilpix ca init" in str(info.value)

    async def scenario() -> None:
        log = AuditLog(tmp_path / "a.db")
        gateway = Gateway({"": Guard(Policy(), log)})
        with pytest.raises(ConfigError):  # not loopback, no allow_remote
            await start_intercept(config, gateway, "0.0.0.0", authority=authority)
        started = await start_intercept(config, gateway, authority=authority)
        assert started.address[0] == "127.0.0.1" and started.address[1] > 0
        await started.aclose()
        await gateway.aclose()
        log.close()

    asyncio.run(scenario())


# -- veilpix proxy --intercept (the command) -------------------------------------------------


def test_the_command_without_a_ca_is_a_clear_error(tmp_path: Path) -> None:
    env = clean_env(VEILPIX_CA_DIR=str(tmp_path / "no-ca"))
    env.pop("VEILPIX_CONFIG", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "veilpix",
            "proxy",
            "--intercept",
            "--port",
            "0",
            "--log",
            str(tmp_path / "a.db"),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "veilpix ca init" in out.stderr and "listening" not in out.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_the_command_runs_both_doors_into_one_log(
    setup: Setup, tmp_path: Path, workers: int, assert_clean: Any
) -> None:
    """`veilpix proxy --intercept` (one process, or two workers): the gateway and the intercept
    proxy share the log and the metrics; [intercept] upstream_hosts/upstream_ca send the
    vendor's traffic to the local TLS fake; SIGTERM stops both cleanly."""
    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(
        f'[vendors.openai]\nbase_url = "https://{OPENAI}/v1"\n\n'
        f'[intercept]\nupstream_ca = "{setup.pki.ca}"\n'
        f'upstream_hosts = {{ "{OPENAI}" = "127.0.0.1:{setup.vendor.port}" }}\n'
    )
    log = tmp_path / "both.db"
    env = clean_env(VEILPIX_CA_DIR=str(setup.authority.cert_path.parent))
    env.pop("VEILPIX_CONFIG", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "veilpix",
            "proxy",
            "--intercept",
            "--port",
            "0",
            "--intercept-port",
            "0",
            "--workers",
            str(workers),
            "--config",
            str(cfg),
            "--log",
            str(log),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(PHOTO)
    try:
        assert proc.stdout is not None
        head = [proc.stdout.readline() for _ in range(3)]
        gateway_url = head[0].split()[-1]
        (line,) = [x for x in head if "intercept (HTTPS_PROXY) on" in x]
        intercept_url = line.split()[-1]
        setup.fake.reply = {"created": 1, "data": [{"b64_json": "eA=="}]}
        out = curl(
            "-f",
            "--proxy",
            intercept_url,
            "--cacert",
            str(setup.authority.cert_path),
            f"https://{OPENAI}/v1/images/edits",
            "-H",
            "Authorization: Bearer sk-test",
            "-F",
            "prompt=add a hat",
            "-F",
            f"image=@{photo};type=image/jpeg",
        )
        assert out.returncode == 0, out.stderr
        assert_clean(image_part(setup.seen()), "via-intercept.jpg")
        got = httpx2.post(
            f"{gateway_url}/openai/chat/completions",
            timeout=20,
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": "Bearer sk-test"},
        )
        assert got.status_code == 200 and setup.fake.last.path == "/v1/chat/completions"
        metrics = httpx2.get(f"{gateway_url}/_veilpix/metrics", timeout=10).text
        assert 'veilpix_requests_total{vendor="openai",outcome="sent"} 2' in metrics
        assert "veilpix_images_total 1" in metrics
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "stopped" in stdout and "sk-test" not in stdout + stderr
    result = verify_log(log)
    assert result.ok and result.records == 2 and result.pending == 0
    with AuditLog(log, readonly=True) as read:
        assert sorted(r.who["door"] for r in read.records()) == ["gateway", "intercept"]
