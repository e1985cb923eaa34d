"""The gateway on real loopback sockets: a fake vendor upstream behind it, the official SDKs
and raw HTTP in front. What the upstream receives must be clean; what the client gets must be
what the vendor said (or a vendor-shaped refusal); the log must say what happened."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

import factories

pytest.importorskip("uvicorn")

from servers import FakeVendor, Server
from wire import Captured, form_parts

from veilpix import AuditLog, Guard, Policy
from veilpix.proxy import Gateway

PHOTO = factories.jpeg()


@pytest.fixture
def vendor() -> Iterator[tuple[FakeVendor, Server]]:
    fake = FakeVendor()
    with Server(fake) as server:
        yield fake, server


@pytest.fixture
def gateway(vendor: tuple[FakeVendor, Server], tmp_path: Path) -> Iterator[tuple[Server, AuditLog]]:
    _, upstream = vendor
    log = AuditLog(tmp_path / "audit.db")
    host = f"127.0.0.1:{upstream.port}"
    guard = Guard(Policy(vendor_hosts={host: "openai"}), log)
    anthropic = Guard(Policy(vendor_hosts={host: "anthropic"}), log)
    app = Gateway(
        {"": guard, "claude-app": anthropic},
        base_urls={"openai": f"{upstream.url}/v1", "anthropic": upstream.url},
        max_body=2_000_000,
    )
    with Server(app) as server:
        yield server, log
    log.close()


def seen_as_captured(fake: FakeVendor) -> Captured:
    s = fake.last
    return Captured(s.method, s.path, s.headers, s.body)


def test_openai_sdk_images_edit_through_the_gateway(
    vendor: Any, gateway: Any, assert_clean: Any
) -> None:
    openai = pytest.importorskip("openai")
    fake, _ = vendor
    server, log = gateway
    fake.reply = {"created": 1, "data": [{"b64_json": base64.b64encode(b"x").decode()}]}
    client = openai.OpenAI(
        api_key="sk-test-abcdefghijklmnop", base_url=f"{server.url}/openai", max_retries=0
    )
    client.images.edit(model="gpt-image-2", image=("cat.jpg", PHOTO, "image/jpeg"), prompt="hat")
    got = seen_as_captured(fake)
    assert fake.last.path == "/v1/images/edits"
    assert got.headers["authorization"] == "Bearer sk-test-abcdefghijklmnop"  # reaches the vendor
    (image,) = [p for p in form_parts(got) if p[0] == "image"]
    assert_clean(image[3], "gw.jpg")
    (rec,) = log.records()
    assert (
        rec.outcome == "sent" and rec.who["door"] == "gateway" and rec.who["client"] == "127.0.0.1"
    )


def test_sse_stream_passes_through(vendor: Any, gateway: Any) -> None:
    openai = pytest.importorskip("openai")
    server, _ = gateway
    client = openai.OpenAI(
        api_key="sk-test-abcdefghijklmnop", base_url=f"{server.url}/openai", max_retries=0
    )
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    words = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert words == ["w0 ", "w1 ", "w2 "]


def test_anthropic_sdk_with_an_app_header(vendor: Any, gateway: Any, assert_clean: Any) -> None:
    anthropic = pytest.importorskip("anthropic")
    fake, _ = vendor
    server, log = gateway
    fake.reply = {"id": "m", "type": "message", "role": "assistant", "model": "c",
                  "content": [{"type": "text", "text": "a cat"}], "stop_reason": "end_turn",
                  "usage": {"input_tokens": 1, "output_tokens": 1}}  # fmt: skip
    client = anthropic.Anthropic(api_key="sk-ant-test-abcdefgh", base_url=f"{server.url}/anthropic",
                                 default_headers={"X-Veilpix-App": "claude-app"}, max_retries=0)  # fmt: skip
    client.messages.create(model="claude", max_tokens=8, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                     "data": base64.b64encode(PHOTO).decode()}}]}])  # fmt: skip
    sent = json.loads(fake.last.body)
    assert_clean(base64.b64decode(sent["messages"][0]["content"][0]["source"]["data"]), "an.jpg")
    assert "x-veilpix-app" not in fake.last.headers
    assert [r.who["app"] for r in log.records()] == ["claude-app"]


def test_blocked_call_gets_a_vendor_shaped_403(vendor: Any, gateway: Any, tmp_path: Path) -> None:
    openai = pytest.importorskip("openai")
    fake, _ = vendor
    server, log = gateway
    client = openai.OpenAI(
        api_key="sk-test-abcdefghijklmnop", base_url=f"{server.url}/openai", max_retries=0
    )
    corrupt = b"\xff\xd8\xff\xe0" + b"\x00" * 40 + b"not really a jpeg"
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.images.edit(model="gpt-image-2", image=("a.jpg", corrupt, "image/jpeg"), prompt="x")
    assert "blocked by veilpix" in str(info.value) and fake.seen == []
    assert [r.outcome for r in log.records()] == ["blocked"]


@pytest.mark.parametrize(
    "target",
    [
        "http://evil.example/steal",  # absolute-form
        "/evil.example/v1/x",  # unknown prefix
        "/openai/../anthropic/v1/messages",  # dot segments
        "/openai/%2e%2e/x",  # encoded dot segments
        "/",
    ],
)
def test_never_an_open_relay(target: str, vendor: Any, gateway: Any) -> None:
    fake, _ = vendor
    server, _ = gateway
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 404) and fake.seen == []


def test_huge_body_is_refused(vendor: Any, gateway: Any) -> None:
    fake, _ = vendor
    server, _ = gateway
    resp = httpx2.post(f"{server.url}/openai/images/edits", content=b"x" * 3_000_000,
                       headers={"Content-Type": "application/octet-stream"}, timeout=30)  # fmt: skip
    assert resp.status_code == 413 and fake.seen == []


def test_malformed_multipart_is_blocked(vendor: Any, gateway: Any) -> None:
    fake, _ = vendor
    server, _ = gateway
    resp = httpx2.post(f"{server.url}/openai/images/edits", content=b"--b\r\nno headers",
                       headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=30)  # fmt: skip
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "request.malformed"
    assert fake.seen == []


def test_unreachable_upstream_is_a_502_and_recorded(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens here once closed
    log = AuditLog(tmp_path / "a.db")
    guard = Guard(Policy(vendor_hosts={f"127.0.0.1:{dead}": "openai"}), log)
    with Server(
        Gateway({"": guard}, base_urls={"openai": f"http://127.0.0.1:{dead}/v1"})
    ) as server:
        resp = httpx2.post(f"{server.url}/openai/responses", json={"input": "hi"}, timeout=30)
    assert resp.status_code == 502
    (rec,) = log.records()
    assert rec.outcome == "failed"
    log.close()


def test_health_and_metrics(vendor: Any, gateway: Any) -> None:
    server, _ = gateway
    assert httpx2.get(f"{server.url}/_veilpix/health").json() == {"status": "ok"}
    httpx2.post(f"{server.url}/openai/responses", json={"input": "hi"}, timeout=30)
    text = httpx2.get(f"{server.url}/_veilpix/metrics").text
    assert 'veilpix_requests_total{vendor="openai",outcome="sent"} 1' in text
    assert "veilpix_upstream_seconds_count" in text


def test_token_is_required_when_set(vendor: Any, tmp_path: Path) -> None:
    fake, upstream = vendor
    log = AuditLog(tmp_path / "a.db")
    guard = Guard(Policy(vendor_hosts={f"127.0.0.1:{upstream.port}": "openai"}), log)
    app = Gateway({"": guard}, base_urls={"openai": f"{upstream.url}/v1"}, token="s3cret-token")
    with Server(app) as server:
        url = f"{server.url}/openai/responses"
        assert httpx2.post(url, json={"input": "hi"}).status_code == 401
        ok = httpx2.post(url, json={"input": "hi"}, headers={"X-Veilpix-Token": "s3cret-token"})
        assert ok.status_code == 200
    assert "x-veilpix-token" not in fake.last.headers
    from auditkit import file_bytes

    assert b"s3cret-token" not in file_bytes(tmp_path / "a.db")
    log.close()


def test_a_client_that_leaves_mid_upload_sends_nothing(vendor: Any, gateway: Any) -> None:
    import time

    fake, _ = vendor
    server, log = gateway
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /openai/images/edits HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
                     + PHOTO[:500])  # fmt: skip
    deadline = time.monotonic() + 5
    while (
        time.monotonic() < deadline
        and 'outcome="client_disconnected"' not in httpx2.get(f"{server.url}/_veilpix/metrics").text
    ):
        time.sleep(0.05)
    assert fake.seen == [] and list(log.records()) == []


def test_a_client_that_gives_up_on_a_hanging_vendor_cancels_the_call(
    vendor: Any, gateway: Any
) -> None:
    import time

    fake, _ = vendor
    server, log = gateway
    with pytest.raises(httpx2.TimeoutException):
        httpx2.post(f"{server.url}/openai/hang", json={"input": "hi"}, timeout=1.0)
    assert len(fake.seen) == 1  # it was sent ...
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not [r for r in log.records() if r.outcome == "failed"]:
        time.sleep(0.05)
    (rec,) = log.records()
    assert rec.outcome == "failed" and "cancelled" in rec.to_dict()["reason"]  # ... and recorded


def test_a_vendor_that_resets_is_a_502(tmp_path: Path) -> None:
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def reset_all() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            conn.close()  # RST

    threading.Thread(target=reset_all, daemon=True).start()
    log = AuditLog(tmp_path / "a.db")
    guard = Guard(Policy(vendor_hosts={f"127.0.0.1:{port}": "openai"}), log)
    try:
        with Server(
            Gateway({"": guard}, base_urls={"openai": f"http://127.0.0.1:{port}/v1"})
        ) as server:
            resp = httpx2.post(f"{server.url}/openai/responses", json={"input": "hi"}, timeout=30)
        assert resp.status_code == 502 and resp.json()["error"]["code"] == "veilpix_upstream"
        (rec,) = log.records()
        assert rec.outcome == "failed"
    finally:
        listener.close()
        log.close()


def test_curl_multipart_edit_and_json(
    vendor: Any, gateway: Any, tmp_path: Path, assert_clean: Any
) -> None:
    import shutil
    import subprocess

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    fake, _ = vendor
    server, _ = gateway
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(PHOTO)
    out = subprocess.run(
        ["curl", "-sS", "-f", f"{server.url}/openai/images/edits", "-H", "Authorization: Bearer sk-test",
         "-F", "model=gpt-image-2", "-F", "prompt=add a hat", "-F", f"image=@{photo};type=image/jpeg"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = seen_as_captured(fake)
    (image,) = [p for p in form_parts(got) if p[0] == "image"]
    assert_clean(image[3], "curl.jpg")
    assert [p[3] for p in form_parts(got) if p[0] == "prompt"] == [b"add a hat"]
    out = subprocess.run(
        ["curl", "-sS", f"{server.url}/openai/responses", "-H", "Content-Type: application/json",
         "-d", json.dumps({"model": "gpt-5", "input": "hi"})],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert json.loads(out.stdout) == fake.reply and json.loads(fake.last.body)["store"] is False


def test_a_completed_call_is_not_counted_as_a_disconnect(vendor: Any, gateway: Any) -> None:
    server, _ = gateway
    httpx2.post(f"{server.url}/openai/responses", json={"input": "hi"}, timeout=30)
    text = httpx2.get(f"{server.url}/_veilpix/metrics").text
    assert 'outcome="sent"} 1' in text and "client_disconnected" not in text


def test_two_vendors_behind_one_host_are_told_apart_by_the_path(
    vendor: Any, tmp_path: Path
) -> None:
    """A corporate gateway host serving several vendors: the route names the vendor."""
    fake, upstream = vendor
    log = AuditLog(tmp_path / "a.db")
    hosts = {f"127.0.0.1:{upstream.port}": "anthropic"}  # the host alone would say anthropic
    app = Gateway({"": Guard(Policy(vendor_hosts=hosts), log)},
                  base_urls={"openai": f"{upstream.url}/v1", "anthropic": upstream.url})  # fmt: skip
    with Server(app) as server:
        httpx2.post(f"{server.url}/openai/chat/completions", json={"messages": []}, timeout=30)
    (rec,) = log.records()
    assert rec.where["vendor"] == "openai" and fake.last.path == "/v1/chat/completions"
    log.close()
