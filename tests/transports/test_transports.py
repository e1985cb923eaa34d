"""The httpx2 and httpx transports and the core behind them: what reaches the wire is clean,
keeps its meaning, and is logged; what cannot be proved clean never leaves."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest

import factories
import veilpix
from veilpix import AuditLog, Policy, RequestBlocked
from veilpix.transports.httpx import GuardTransport as HttpxGuard
from veilpix.transports.httpx2 import AsyncGuardTransport, GuardTransport
from wire import Upstream, data_uri_bytes, form_parts, json_body

PHOTO = factories.jpeg()
SECRET = factories.SECRET.encode()
OPENAI = "https://api.openai.com/v1"


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    with AuditLog(tmp_path / "audit.db") as opened:
        yield opened


def client(upstream: Upstream, log: AuditLog, **policy: Any) -> httpx2.Client:
    transport = GuardTransport(
        httpx2.MockTransport(upstream.handler2), policy=Policy(**policy), log=log
    )
    return httpx2.Client(transport=transport)


def data_uri(data: bytes, media: str = "image/jpeg") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


# -- multipart ------------------------------------------------------------------------------


def test_multipart_edit_is_clean_and_keeps_its_meaning(log: AuditLog, assert_clean: Any) -> None:
    up = Upstream()
    with client(up, log) as c:
        resp = c.post(
            f"{OPENAI}/images/edits",
            data={"model": "gpt-image-2", "prompt": "a cat"},
            files=[
                ("image[]", ("a.jpg", PHOTO, "image/jpeg")),
                ("image[]", ("b.png", factories.png(), "image/png")),
            ],
            headers={"Authorization": "Bearer sk-test-1234567890abcdefgh"},
        )
    assert resp.status_code == 200
    got = up.last
    parts = form_parts(got)
    assert [p[0] for p in parts] == ["model", "prompt", "image[]", "image[]"]
    assert parts[0][3] == b"gpt-image-2" and parts[1][3] == b"a cat"
    for name, filename, ctype, data in parts[2:]:
        assert name == "image[]" and filename and ctype in ("image/jpeg", "image/png")
        assert SECRET not in data
        assert_clean(data, filename)
    assert int(got.headers["content-length"]) == len(got.body)
    assert got.headers["content-usage"] == "train-ai=n"
    assert "content-encoding" not in got.headers
    (rec,) = log.records()
    d = rec.to_dict()
    assert (d["outcome"], d["status"], d["where"]["vendor"]) == ("sent", 200, "openai")
    assert d["vendor_request_id"] == "req_1" and d["what"]["image_count"] == 2
    assert resp.extensions["veilpix_receipt"].record_id == rec.id


def test_a_mask_gets_its_image_geometry(log: AuditLog) -> None:
    from PIL import Image

    up = Upstream()
    turned = factories.jpeg(orientation=6)  # stored sideways, shown upright
    mask = factories.png(im=factories.picture((64, 48), "RGBA"))
    with client(up, log) as c:
        c.post(
            f"{OPENAI}/images/edits",
            data={"prompt": "x"},
            files=[
                ("image", ("a.jpg", turned, "image/jpeg")),
                ("mask", ("m.png", mask, "image/png")),
            ],
        )
    parts = {p[0]: p for p in form_parts(up.last)}
    import io

    image = Image.open(io.BytesIO(parts["image"][3]))
    clean_mask = Image.open(io.BytesIO(parts["mask"][3]))
    assert parts["mask"][2] == "image/png" and clean_mask.size == image.size


# -- JSON ----------------------------------------------------------------------------------


def test_json_data_uri_in_chat(log: AuditLog, assert_clean: Any) -> None:
    up = Upstream()
    body = {
        "model": "gpt-5",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": data_uri(PHOTO), "detail": "high"}},
                ],
            }
        ],
    }
    with client(up, log) as c:
        c.post(f"{OPENAI}/chat/completions", json=body)
    sent = json_body(up.last)
    part = sent["messages"][0]["content"][1]
    media, data = data_uri_bytes(part["image_url"]["url"])
    assert media == "image/jpeg" and part["image_url"]["detail"] == "high"
    assert sent["messages"][0]["content"][0] == {"type": "text", "text": "what is this?"}
    assert_clean(data, "chat.jpg")


def test_base64_with_a_sibling_media_type_is_converted_and_relabelled(log: AuditLog) -> None:
    pytest.importorskip("pillow_heif")
    up = Upstream()
    heic = factories.heic()
    body = {
        "model": "claude",
        "max_tokens": 10,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/heic",
                            "data": base64.b64encode(heic).decode(),
                        },
                    },
                ],
            }
        ],
    }
    transport = GuardTransport(httpx2.MockTransport(up.handler2), log=log)
    with httpx2.Client(transport=transport) as c:
        c.post("https://api.anthropic.com/v1/messages", json=body)
    source = json_body(up.last)["messages"][0]["content"][0]["source"]
    assert source["media_type"] == "image/jpeg"
    assert base64.b64decode(source["data"])[:3] == b"\xff\xd8\xff"


def test_gzip_body_is_decoded_sanitized_and_sent_plain(log: AuditLog, assert_clean: Any) -> None:
    up = Upstream()
    raw = json.dumps(
        {
            "contents": [
                {
                    "parts": [
                        {
                            "inlineData": {
                                "mimeType": "image/jpeg",
                                "data": base64.b64encode(PHOTO).decode(),
                            }
                        }
                    ]
                }
            ]
        }
    ).encode()
    transport = GuardTransport(httpx2.MockTransport(up.handler2), log=log)
    with httpx2.Client(transport=transport) as c:
        c.post(
            "https://generativelanguage.googleapis.com/v1/models/gemini-3:generateContent",
            content=gzip.compress(raw),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
    assert "content-encoding" not in up.last.headers
    inline = json_body(up.last)["contents"][0]["parts"][0]["inlineData"]
    assert_clean(base64.b64decode(inline["data"]), "g.jpg")


def test_privacy_controls_are_applied(log: AuditLog) -> None:
    up = Upstream()
    with client(up, log, sec_gpc=True) as c:
        c.post(f"{OPENAI}/responses", json={"model": "gpt-5", "input": "hi", "store": True})
    assert json_body(up.last)["store"] is False
    assert up.last.headers["sec-gpc"] == "1"
    (rec,) = log.records()
    assert any("store" in c for c in rec.to_dict()["controls"]["applied"])


def test_region_routing(log: AuditLog) -> None:
    up = Upstream()
    with client(up, log, region="eu") as c:
        c.post(f"{OPENAI}/responses", json={"model": "gpt-5", "input": "hi"})
    assert up.last.url.startswith("https://eu.api.openai.com/v1/responses")
    (rec,) = log.records()
    assert rec.where["region"] == "eu" and rec.where["host"] == "eu.api.openai.com"


# -- remote images ------------------------------------------------------------------------


def _chat_with_url(url: str) -> dict[str, Any]:
    return {
        "model": "gpt-5",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
        ],
    }


def test_remote_image_is_inlined_clean(log: AuditLog, assert_clean: Any) -> None:
    up = Upstream()
    fetched: list[str] = []

    def fetch(url: str, policy: Policy) -> tuple[bytes, str | None]:
        fetched.append(url)
        return PHOTO, "image/jpeg"

    guard = veilpix.Guard(Policy(), log, fetch=fetch)
    transport = GuardTransport(httpx2.MockTransport(up.handler2), guard=guard)
    with httpx2.Client(transport=transport) as c:
        c.post(f"{OPENAI}/chat/completions", json=_chat_with_url("https://img.example/p.jpg"))
    assert fetched == ["https://img.example/p.jpg"]
    url = json_body(up.last)["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert_clean(data_uri_bytes(url)[1], "inl.jpg")


@pytest.mark.parametrize(("mode", "sent"), [("block", False), ("allow", True)])
def test_remote_image_block_or_allow(mode: str, sent: bool, log: AuditLog) -> None:
    up = Upstream()
    with client(up, log, remote_images=mode) as c:
        if sent:
            c.post(f"{OPENAI}/chat/completions", json=_chat_with_url("https://img.example/p.jpg"))
        else:
            with pytest.raises(RequestBlocked) as info:
                c.post(
                    f"{OPENAI}/chat/completions", json=_chat_with_url("https://img.example/p.jpg")
                )
            assert info.value.rule == "remote_images"
    assert len(up.seen) == int(sent)
    (rec,) = log.records()
    assert rec.outcome == ("sent" if sent else "blocked")


# -- blocking --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "policy", "rule"),
    [
        ("https://api.example.com/v1/chat", {}, "destination.unknown_host"),
        ("http://api.openai.com/v1/responses", {}, "destination.https_only"),
        (f"{OPENAI}/responses", {"allowed_vendors": {"anthropic"}}, "destination.vendor"),
        (f"{OPENAI}/responses", {"allowed_countries": veilpix.EEA}, "destination.country"),
        (f"{OPENAI}/responses", {"require_controls": {"no-such-control"}}, "controls.required"),
    ],
)
def test_destination_policy_blocks_before_sending(
    url: str, policy: dict[str, Any], rule: str, log: AuditLog
) -> None:
    up = Upstream()
    with client(up, log, **policy) as c, pytest.raises(RequestBlocked) as info:
        c.post(url, json={"input": "hi"})
    assert info.value.rule == rule and up.seen == []
    (rec,) = log.records()
    assert rec.outcome == "blocked" and rec.to_dict()["rule"] == rule
    assert info.value.record_id == rec.id


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xd8\xff\xe0" + b"\x00" * 40 + b"garbage that is not a JPEG",
        b"8BPS\x00\x01" + bytes(6) + b"\x00\x03" + bytes(90),  # a Photoshop document
    ],
)
def test_an_image_that_cannot_be_sanitized_blocks_the_request(
    payload: bytes, log: AuditLog
) -> None:
    up = Upstream()
    with client(up, log) as c, pytest.raises(RequestBlocked) as info:
        c.post(
            f"{OPENAI}/images/edits",
            data={"prompt": "x"},
            files={"image": ("a.jpg", payload, "application/octet-stream")},
        )
    assert info.value.rule.startswith("image.") and up.seen == []


def test_loopback_gateway_mapped_to_a_vendor(log: AuditLog) -> None:
    up = Upstream()
    with client(up, log, vendor_hosts={"127.0.0.1": "openai"}) as c:
        c.post("http://127.0.0.1:9000/v1/responses", json={"input": "hi"})
    (rec,) = log.records()
    assert rec.where["vendor"] == "openai" and rec.where["country"] is None


def test_unwritable_log_sends_nothing(tmp_path: Path) -> None:
    from veilpix import AuditLogError

    log = AuditLog(tmp_path / "a.db")
    log.close()
    up = Upstream()
    with client(up, log) as c, pytest.raises(AuditLogError):
        c.post(f"{OPENAI}/responses", json={"input": "hi"})
    assert up.seen == []


# -- the other doors ---------------------------------------------------------------------------


def test_async_transport(log: AuditLog, assert_clean: Any) -> None:
    up = Upstream()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        return up.handler2(request)

    async def run() -> None:
        transport = AsyncGuardTransport(httpx2.MockTransport(handler), log=log)
        async with httpx2.AsyncClient(transport=transport) as c:
            await c.post(
                f"{OPENAI}/images/edits",
                data={"prompt": "x"},
                files={"image": ("a.jpg", PHOTO, "image/jpeg")},
            )

    asyncio.run(run())
    ((_, _, _, data),) = [p for p in form_parts(up.last) if p[0] == "image"]
    assert_clean(data, "async.jpg")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_async_route_runs_on_any_event_loop_anyio_runs_on(
    backend: str, log: AuditLog, assert_clean: Any
) -> None:
    """The async transport takes the core's one async route (Guard.aprepare): small checks
    on the loop, images on a worker thread, the log's begin and finish committed by its
    writer thread: on asyncio and on trio alike, records begun and finished."""
    if backend == "trio":
        pytest.importorskip("trio")
    up = Upstream()
    threads: set[str] = set()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        return up.handler2(request)

    async def run() -> None:
        transport = AsyncGuardTransport(httpx2.MockTransport(handler), log=log)
        async with httpx2.AsyncClient(transport=transport) as c:
            text = await c.post(f"{OPENAI}/responses", json={"model": "gpt-4.1", "input": "hi"})
            image = await c.post(
                f"{OPENAI}/images/edits",
                data={"prompt": "x"},
                files={"image": ("a.jpg", PHOTO, "image/jpeg")},
            )
        threads.add(threading.current_thread().name)
        assert text.status_code == image.status_code == 200

    anyio.run(run, backend=backend)
    ((_, _, _, data),) = [p for p in form_parts(up.last) if p[0] == "image"]
    assert_clean(data, f"{backend}.jpg")
    records = log.records()
    assert [r.outcome for r in records] == ["sent", "sent"]
    assert threads == {threading.current_thread().name}  # the loop ran here, not in a thread
    assert log.verify().intact


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_cancelled_async_call_is_recorded_as_failed(backend: str, log: AuditLog) -> None:
    """A call cancelled while the vendor thinks (a timeout in the app) leaves no open record:
    the async route records the failure on the loop, cancelled or not."""
    if backend == "trio":
        pytest.importorskip("trio")

    async def slow(request: httpx2.Request) -> httpx2.Response:
        await anyio.sleep(30)
        return httpx2.Response(200)

    async def run() -> None:
        transport = AsyncGuardTransport(httpx2.MockTransport(slow), log=log)
        async with httpx2.AsyncClient(transport=transport) as c:
            with anyio.move_on_after(0.3):
                await c.post(f"{OPENAI}/responses", json={"model": "gpt-4.1", "input": "hi"})

    anyio.run(run, backend=backend)
    (record,) = log.records()
    assert record.outcome == "failed", record.outcome
    assert "ancel" in (record.finish or {}).get("reason", "")


def test_httpx_transport_for_replicate(log: AuditLog, assert_clean: Any) -> None:
    up = Upstream()
    transport = HttpxGuard(httpx.MockTransport(up.handler), log=log)
    with httpx.Client(transport=transport) as c:
        c.post(
            "https://api.replicate.com/v1/predictions",
            json={"version": "abc", "input": {"image": data_uri(PHOTO), "prompt": "x"}},
        )
    _, data = data_uri_bytes(json_body(up.last)["input"]["image"])
    assert_clean(data, "rep.jpg")
    assert json_body(up.last)["input"]["prompt"] == "x"


def test_http_client_helper(tmp_path: Path) -> None:
    with veilpix.http_client(log=tmp_path / "a.db") as c:
        assert isinstance(c._transport, GuardTransport)


@pytest.mark.parametrize(("region", "geo"), [(None, None), ("us", "us")])
def test_region_bound_controls_apply_only_when_asked(
    region: str | None, geo: str | None, log: AuditLog
) -> None:
    up = Upstream()
    with client(up, log, region=region) as c:
        c.post(
            "https://api.anthropic.com/v1/messages",
            json={"model": "m", "max_tokens": 1, "messages": []},
        )
    assert json_body(up.last).get("inference_geo") == geo


def test_a_vendors_own_file_url_is_not_a_remote_image(log: AuditLog) -> None:
    up = Upstream()
    body = {
        "contents": [
            {
                "parts": [
                    {
                        "fileData": {
                            "mimeType": "image/jpeg",
                            "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc123",
                        }
                    }
                ]
            }
        ]
    }
    with client(up, log, remote_images="block") as c:
        c.post(
            "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent", json=body
        )
    assert json_body(up.last) == body


@pytest.mark.parametrize(
    ("content", "ctype", "rule"),
    [
        (
            b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\nno end",
            "multipart/form-data; boundary=x",
            "request.malformed",
        ),
        (b'{"a": 1, "a": 2}', "application/json", "request.malformed"),
        (b'{"image": "data:image/png;base64,!!!"}', "application/json", "request.malformed"),
        (gzip.compress(b"x" * 3_000_000, mtime=0), "application/json", "request.too_large"),
    ],
)
def test_malformed_or_oversized_bodies_are_blocked(
    content: bytes, ctype: str, rule: str, log: AuditLog
) -> None:
    up = Upstream()
    headers = {"Content-Type": ctype}
    if content[:2] == b"\x1f\x8b":
        headers["Content-Encoding"] = "gzip"
    with client(up, log, max_request_bytes=1_000_000) as c, pytest.raises(RequestBlocked) as info:
        c.post(f"{OPENAI}/images/edits", content=content, headers=headers)
    assert info.value.rule == rule and up.seen == []


def test_gemini_resumable_upload(log: AuditLog, assert_clean: Any) -> None:
    up = Upstream()
    base = "https://generativelanguage.googleapis.com/upload/v1beta/files"
    with client(up, log) as c:
        c.post(
            base,
            json={"file": {"display_name": "p"}},
            headers={
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": str(len(PHOTO)),
                "X-Goog-Upload-Header-Content-Type": "image/jpeg",
            },
        )
        start = up.last
        c.post(
            f"{base}?upload_id=abc",
            content=PHOTO,
            headers={
                "X-Goog-Upload-Command": "upload, finalize",
                "X-Goog-Upload-Offset": "0",
                "Content-Type": "application/octet-stream",
            },
        )
    # The sanitized file's size is not known when the upload starts: the declared length goes.
    assert "x-goog-upload-header-content-length" not in start.headers
    assert_clean(up.last.body, "upload.jpg")
    assert int(up.last.headers["content-length"]) == len(up.last.body)


def test_faces_without_consent_are_blocked(log: AuditLog) -> None:
    from veilpix import FaceBox

    class OneFace:
        name = "one-face"

        def detect(self, rgb: Any, *, scale: float = 1.0) -> list[FaceBox]:
            return [FaceBox(4, 4, 20, 20, 0.99)]

    up = Upstream()
    policy = {
        "require_consent_for_faces": True,
        "face_detector": OneFace(),
        "face_rotations": False,
    }
    with client(up, log, **policy) as c, pytest.raises(RequestBlocked) as info:
        c.post(
            f"{OPENAI}/images/edits",
            data={"prompt": "x"},
            files={"image": ("a.jpg", PHOTO, "image/jpeg")},
        )
    assert info.value.rule == "faces.consent" and up.seen == []


def test_the_prompt_is_logged_as_length_and_fingerprint_only(log: AuditLog) -> None:
    up = Upstream()
    with client(up, log) as c:
        c.post(
            f"{OPENAI}/images/edits",
            data={"prompt": "put the CEO on Mars"},
            files={"image": ("a.jpg", PHOTO, "image/jpeg")},
        )
    (rec,) = log.records()
    prompt = rec.to_dict()["what"]["prompt"]
    assert prompt["length"] == len("put the CEO on Mars")
    assert prompt["fingerprint"] == log.fingerprint(b"put the CEO on Mars", label="prompt")


@pytest.mark.parametrize(
    ("body", "blocked"),
    [
        ({"purpose": "vision", "filename": "p.jpg", "bytes": 10, "mime_type": "image/jpeg"}, True),
        # every extension the format registry knows names an image, whatever the declared type
        *(
            (
                {
                    "purpose": "vision",
                    "filename": f"p{ext}",
                    "bytes": 10,
                    "mime_type": "application/octet-stream",
                },
                True,
            )
            for ext in (".jfif", ".dib", ".hif", ".HEIC", ".mpo")
        ),
        (
            {"purpose": "batch", "filename": "b.jsonl", "bytes": 10, "mime_type": "text/jsonl"},
            False,
        ),
    ],
)
def test_chunked_uploads_of_images_are_refused(
    body: dict[str, Any], blocked: bool, log: AuditLog
) -> None:
    up = Upstream()
    with client(up, log) as c:
        if blocked:
            with pytest.raises(RequestBlocked) as info:
                c.post(f"{OPENAI}/uploads", json=body)
            assert info.value.rule == "upload.chunked_image"
        else:
            c.post(f"{OPENAI}/uploads", json=body)
    assert len(up.seen) == int(not blocked)


def test_an_image_body_labelled_json_is_still_an_image(log: AuditLog, assert_clean: Any) -> None:
    up = Upstream()
    with client(up, log) as c:
        c.post(
            "https://generativelanguage.googleapis.com/upload/v1beta/files?upload_id=x",
            content=PHOTO,
            headers={
                "Content-Type": "application/json",
                "X-Goog-Upload-Command": "upload, finalize",
            },
        )
    assert_clean(up.last.body, "labelled.jpg")


def test_a_named_host_can_say_where_it_is(log: AuditLog) -> None:
    up = Upstream()
    host = "myres.openai.azure.com"
    with client(up, log, allowed_countries=veilpix.EEA, host_countries={host: "SE"}) as c:
        c.post(f"https://{host}/openai/v1/responses", json={"input": "hi"})
    (rec,) = log.records()
    assert rec.where["country"] == "SE" and rec.where["vendor"] == "azure"


def test_fetch_refuses_a_redirect_to_plain_http() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://images.example.invalid/p.jpg")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    from veilpix.guard import fetch_url
    from veilpix.guard._rules import Block

    try:
        with pytest.raises(Block, match="not https"):
            fetch_url(f"http://127.0.0.1:{server.server_port}/p.jpg", Policy())
    finally:
        thread.join(timeout=5)
        server.server_close()


def test_a_json_mask_gets_its_image_geometry(log: AuditLog) -> None:
    import io

    from PIL import Image

    up = Upstream()
    turned = factories.jpeg(orientation=6)
    mask = factories.png(im=factories.picture((64, 48), "RGBA"))
    body = {
        "prompt": "x",
        "mask": base64.b64encode(mask).decode(),
        "image": base64.b64encode(turned).decode(),
    }
    with client(up, log) as c:
        c.post("https://api.bfl.ai/v1/flux-pro-1.0-fill", json=body)
    sent = json_body(up.last)
    image = Image.open(io.BytesIO(base64.b64decode(sent["image"])))
    clean_mask = Image.open(io.BytesIO(base64.b64decode(sent["mask"])))
    assert clean_mask.format == "PNG" and clean_mask.size == image.size


def test_region_routing_leaves_a_specific_regional_host_alone(log: AuditLog) -> None:
    up = Upstream()
    with client(up, log, region="eu") as c:
        c.get("https://api.us1.bfl.ai/v1/get_result?id=abc")
    assert up.last.url.startswith("https://api.us1.bfl.ai/")


def test_a_vendor_can_have_its_own_policy(log: AuditLog) -> None:
    up = Upstream()
    guard = veilpix.Guard(
        Policy(), log, vendor_policies={"openai": Policy(allowed_countries=veilpix.EEA)}
    )
    with httpx2.Client(
        transport=GuardTransport(httpx2.MockTransport(up.handler2), guard=guard)
    ) as c:
        c.post(
            "https://api.anthropic.com/v1/messages",
            json={"model": "m", "max_tokens": 1, "messages": []},
        )
        with pytest.raises(RequestBlocked) as info:
            c.post(f"{OPENAI}/responses", json={"input": "hi"})
    assert info.value.rule == "destination.country" and len(up.seen) == 1
