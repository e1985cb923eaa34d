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
from veilpix import AuditLog, Guard, Policy
from veilpix.proxy import Gateway
from wire import Captured, form_parts

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
    fake.reply = {
        "id": "m",
        "type": "message",
        "role": "assistant",
        "model": "c",
        "content": [{"type": "text", "text": "a cat"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    client = anthropic.Anthropic(
        api_key="sk-ant-test-abcdefgh",
        base_url=f"{server.url}/anthropic",
        default_headers={"X-Veilpix-App": "claude-app"},
        max_retries=0,
    )
    client.messages.create(
        model="claude",
        max_tokens=8,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/jpeg",
                            "data": base64.b64encode(PHOTO).decode(),
                        },
                    }
                ],
            }
        ],
    )
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
    resp = httpx2.post(
        f"{server.url}/openai/images/edits",
        content=b"x" * 3_000_000,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert resp.status_code == 413 and fake.seen == []


def test_malformed_multipart_is_blocked(vendor: Any, gateway: Any) -> None:
    fake, _ = vendor
    server, log = gateway
    resp = httpx2.post(
        f"{server.url}/openai/images/edits",
        content=b"--b\r\nno headers",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
        timeout=30,
    )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "request.malformed"
    assert resp.headers["x-veilpix-blocked"] == "request.malformed"
    assert resp.headers["x-should-retry"] == "false"
    (record,) = log.records()
    assert resp.headers["x-veilpix-record"] == record.id
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
        sock.sendall(
            b"POST /openai/images/edits HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
            + PHOTO[:500]
        )
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


def test_a_client_that_leaves_after_a_large_upload_cancels_the_call(
    vendor: Any, gateway: Any
) -> None:
    # The last piece of the body (over uvicorn's 64 KiB read buffer) arrives while the app
    # waits for it: uvicorn pauses reading, and unless reading resumes once the body is
    # complete, the server never sees the client's FIN and the call goes on.
    import time

    fake, _ = vendor
    server, log = gateway
    body = json.dumps({"input": "x" * 300_000}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /openai/hang HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:1000]
        )
        time.sleep(0.3)  # the app now waits in receive()
        sock.sendall(body[1000:])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not fake.seen:
            time.sleep(0.02)
        assert len(fake.seen) == 1  # it was sent ...
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not [r for r in log.records() if r.outcome == "failed"]:
        time.sleep(0.05)
    (rec,) = log.records()
    assert rec.outcome == "failed" and "cancelled" in rec.to_dict()["reason"]  # ... and recorded


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_under_plain_uvicorn_a_client_that_gives_up_cancels_the_call_too(
    vendor: Any, tmp_path: Path, http: str
) -> None:
    # Without veilpix's own protocol (the Gateway app served by another ASGI server), a task
    # waiting in receive() notices the client leaving instead of the connection's callback.
    import time

    _, upstream = vendor
    log = AuditLog(tmp_path / "audit.db")
    guard = Guard(Policy(vendor_hosts={f"127.0.0.1:{upstream.port}": "openai"}), log)
    app = Gateway({"": guard}, base_urls={"openai": f"{upstream.url}/v1"})
    with Server(app, http=http) as server:
        with pytest.raises(httpx2.TimeoutException):
            httpx2.post(f"{server.url}/openai/hang", json={"input": "hi"}, timeout=1.0)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not [
            r for r in log.records() if r.outcome == "failed"
        ]:
            time.sleep(0.05)
        (rec,) = log.records()
        assert rec.outcome == "failed" and "cancelled" in rec.to_dict()["reason"]
        ok = httpx2.post(f"{server.url}/openai/responses", json={"input": "hi"})
        assert ok.status_code == 200  # and a normal call is not taken for a disconnect
        text = httpx2.get(f"{server.url}/_veilpix/metrics").text
        assert 'outcome="sent"} 1' in text and 'outcome="client_disconnected"} 1' in text
    log.close()


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
        [
            "curl",
            "-sS",
            "-f",
            f"{server.url}/openai/images/edits",
            "-H",
            "Authorization: Bearer sk-test",
            "-F",
            "model=gpt-image-2",
            "-F",
            "prompt=add a hat",
            "-F",
            f"image=@{photo};type=image/jpeg",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    got = seen_as_captured(fake)
    (image,) = [p for p in form_parts(got) if p[0] == "image"]
    assert_clean(image[3], "curl.jpg")
    assert [p[3] for p in form_parts(got) if p[0] == "prompt"] == [b"add a hat"]
    out = subprocess.run(
        [
            "curl",
            "-sS",
            f"{server.url}/openai/responses",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps({"model": "gpt-5", "input": "hi"}),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
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
    app = Gateway(
        {"": Guard(Policy(vendor_hosts=hosts), log)},
        base_urls={"openai": f"{upstream.url}/v1", "anthropic": upstream.url},
    )
    with Server(app) as server:
        httpx2.post(f"{server.url}/openai/chat/completions", json={"messages": []}, timeout=30)
    (rec,) = log.records()
    assert rec.where["vendor"] == "openai" and fake.last.path == "/v1/chat/completions"
    log.close()


# -- Guard.aprepare: on the event loop while it is cheap, else offloaded ----------------------------


class Offload:
    """An ``offload`` for ``Guard.aprepare`` that counts its calls and runs them on a thread,
    as the gateway's does."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        import asyncio

        self.calls += 1
        return await asyncio.to_thread(func, *args, **kwargs)


OPENAI = "https://api.openai.com/v1"


def _json_request(doc: Any, path: str = "/responses", **headers: str) -> Any:
    from veilpix import Outbound

    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return Outbound(
        "POST", f"{OPENAI}{path}", [("Content-Type", "application/json"), *headers.items()], body
    )


def _multipart_request() -> Any:
    from veilpix import Outbound

    b = "vpx-b0undary"
    body = (
        (
            f'--{b}\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-image-1\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nadd a hat\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="cat.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + PHOTO
        + f"\r\n--{b}--\r\n".encode()
    )
    return Outbound(
        "POST",
        f"{OPENAI}/images/edits",
        [("Content-Type", f"multipart/form-data; boundary={b}")],
        body,
    )


def _image_json() -> dict[str, Any]:
    uri = "data:image/jpeg;base64," + base64.b64encode(PHOTO).decode()
    return {
        "model": "gpt-5",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is this"},
                    {"type": "input_image", "image_url": uri},
                ],
            }
        ],
    }


def _both(tmp_path: Path, make: Any, **kwargs: Any) -> tuple[Any, Any, int, AuditLog]:
    """(Guard.prepare's result, Guard.aprepare's result, offload calls, the log)."""
    import asyncio

    log = AuditLog(tmp_path / "aprepare.db")
    guard = Guard(Policy(), log)
    sync = guard.prepare(make())
    offload = Offload()
    got = asyncio.run(guard.aprepare(make(), offload=offload, **kwargs))
    return sync, got, offload.calls, log


def test_aprepare_small_json_runs_inline(tmp_path: Path) -> None:
    sync, got, calls, log = _both(
        tmp_path, lambda: _json_request({"model": "gpt-5", "input": "hi"})
    )
    assert calls == 0
    assert got.request.body == sync.request.body and json.loads(got.request.body)["store"] is False
    assert got.request.headers == sync.request.headers
    assert got.receipt.controls_applied == sync.receipt.controls_applied
    assert len(list(log.records())) == 2  # one record each, nothing from an abandoned try
    got.finish(status=200)
    sync.finish(status=200)
    assert log.verify().intact
    log.close()


@pytest.mark.parametrize("kind", ["data-uri", "multipart"])
def test_aprepare_moves_images_to_the_offload(kind: str, tmp_path: Path, assert_clean: Any) -> None:
    from wire import data_uri_bytes

    make = _multipart_request if kind == "multipart" else lambda: _json_request(_image_json())
    sync, got, calls, log = _both(tmp_path, make)
    assert calls == 1
    assert got.receipt.images == sync.receipt.images and len(got.receipt.images) == 1
    assert got.receipt.images[0].bytes_in == len(PHOTO)
    if kind == "multipart":
        as_sent = [
            Captured("POST", "", dict((k.lower(), v) for k, v in p.request.headers), p.request.body)
            for p in (sync, got)
        ]
        parts = form_parts(as_sent[1])
        assert parts == form_parts(as_sent[0])  # the same form, whatever the boundary
        assert [p[0] for p in parts] == ["model", "prompt", "image"]
        image = parts[2][3]
    else:
        assert got.request.body == sync.request.body
        part = json.loads(got.request.body)["input"][0]["content"][1]
        media, image = data_uri_bytes(part["image_url"])
        assert media == "image/jpeg"
    assert image != PHOTO and factories.SERIAL.encode() not in image
    assert_clean(image, f"aprepare-{kind}.jpg")
    assert [r.outcome for r in log.records()] == ["unknown", "unknown"]  # begun, once each
    log.close()


def test_aprepare_a_compressed_body_goes_to_the_offload(tmp_path: Path) -> None:
    import gzip

    doc = {"model": "gpt-5", "input": "hi"}

    def make() -> Any:
        return _json_request(
            gzip.compress(json.dumps(doc).encode()), **{"Content-Encoding": "gzip"}
        )

    sync, got, calls, log = _both(tmp_path, make)
    assert calls == 1
    assert got.request.body == sync.request.body
    assert json.loads(got.request.body) == {**doc, "store": False}
    assert got.request.header("content-encoding") is None
    assert got.request.header("content-length") == str(len(got.request.body))
    log.close()


def test_aprepare_a_large_body_goes_to_the_offload_at_once(tmp_path: Path) -> None:
    import asyncio

    log = AuditLog(tmp_path / "a.db")
    guard = Guard(Policy(), log)
    small = _json_request({"model": "gpt-5", "input": "hi"})
    offload = Offload()
    got = asyncio.run(guard.aprepare(small, offload=offload, inline_limit=len(small.body) - 1))
    assert offload.calls == 1  # nothing in it is heavy: only its size sent it there
    asyncio.run(guard.aprepare(small, offload=offload, inline_limit=len(small.body)))
    assert offload.calls == 1  # at the limit: inline
    assert json.loads(got.request.body)["store"] is False
    assert len(list(log.records())) == 2
    log.close()


def test_aprepare_without_an_offload_runs_everything_inline(tmp_path: Path) -> None:
    import asyncio

    log = AuditLog(tmp_path / "a.db")
    guard = Guard(Policy(), log)
    sync = guard.prepare(_json_request(_image_json()))
    got = asyncio.run(guard.aprepare(_json_request(_image_json())))
    assert got.request.body == sync.request.body and got.receipt.images == sync.receipt.images
    log.close()


def _blocked_cases() -> list[Any]:
    from veilpix import Outbound

    corrupt = b"\xff\xd8\xff\xe0" + b"\x00" * 40 + b"not really a jpeg"
    return [
        pytest.param(
            lambda: Outbound(
                "POST", "https://evil.example/v1/x", [("Content-Type", "application/json")], b"{}"
            ),
            "destination.unknown_host",
            0,
            id="unknown-host",
        ),
        pytest.param(
            lambda: _json_request(b'{"input": '), "request.malformed", 0, id="malformed-json"
        ),
        pytest.param(
            lambda: Outbound(
                "POST",
                f"{OPENAI}/images/edits",
                [("Content-Type", "application/octet-stream")],
                corrupt,
            ),
            "image.unsanitizable",
            1,
            id="corrupt-image",
        ),
    ]


@pytest.mark.parametrize(("make", "rule", "offloaded"), _blocked_cases())
@pytest.mark.parametrize("large", [False, True])
def test_aprepare_blocks_and_records_inline_or_offloaded(
    make: Any, rule: str, offloaded: int, large: bool, tmp_path: Path
) -> None:
    import asyncio

    from veilpix import RequestBlocked

    log = AuditLog(tmp_path / "a.db")
    guard = Guard(Policy(), log)
    with pytest.raises(RequestBlocked) as sync:
        guard.prepare(make())
    offload = Offload()
    with pytest.raises(RequestBlocked) as info:
        asyncio.run(guard.aprepare(make(), offload=offload, inline_limit=0 if large else 1 << 20))
    assert offload.calls == (1 if large else offloaded)
    assert info.value.rule == sync.value.rule == rule
    assert info.value.record_id is not None and info.value.record_id != sync.value.record_id
    rec = log.get(info.value.record_id)
    assert rec.outcome == "blocked" and rec.to_dict()["rule"] == rule
    assert [r.outcome for r in log.records()] == ["blocked", "blocked"]
    assert log.verify().intact
    log.close()


# -- Metrics ------------------------------------------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The Prometheus text format taken apart: (name, labels) -> value. Every line must be a
    comment or a sample."""
    import re

    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_]\w*="[^"]*",?)*)\})? (\S+)$')
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = sample.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        key = (m.group(1), labels)
        assert key not in out, f"duplicate sample {line!r}"
        out[key] = float(m.group(3))
    return out


def _labels(**kw: str) -> frozenset[tuple[str, str]]:
    return frozenset(kw.items())


def test_metrics_counts_images_and_unknown_vendors() -> None:
    from veilpix.proxy._metrics import Metrics

    m = Metrics()
    m.count("openai", "sent")
    m.count("openai", "sent")
    m.count("openai", "blocked")
    m.count("no-such-vendor", "refused")
    m.count("-", "refused")
    m.add_image(2, 1000, 400)
    m.add_image(0, 500, 500)
    assert m.requests() == {("openai", "sent"): 2, ("openai", "blocked"): 1, ("-", "refused"): 2}
    s = _samples(m.render())
    req = "veilpix_requests_total"
    assert s[(req, _labels(vendor="openai", outcome="sent"))] == 2
    assert s[(req, _labels(vendor="openai", outcome="blocked"))] == 1
    assert s[(req, _labels(vendor="-", outcome="refused"))] == 2
    assert not any(dict(k[1]).get("vendor") == "no-such-vendor" for k in s)
    assert sum(v for (name, _), v in s.items() if name == req) == 5
    assert s[("veilpix_images_total", frozenset())] == 2
    assert s[("veilpix_faces_blurred_total", frozenset())] == 2
    assert s[("veilpix_image_bytes_before_total", frozenset())] == 1500
    assert s[("veilpix_image_bytes_after_total", frozenset())] == 900
    text = m.render()
    for name in ("veilpix_requests_total", "veilpix_images_total", "veilpix_upstream_seconds"):
        assert f"# TYPE {name} " in text
    assert "# TYPE veilpix_upstream_seconds histogram" in text
    assert "veilpix_upstream_seconds_bucket" not in text  # nothing observed yet


def test_metrics_latency_histogram() -> None:
    from veilpix.proxy._metrics import BUCKETS, Metrics

    m = Metrics()
    for seconds in (0.003, 0.005, 0.07, 2.0, 100.0):  # 0.005 is on a bound: counted in it
        m.observe("anthropic", seconds)
    m.observe("who-knows", 0.2)
    s = _samples(m.render())

    def bucket(vendor: str, le: str) -> float:
        return s[("veilpix_upstream_seconds_bucket", _labels(vendor=vendor, le=le))]

    expected = {0.005: 2, 0.01: 2, 0.05: 2, 0.1: 3, 1: 3, 2.5: 4, 60: 4}
    for bound, n in expected.items():
        assert bucket("anthropic", str(bound)) == n, bound
    counts = [bucket("anthropic", str(b)) for b in BUCKETS] + [bucket("anthropic", "+Inf")]
    assert counts == sorted(counts) and counts[-1] == 5  # cumulative, +Inf holds them all
    assert s[("veilpix_upstream_seconds_count", _labels(vendor="anthropic"))] == 5
    assert s[("veilpix_upstream_seconds_sum", _labels(vendor="anthropic"))] == pytest.approx(
        102.078, abs=1e-5
    )
    assert bucket("-", "0.25") == 1 and bucket("-", "0.1") == 0
    assert ("veilpix_upstream_seconds_count", _labels(vendor="openai")) not in s


def test_metrics_in_one_shared_buffer_add_up() -> None:
    from veilpix.proxy._metrics import Metrics

    assert Metrics.size(2) == 2 * Metrics.size(1) > 0
    buffer = bytearray(Metrics.size(2))
    first = Metrics(slots=2, slot=0, buffer=buffer)
    second = Metrics(slots=2, slot=1, buffer=buffer)
    first.count("openai", "sent")
    second.count("openai", "sent")
    second.count("openai", "failed")
    first.add_image(1, 100, 50)
    second.add_image(0, 10, 5)
    first.observe("openai", 0.02)
    second.observe("openai", 3.0)
    assert first.render() == second.render()  # either worker reports the whole proxy
    s = _samples(first.render())
    assert s[("veilpix_requests_total", _labels(vendor="openai", outcome="sent"))] == 2
    assert s[("veilpix_requests_total", _labels(vendor="openai", outcome="failed"))] == 1
    assert s[("veilpix_images_total", frozenset())] == 2
    assert s[("veilpix_image_bytes_before_total", frozenset())] == 110
    assert s[("veilpix_upstream_seconds_count", _labels(vendor="openai"))] == 2
    assert s[("veilpix_upstream_seconds_bucket", _labels(vendor="openai", le="0.025"))] == 1
    assert s[("veilpix_upstream_seconds_sum", _labels(vendor="openai"))] == pytest.approx(3.02)
    assert any(buffer)  # the counts live in the buffer itself
    alone = Metrics()  # a private one is not part of it
    alone.count("openai", "sent")
    assert (
        _samples(alone.render())[
            ("veilpix_requests_total", _labels(vendor="openai", outcome="sent"))
        ]
        == 1
    )
    with pytest.raises(ValueError, match="slot"):
        Metrics(slots=2, slot=2, buffer=buffer)


# -- the gateway's own use of them ------------------------------------------------------------------


def test_gateway_keeps_one_upstream_connection_and_counts_refusals(
    vendor: Any, tmp_path: Path
) -> None:
    from veilpix.proxy._upstream import UpstreamPool

    fake, upstream = vendor
    log = AuditLog(tmp_path / "a.db")
    pool = UpstreamPool()
    guard = Guard(Policy(vendor_hosts={f"127.0.0.1:{upstream.port}": "openai"}), log)
    app = Gateway({"": guard}, base_urls={"openai": f"{upstream.url}/v1"}, upstream=pool)
    with Server(app) as server, httpx2.Client(base_url=server.url, timeout=30) as client:
        for i in range(3):
            sent = client.post("/openai/responses", json={"input": f"hi {i}"})
            assert sent.status_code == 200 and sent.headers["x-request-id"] == "req_fake"
        assert pool.idle_count() == 1  # three calls, one kept-alive upstream connection
        assert client.get("/nobody/v1/x").status_code == 404
        s = _samples(client.get("/_veilpix/metrics").text)
    assert s[("veilpix_requests_total", _labels(vendor="openai", outcome="sent"))] == 3
    assert s[("veilpix_requests_total", _labels(vendor="-", outcome="refused"))] == 1
    assert s[("veilpix_upstream_seconds_count", _labels(vendor="openai"))] == 3
    assert len(fake.seen) == 3 and [r.outcome for r in log.records()] == ["sent"] * 3
    assert pool.idle_count() == 0  # closed with the app (lifespan shutdown)
    log.close()


def test_gateway_gzip_request_is_decoded_sanitized_and_sent_plain(
    vendor: Any, gateway: Any, assert_clean: Any
) -> None:
    import gzip

    from wire import data_uri_bytes

    fake, _ = vendor
    server, log = gateway
    body = gzip.compress(json.dumps(_image_json()).encode())
    resp = httpx2.post(
        f"{server.url}/openai/responses",
        content=body,
        timeout=30,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status_code == 200
    assert "content-encoding" not in fake.last.headers
    assert fake.last.headers["content-length"] == str(len(fake.last.body))
    part = json.loads(fake.last.body)["input"][0]["content"][1]
    _, image = data_uri_bytes(part["image_url"])
    assert_clean(image, "gw-gzip.jpg")
    (rec,) = log.records()
    assert rec.outcome == "sent"


def test_a_log_removed_under_the_gateway_gets_503_and_sends_nothing(
    vendor: Any, gateway: Any
) -> None:
    fake, _ = vendor
    server, log = gateway
    body = {"model": "gpt-4.1-mini", "input": "hello"}
    moved = log.path.with_name("moved.db")
    log.path.rename(moved)
    try:
        resp = httpx2.post(f"{server.url}/openai/responses", json=body, timeout=30)
    finally:
        moved.rename(log.path)
    assert resp.status_code == 503 and fake.seen == []
    assert "is gone" in resp.text
    fake.reply = {"id": "resp_1", "output": []}
    assert httpx2.post(f"{server.url}/openai/responses", json=body, timeout=30).status_code == 200
