"""The vendors' own SDKs with veilpix as their HTTP transport. Each test drives a real SDK call
into a mock transport that captures the exact bytes on the wire, takes them apart with the
stdlib, and runs the metadata oracle on every image in them."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

import factories
import veilpix
from veilpix import AuditLog, Policy
from veilpix.transports.httpx import GuardTransport as HttpxGuard
from veilpix.transports.httpx2 import GuardTransport
from wire import Upstream, data_uri_bytes, form_parts, json_body

PHOTO = factories.jpeg()
B64 = base64.b64encode(PHOTO).decode()
DATA_URI = f"data:image/jpeg;base64,{B64}"


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    with AuditLog(tmp_path / "audit.db") as opened:
        yield opened


def http2(up: Upstream, log: AuditLog, **policy: Any) -> httpx2.Client:
    return httpx2.Client(
        transport=GuardTransport(
            httpx2.MockTransport(up.handler2), policy=Policy(**policy), log=log
        )
    )


def only_record(log: AuditLog) -> dict[str, Any]:
    (rec,) = log.records()
    return rec.to_dict()


def test_openai_images_edit_multipart(log: AuditLog, assert_clean: Any) -> None:
    openai = pytest.importorskip("openai")
    up = Upstream(reply={"created": 1, "data": [{"b64_json": B64}]})
    client = openai.OpenAI(
        api_key="sk-test-abcdefghijklmnop", http_client=http2(up, log), max_retries=0
    )
    result = client.images.edit(
        model="gpt-image-2",
        image=[("cat.jpg", PHOTO, "image/jpeg"), ("dog.jpg", PHOTO, "image/jpeg")],
        prompt="give them hats",
    )
    assert result.data[0].b64_json == B64  # the vendor's answer comes back untouched
    images = [p for p in form_parts(up.last) if p[0] == "image[]"]
    assert len(images) == 2
    for _, filename, _, data in images:
        assert_clean(data, filename or "x.jpg")
    d = only_record(log)
    assert d["where"]["operation"] == "images.edit" and d["what"]["image_count"] == 2
    assert "sk-test" not in str(d)


def test_openai_chat_with_image(log: AuditLog, assert_clean: Any) -> None:
    openai = pytest.importorskip("openai")
    up = Upstream(
        reply={
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-5",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "a cat"},
                }
            ],
        }
    )
    client = openai.OpenAI(
        api_key="sk-test-abcdefghijklmnop", http_client=http2(up, log), max_retries=0
    )
    out = client.chat.completions.create(
        model="gpt-5",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is it"},
                    {"type": "image_url", "image_url": {"url": DATA_URI}},
                ],
            }
        ],
    )
    assert out.choices[0].message.content == "a cat"
    url = json_body(up.last)["messages"][0]["content"][1]["image_url"]["url"]
    assert_clean(data_uri_bytes(url)[1], "chat.jpg")


def test_openai_responses_with_image_store_false(log: AuditLog, assert_clean: Any) -> None:
    openai = pytest.importorskip("openai")
    up = Upstream(
        reply={
            "id": "r",
            "object": "response",
            "created_at": 1,
            "model": "gpt-5",
            "status": "completed",
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
    )
    client = openai.OpenAI(
        api_key="sk-test-abcdefghijklmnop", http_client=http2(up, log), max_retries=0
    )
    client.responses.create(
        model="gpt-5",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "describe"},
                    {"type": "input_image", "image_url": DATA_URI},
                ],
            }
        ],
    )
    sent = json_body(up.last)
    assert sent["store"] is False
    assert_clean(data_uri_bytes(sent["input"][0]["content"][1]["image_url"])[1], "resp.jpg")


def test_anthropic_messages_base64(log: AuditLog, assert_clean: Any) -> None:
    anthropic = pytest.importorskip("anthropic")
    up = Upstream(
        reply={
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": [{"type": "text", "text": "a cat"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    )
    client = anthropic.Anthropic(
        api_key="sk-ant-test-abcdefghijkl", http_client=http2(up, log), max_retries=0
    )
    msg = client.messages.create(
        model="claude-opus-4-6",
        max_tokens=64,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/jpeg", "data": B64},
                    },
                    {"type": "text", "text": "what is it"},
                ],
            }
        ],
    )
    assert msg.content[0].text == "a cat"
    source = json_body(up.last)["messages"][0]["content"][0]["source"]
    assert_clean(base64.b64decode(source["data"]), "anth.jpg")
    assert only_record(log)["where"]["vendor"] == "anthropic"
    assert "sk-ant-test" not in str(only_record(log))


def test_gemini_generate_content_inline(log: AuditLog, assert_clean: Any) -> None:
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    up = Upstream(
        reply={"candidates": [{"content": {"role": "model", "parts": [{"text": "a cat"}]}}]}
    )
    client = genai.Client(
        api_key="AIza-test-key-000000000000000000000000",
        http_options=types.HttpOptions(httpx_client=http2(up, log)),
    )
    out = client.models.generate_content(
        model="gemini-3-flash",
        contents=[types.Part.from_bytes(data=PHOTO, mime_type="image/jpeg"), "what is it"],
    )
    assert out.text == "a cat"
    inline = json_body(up.last)["contents"][0]["parts"][0]
    inline = inline.get("inlineData") or inline.get("inline_data")
    assert_clean(base64.b64decode(inline["data"]), "gem.jpg")


def test_mistral_chat_image(log: AuditLog, assert_clean: Any) -> None:
    mistral = pytest.importorskip("mistralai.client")
    up = Upstream(
        reply={
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "pixtral",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "a cat"},
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )
    client = mistral.Mistral(api_key="test-key", client=http2(up, log))
    client.chat.complete(
        model="pixtral-large-latest",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is it"},
                    {"type": "image_url", "image_url": DATA_URI},
                ],
            }
        ],
    )
    url = json_body(up.last)["messages"][0]["content"][1]["image_url"]
    url = url["url"] if isinstance(url, dict) else url
    assert_clean(data_uri_bytes(url)[1], "mis.jpg")


def test_replicate_prediction_data_uri(log: AuditLog, assert_clean: Any) -> None:
    replicate = pytest.importorskip("replicate")
    up = Upstream(
        reply={
            "id": "p",
            "model": "o/m",
            "status": "starting",
            "version": "v",
            "input": {},
            "urls": {"get": "https://api.replicate.com/v1/predictions/p"},
        }
    )
    client = replicate.Client(
        api_token="r8_testtesttesttesttesttest",
        transport=HttpxGuard(httpx.MockTransport(up.handler), log=log),
    )
    client.predictions.create(
        version="5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
        input={"image": DATA_URI, "prompt": "hats"},
    )
    sent = json_body(up.last)["input"]
    assert sent["prompt"] == "hats"
    assert_clean(data_uri_bytes(sent["image"])[1], "rep.jpg")


def test_gemini_files_upload(log: AuditLog, assert_clean: Any) -> None:
    genai = pytest.importorskip("google.genai")
    import io

    from google.genai import types

    calls: list[Any] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        calls.append((request.headers.get("x-goog-upload-command"), body))
        if "start" in (request.headers.get("x-goog-upload-command") or ""):
            return httpx2.Response(
                200,
                headers={
                    "x-goog-upload-url": "https://generativelanguage.googleapis.com/upload/v1beta/files?upload_id=u1",
                    "x-goog-upload-status": "active",
                },
            )
        return httpx2.Response(
            200,
            json={
                "file": {
                    "name": "files/abc",
                    "mimeType": "image/jpeg",
                    "uri": "https://generativelanguage.googleapis.com/v1beta/files/abc",
                    "state": "ACTIVE",
                }
            },
            headers={"x-goog-upload-status": "final"},
        )

    http = httpx2.Client(transport=GuardTransport(httpx2.MockTransport(handler), log=log))
    client = genai.Client(
        api_key="AIza-test-key-000000000000000000000000",
        http_options=types.HttpOptions(httpx_client=http),
    )
    client.files.upload(
        file=io.BytesIO(PHOTO), config=types.UploadFileConfig(mime_type="image/jpeg")
    )
    ((_, uploaded),) = [c for c in calls if c[0] and "upload" in c[0] and "start" not in c[0]]
    assert_clean(uploaded, "upload.jpg")


def test_gemini_over_httpx(log: AuditLog, assert_clean: Any) -> None:
    """google-genai also takes an httpx client (HttpOptions(httpx_client=httpx.Client))."""
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    up = Upstream(
        reply={"candidates": [{"content": {"role": "model", "parts": [{"text": "a cat"}]}}]}
    )
    http = httpx.Client(transport=HttpxGuard(httpx.MockTransport(up.handler), log=log))
    client = genai.Client(
        api_key="AIza-test-key-000000000000000000000000",
        http_options=types.HttpOptions(httpx_client=http),
    )
    out = client.models.generate_content(
        model="gemini-3-flash",
        contents=[types.Part.from_bytes(data=PHOTO, mime_type="image/jpeg"), "?"],
    )
    assert out.text == "a cat"
    part = json_body(up.last)["contents"][0]["parts"][0]
    inline = part.get("inlineData") or part.get("inline_data")
    assert_clean(base64.b64decode(inline["data"]), "gem-httpx.jpg")
    assert only_record(log)["where"]["vendor"] == "gemini"


# -- a blocked call, as each SDK sees it through veilpix.http_client -------------------------

ANTHROPIC_IMAGE_CALL: dict[str, Any] = {
    "model": "claude-opus-4-6",
    "max_tokens": 64,
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/jpeg", "data": B64},
                },
                {"type": "text", "text": "what is it"},
            ],
        }
    ],
}


def _blocked_only(log: AuditLog, rule: str) -> None:
    (rec,) = log.records()  # logged once: the SDK did not retry
    assert rec.outcome == "blocked" and rec.to_dict()["rule"] == rule


def test_a_block_reaches_the_anthropic_sdk_as_its_permission_error_once(log: AuditLog) -> None:
    anthropic = pytest.importorskip("anthropic")
    up = Upstream()
    http = veilpix.http_client(
        policy=Policy(allowed_vendors={"openai"}),
        log=log,
        transport=httpx2.MockTransport(up.handler2),
    )
    client = anthropic.Anthropic(api_key="sk-ant-test-abcdefghijkl", http_client=http)  # retries on
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(**ANTHROPIC_IMAGE_CALL)
    assert up.seen == []
    response = caught.value.response
    assert response.status_code == 403
    assert response.headers["x-veilpix-blocked"] == "destination.vendor"
    receipt = response.extensions["veilpix_receipt"]
    assert receipt.blocked == "destination.vendor" and receipt.vendor == "anthropic"
    assert response.headers["x-veilpix-record"] == receipt.record_id
    assert caught.value.body["error"]["type"] == "permission_error"
    assert "blocked by veilpix" in caught.value.message
    _blocked_only(log, "destination.vendor")


def test_a_block_reaches_the_openai_sdk_as_its_permission_error_once(log: AuditLog) -> None:
    openai = pytest.importorskip("openai")
    up = Upstream()
    http = veilpix.http_client(
        policy=Policy(allowed_vendors={"anthropic"}),
        log=log,
        transport=httpx2.MockTransport(up.handler2),
    )
    client = openai.OpenAI(api_key="sk-test-abcdefghijklmnop", http_client=http)  # retries on
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.images.edit(
            model="gpt-image-2", image=("cat.jpg", PHOTO, "image/jpeg"), prompt="hat"
        )
    assert up.seen == []
    assert caught.value.code == "destination.vendor"
    _blocked_only(log, "destination.vendor")


def test_a_block_reaches_the_genai_sdk_as_a_403(log: AuditLog) -> None:
    genai = pytest.importorskip("google.genai")
    from google.genai import errors, types

    up = Upstream()
    http = veilpix.http_client(
        policy=Policy(allowed_vendors={"openai"}),
        log=log,
        transport=httpx2.MockTransport(up.handler2),
    )
    client = genai.Client(
        api_key="AIza-test-key-000000000000000000000000",
        http_options=types.HttpOptions(httpx_client=http),
    )
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(
            model="gemini-2.5-flash",
            contents=[types.Part.from_bytes(data=PHOTO, mime_type="image/jpeg"), "what is it"],
        )
    assert caught.value.code == 403 and caught.value.status == "PERMISSION_DENIED"
    assert up.seen == []
    _blocked_only(log, "destination.vendor")


async def _async_block(log: AuditLog) -> Any:
    up = Upstream()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        return up.handler2(request)

    async with veilpix.async_http_client(
        policy=Policy(allowed_vendors={"openai"}), log=log, transport=httpx2.MockTransport(handler)
    ) as http:
        response = await http.post(
            "https://api.anthropic.com/v1/messages", json=ANTHROPIC_IMAGE_CALL
        )
    assert up.seen == []
    return response


def test_the_async_client_answers_a_block_too(log: AuditLog) -> None:
    import anyio

    response = anyio.run(_async_block, log)
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"
    assert response.headers["x-should-retry"] == "false"
    _blocked_only(log, "destination.vendor")


def test_on_block_raise_keeps_request_blocked_and_a_bad_value_is_refused(log: AuditLog) -> None:
    up = Upstream()
    http = veilpix.http_client(
        policy=Policy(allowed_vendors={"openai"}),
        log=log,
        transport=httpx2.MockTransport(up.handler2),
        on_block="raise",
    )
    with pytest.raises(veilpix.RequestBlocked) as caught:
        http.post("https://api.anthropic.com/v1/messages", json=ANTHROPIC_IMAGE_CALL)
    assert caught.value.receipt is not None and caught.value.receipt.blocked == "destination.vendor"
    assert caught.value.receipt.images == ()  # nothing was sent
    with pytest.raises(veilpix.ConfigError, match="on_block"):
        veilpix.http_client(log=log, on_block="ignore")  # type: ignore[arg-type]


def test_an_install_hint_stays_on_the_server(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the hint for a missing extra names where veilpix is installed: the caller gets the rule
    # and the reason, the operator's log keeps the command
    from veilpix._errors import RequestBlocked
    from veilpix.guard import refusal

    exc = RequestBlocked(
        "an image in the request could not be sanitized: HEIC/HEIF support is not installed",
        rule="image.unsanitizable",
        hint="pip install -e '/srv/secret-project/veilpix[heif]'",
        record_id="r1",
    )
    answer = refusal(exc, "openai")
    text = str(answer.body)
    assert "secret-project" not in text and "pip install" not in text
    assert "HEIC/HEIF support is not installed" in text and "is missing where it runs" in text
    plain = RequestBlocked("x", rule="destination.vendor", hint="add it to allowed_vendors")
    assert "add it to allowed_vendors" in str(refusal(plain, "openai").body)
