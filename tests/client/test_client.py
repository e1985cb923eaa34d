"""veilpix.Client and AsyncClient against fake vendors: the exact request each vendor gets
(paths, auth headers, body fields), images in it clean, polling, result parsing (base64 and
URL results), error mapping, retries and the async twin. Every vendor is a MockTransport;
result downloads go through a second MockTransport, so nothing touches the network."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

import factories
import veilpix
from veilpix import (
    AsyncClient,
    AuditLog,
    Client,
    ConfigError,
    Policy,
    RequestBlocked,
    UnsupportedImage,
    VendorAuthError,
    VendorBadRequest,
    VendorError,
    VendorJobFailed,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from veilpix.formats._provenance import detect_provenance
from wire import Captured, data_uri_bytes, form_parts, json_body

PHOTO = factories.jpeg()  # GPS, serials, owner, XMP, IPTC, C2PA: everything to strip
SECRET = factories.SECRET.encode()
# What vendors send back: a PNG with a C2PA manifest (caBX), and a plain JPEG.
OUT_PNG = factories.png(text=False, exif=False, xmp_gps=False, time=False, private=False)
OUT_JPEG = factories.encode(factories.picture((32, 32)), "JPEG")
OUT_B64 = base64.b64encode(OUT_PNG).decode()
KEYS = {
    "openai": "sk-test-openai-0123456789",
    "gemini": "AIza-test-gemini-0123456789",
    "anthropic": "sk-ant-test-0123456789",
    "stability": "sk-test-stability-0123456789",
    "bfl": "bfl-test-0123456789",
    "replicate": "r8_test0123456789",
    "fal": "fal-test-id:fal-test-secret",
}


# -- fakes ---------------------------------------------------------------------------------------


Answer = dict[str, Any] | tuple[int, Any] | tuple[int, Any, dict[str, str]] | Callable[..., Any]


@dataclass
class Fake:
    """A fake vendor (or CDN): answers (METHOD, host+path) from queues and records every
    request. The last answer of a queue repeats."""

    routes: dict[tuple[str, str], list[Answer]] = field(default_factory=dict)
    seen: list[Captured] = field(default_factory=list)

    def on(self, method: str, url: str, *answers: Answer) -> Fake:
        self.routes.setdefault((method, url), []).extend(answers)
        return self

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        self.seen.append(Captured(request.method, str(request.url), dict(request.headers), body))
        key = (request.method, f"{request.url.host}{request.url.path}")
        queue = self.routes.get(key)
        if not queue:
            return httpx2.Response(404, json={"error": {"message": f"no route for {key}"}})
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if callable(answer):
            answer = answer(request)
            if isinstance(answer, httpx2.Response):
                return answer
        if isinstance(answer, dict):
            answer = (200, answer)
        status, payload, *rest = answer
        headers = {"x-request-id": f"req_{len(self.seen)}", **(rest[0] if rest else {})}
        if isinstance(payload, bytes):
            return httpx2.Response(status, content=payload, headers=headers)
        return httpx2.Response(status, json=payload, headers=headers)

    @property
    def last(self) -> Captured:
        return self.seen[-1]

    def to(self, host: str) -> list[Captured]:
        return [c for c in self.seen if httpx2.URL(c.url).host == host]


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    with AuditLog(tmp_path / "audit.db") as opened:
        yield opened


class Harness:
    def __init__(self, log: AuditLog, policy: Policy | None = None, **kwargs: Any) -> None:
        self.api = Fake()
        self.cdn = Fake()
        self.sleeps: list[float] = []
        kwargs.setdefault("api_keys", KEYS)
        self.client = Client(
            policy or Policy(),
            log,
            transport=httpx2.MockTransport(self.api),
            download_transport=httpx2.MockTransport(self.cdn),
            sleep=self.sleeps.append,
            **kwargs,
        )

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def records(log: AuditLog) -> list[dict[str, Any]]:
    return [r.to_dict() for r in log.records()]


# -- OpenAI ----------------------------------------------------------------------------------


def test_openai_generate(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on(
            "POST",
            "api.openai.com/v1/images/generations",
            {"created": 1, "data": [{"b64_json": OUT_B64}], "output_format": "png"},
        )
        result = h.client.generate(
            "openai/gpt-image-2", "a red fox", size="1024x1024", quality="high"
        )
    got = h.api.last
    assert got.headers["authorization"] == f"Bearer {KEYS['openai']}"
    assert got.headers["content-type"] == "application/json"
    assert json_body(got) == {
        "model": "gpt-image-2",
        "prompt": "a red fox",
        "size": "1024x1024",
        "quality": "high",
    }
    (image,) = result.images
    assert image.data == OUT_PNG  # the vendor's bytes, untouched
    assert image.media_type == "image/png" and image.provenance == ["c2pa"]
    assert result.provenance == ["c2pa"] and result.removed == {}
    (rec,) = records(log)
    assert result.record_ids == [rec["id"]] == [result.record_id]
    assert rec["where"]["model"] == "gpt-image-2" and rec["who"]["door"] == "sdk"
    assert rec["what"]["prompt"]["length"] == len("a red fox")
    assert (result.vendor, result.model, result.operation) == ("openai", "gpt-image-2", "generate")


def test_openai_edit_sends_clean_images_and_mask(log: AuditLog, assert_clean: Any) -> None:
    from PIL import Image

    turned = factories.jpeg(orientation=6)
    mask = factories.png(im=factories.picture((64, 48), "RGBA"))
    with Harness(log) as h:
        h.api.on("POST", "api.openai.com/v1/images/edits", {"data": [{"b64_json": OUT_B64}]})
        result = h.client.edit(
            "openai/gpt-image-2",
            "give them hats",
            [turned, PHOTO],
            mask=mask,
            input_fidelity="high",
            n=2,
        )
    parts = form_parts(h.api.last)
    names = [p[0] for p in parts]
    assert names == ["model", "prompt", "n", "input_fidelity", "image[]", "image[]", "mask"]
    fields = {p[0]: p[3] for p in parts[:4]}
    assert fields == {
        "model": b"gpt-image-2",
        "prompt": b"give them hats",
        "n": b"2",
        "input_fidelity": b"high",
    }
    for name, filename, ctype, data in parts[4:6]:
        assert filename and ctype == "image/jpeg" and SECRET not in data
        assert_clean(data, f"{name.strip('[]')}-{filename}")
    first = Image.open(io.BytesIO(parts[4][3]))
    clean_mask = Image.open(io.BytesIO(parts[6][3]))
    assert parts[6][2] == "image/png" and clean_mask.size == first.size == (64, 48)
    assert result.removed["gps"] >= 2 and result.removed["serial"] >= 2
    assert result.images[0].data == OUT_PNG


def test_openai_single_image_is_sent_as_image(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on("POST", "api.openai.com/v1/images/edits", {"data": [{"b64_json": OUT_B64}]})
        h.client.edit("openai/gpt-image-2", "x", PHOTO)
    assert [p[0] for p in form_parts(h.api.last)] == ["model", "prompt", "image"]


def test_openai_describe_uses_responses(log: AuditLog, assert_clean: Any) -> None:
    answer = {
        "id": "resp_1",
        "status": "completed",
        "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "A fox."}]},
        ],
    }
    with Harness(log) as h:
        h.api.on("POST", "api.openai.com/v1/responses", answer)
        result = h.client.describe("openai/gpt-5", PHOTO, "What is it?", max_output_tokens=50)
    sent = json_body(h.api.last)
    assert sent["model"] == "gpt-5" and sent["max_output_tokens"] == 50
    assert sent["store"] is False  # the guard's privacy control
    text, image = sent["input"][0]["content"]
    assert text == {"type": "input_text", "text": "What is it?"}
    media, data = data_uri_bytes(image["image_url"])
    assert image["type"] == "input_image" and media == "image/jpeg"
    assert_clean(data, "describe.jpg")
    assert result.text == "A fox." and result.images == [] and result.request_id == "resp_1"


# -- Gemini ----------------------------------------------------------------------------------

GEMINI = "generativelanguage.googleapis.com/v1beta/models"


def _gemini_answer(*parts: dict[str, Any], finish: str = "STOP") -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": list(parts)}, "finishReason": finish}
        ],
        "responseId": "g-1",
    }


def test_gemini_generate(log: AuditLog) -> None:
    answer = _gemini_answer(
        {"text": "draft", "thought": True},
        {"inlineData": {"mimeType": "image/png", "data": b64(OUT_JPEG)}, "thought": True},
        {"text": "Here is your fox."},
        {"inlineData": {"mimeType": "image/png", "data": OUT_B64}},
    )
    with Harness(log) as h:
        h.api.on("POST", f"{GEMINI}/gemini-3-pro-image:generateContent", answer)
        result = h.client.generate("gemini/gemini-3-pro-image", "a fox", size="1920x1080")
    got = h.api.last
    assert got.headers["x-goog-api-key"] == KEYS["gemini"] and "authorization" not in got.headers
    assert json_body(got) == {
        "contents": [{"role": "user", "parts": [{"text": "a fox"}]}],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "16:9"},
        },
    }
    (image,) = result.images  # the thought image is skipped
    assert image.data == OUT_PNG and result.text == "Here is your fox."
    assert image.invisible_watermark and "SynthID" in image.invisible_watermark
    assert result.finish_reason == "STOP"


def test_gemini_edit_sends_clean_inline_data(log: AuditLog, assert_clean: Any) -> None:
    with Harness(log) as h:
        h.api.on(
            "POST",
            f"{GEMINI}/gemini-2.5-flash-image:generateContent",
            _gemini_answer({"inlineData": {"mimeType": "image/png", "data": OUT_B64}}),
        )
        h.client.edit(
            "gemini/gemini-2.5-flash-image",
            "make it night",
            PHOTO,
            size="2K",
            generationConfig={"temperature": 0.5},
        )
    sent = json_body(h.api.last)
    text, inline = sent["contents"][0]["parts"]
    assert text == {"text": "make it night"} and inline["inlineData"]["mimeType"] == "image/jpeg"
    assert_clean(base64.b64decode(inline["inlineData"]["data"]), "gemini.jpg")
    assert sent["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"imageSize": "2K"},
        "temperature": 0.5,
    }


def test_gemini_describe(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on(
            "POST",
            f"{GEMINI}/gemini-2.5-flash:generateContent",
            _gemini_answer({"text": "A fox "}, {"text": "in snow."}),
        )
        result = h.client.describe("gemini/gemini-2.5-flash", PHOTO)
    parts = json_body(h.api.last)["contents"][0]["parts"]
    assert "inlineData" in parts[0] and parts[1] == {"text": "Describe this image."}
    assert "generationConfig" not in json_body(h.api.last)
    assert result.text == "A fox in snow."


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}, "PROHIBITED_CONTENT"),
        (
            _gemini_answer(finish="IMAGE_SAFETY")
            | {
                "candidates": [
                    {
                        "finishReason": "IMAGE_SAFETY",
                        "finishMessage": "Unable to show the generated image.",
                    }
                ]
            },
            "IMAGE_SAFETY",
        ),
    ],
)
def test_gemini_safety_blocks_are_bad_requests(answer: Any, code: str, log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on("POST", f"{GEMINI}/gemini-3-pro-image:generateContent", answer)
        with pytest.raises(VendorBadRequest) as info:
            h.client.generate("gemini/gemini-3-pro-image", "x")
    assert info.value.code == code and info.value.vendor == "gemini"


def test_a_text_only_answer_has_no_image(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on(
            "POST",
            f"{GEMINI}/gemini-3-pro-image:generateContent",
            _gemini_answer({"text": "Which fox do you mean?"}),
        )
        result = h.client.generate("gemini/gemini-3-pro-image", "x")
    assert result.images == []
    with pytest.raises(VendorError, match="Which fox"):
        _ = result.image


# -- Anthropic -------------------------------------------------------------------------------


def test_anthropic_describe(log: AuditLog, assert_clean: Any) -> None:
    answer = {
        "id": "msg_1",
        "type": "message",
        "stop_reason": "end_turn",
        "content": [{"type": "text", "text": "Two foxes."}],
    }
    with Harness(log) as h:
        h.api.on("POST", "api.anthropic.com/v1/messages", answer)
        result = h.client.describe(
            "anthropic/claude-opus-4-6", [PHOTO, factories.png()], "How many?", system="Be brief."
        )
    got = h.api.last
    assert got.headers["x-api-key"] == KEYS["anthropic"]
    assert got.headers["anthropic-version"] and "authorization" not in got.headers
    sent = json_body(got)
    assert sent["model"] == "claude-opus-4-6" and sent["max_tokens"] == 1024
    assert sent["system"] == "Be brief." and "inference_geo" not in sent
    first, second, text = sent["messages"][0]["content"]
    assert text == {"type": "text", "text": "How many?"}
    for i, block in enumerate((first, second)):
        source = block["source"]
        assert block["type"] == "image" and source["type"] == "base64"
        assert source["media_type"] in ("image/jpeg", "image/png")
        assert_clean(base64.b64decode(source["data"]), f"claude{i}{source['media_type'][6:]}")
    assert result.text == "Two foxes." and result.finish_reason == "end_turn"


# -- Stability -------------------------------------------------------------------------------

STABILITY = "api.stability.ai/v2beta/stable-image"


def test_stability_generate_core(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on(
            "POST",
            f"{STABILITY}/generate/core",
            {"image": OUT_B64, "finish_reason": "SUCCESS", "seed": 42},
        )
        result = h.client.generate("stability/core", "a fox", size="16:9", output_format="png")
    got = h.api.last
    assert got.headers["authorization"] == f"Bearer {KEYS['stability']}"
    assert got.headers["accept"] == "application/json"
    parts = {p[0]: p[3] for p in form_parts(got)}
    assert parts == {"prompt": b"a fox", "aspect_ratio": b"16:9", "output_format": b"png"}
    assert result.images[0].data == OUT_PNG and result.finish_reason == "SUCCESS"


def test_stability_sd35_goes_to_sd3_with_its_model(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on(
            "POST",
            f"{STABILITY}/generate/sd3",
            {"image": OUT_B64, "finish_reason": "CONTENT_FILTERED"},
        )
        result = h.client.generate("stability/sd3.5-large", "a fox")
    assert {p[0]: p[3] for p in form_parts(h.api.last)} == {
        "model": b"sd3.5-large",
        "prompt": b"a fox",
    }
    assert result.finish_reason == "CONTENT_FILTERED"  # Stability blurred its own image


def test_stability_inpaint_with_mask(log: AuditLog, assert_clean: Any) -> None:
    mask = factories.png(im=factories.picture((64, 48), "L"), text=False, exif=False)
    with Harness(log) as h:
        h.api.on(
            "POST", f"{STABILITY}/edit/inpaint", {"image": OUT_B64, "finish_reason": "SUCCESS"}
        )
        h.client.edit("stability/inpaint", "a hat", PHOTO, mask=mask)
    parts = form_parts(h.api.last)
    assert [p[0] for p in parts] == ["prompt", "image", "mask"]
    assert_clean(parts[1][3], "st.jpg")
    assert_clean(parts[2][3], "mask.png")


def test_stability_asynchronous_upscale_is_polled(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on("POST", f"{STABILITY}/upscale/creative", {"id": "job-7"})
        h.api.on(
            "GET",
            "api.stability.ai/v2beta/results/job-7",
            (202, {"id": "job-7", "status": "in-progress"}),
            {"result": OUT_B64, "finish_reason": "SUCCESS"},
        )
        result = h.client.edit("stability/upscale-creative", "sharper", PHOTO)
    assert [c.method for c in h.api.seen] == ["POST", "GET", "GET"]
    assert h.api.last.headers["authorization"] == f"Bearer {KEYS['stability']}"
    assert h.sleeps == [1.0, 1.0] and result.images[0].data == OUT_PNG
    assert len(result.record_ids) == 3


def test_stability_content_moderation_403_is_not_an_auth_error(log: AuditLog) -> None:
    body = {
        "id": "e1",
        "name": "content_moderation",
        "errors": ["Your request was flagged by our content moderation system."],
    }
    with Harness(log) as h:
        h.api.on("POST", f"{STABILITY}/generate/ultra", (403, body))
        with pytest.raises(VendorBadRequest) as info:
            h.client.generate("stability/ultra", "x")
    assert info.value.status == 403 and info.value.code == "content_moderation"
    assert "flagged" in (info.value.vendor_message or "")


# -- Black Forest Labs -----------------------------------------------------------------------

BFL_POLL = "https://api.us1.bfl.ai/v1/get_result?id=t1"
BFL_SAMPLE = "https://delivery-us1.bfl.ai/results/t1/sample.jpeg?se=2026&sig=abc"


def test_bfl_generate_polls_and_downloads(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on("POST", "api.bfl.ai/v1/flux-2-pro", {"id": "t1", "polling_url": BFL_POLL})
        h.api.on(
            "GET",
            "api.us1.bfl.ai/v1/get_result",
            {"id": "t1", "status": "Pending"},
            {"id": "t1", "status": "Pending"},
            {"id": "t1", "status": "Ready", "result": {"sample": BFL_SAMPLE}},
        )
        h.cdn.on(
            "GET",
            "delivery-us1.bfl.ai/results/t1/sample.jpeg",
            (200, OUT_JPEG, {"content-type": "image/jpeg"}),
        )
        result = h.client.generate("bfl/flux-2-pro", "a fox", size=(1024, 768), seed=7)
    submit = h.api.seen[0]
    assert submit.headers["x-key"] == KEYS["bfl"] and "authorization" not in submit.headers
    assert json_body(submit) == {"prompt": "a fox", "width": 1024, "height": 768, "seed": 7}
    polls = h.api.seen[1:]
    assert [p.url for p in polls] == [BFL_POLL] * 3
    assert all(p.headers["x-key"] == KEYS["bfl"] for p in polls)
    assert h.sleeps == [1.0, 1.0, 1.0]
    (download,) = h.cdn.seen
    assert download.url == BFL_SAMPLE
    assert not {"x-key", "authorization", "cookie"} & set(download.headers)
    (image,) = result.images
    assert image.data == OUT_JPEG and image.url == BFL_SAMPLE and image.provenance == []
    assert result.request_id == "t1" and len(result.record_ids) == 4
    recs = records(log)
    assert [r["where"]["method"] for r in recs] == ["POST", "GET", "GET", "GET"]
    assert recs[0]["what"]["prompt"]["length"] == 5 and recs[1]["what"].get("prompt") is None


def test_bfl_edit_sends_clean_base64(log: AuditLog, assert_clean: Any) -> None:
    with Harness(log) as h:
        h.api.on("POST", "api.bfl.ai/v1/flux-kontext-pro", {"id": "t1", "polling_url": BFL_POLL})
        h.api.on(
            "GET",
            "api.us1.bfl.ai/v1/get_result",
            {"status": "Ready", "result": {"sample": BFL_SAMPLE}},
        )
        h.cdn.on("GET", "delivery-us1.bfl.ai/results/t1/sample.jpeg", (200, OUT_JPEG))
        h.client.edit("bfl/flux-kontext-pro", "a hat", [PHOTO, factories.png()])
    sent = json_body(h.api.seen[0])
    assert set(sent) == {"prompt", "input_image", "input_image_2"}
    assert_clean(base64.b64decode(sent["input_image"]), "bfl1.jpg")
    assert_clean(base64.b64decode(sent["input_image_2"]), "bfl2.png")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        ("Request Moderated", VendorBadRequest),
        ("Content Moderated", VendorBadRequest),
        ("Error", VendorJobFailed),
    ],
)
def test_bfl_job_failures(status: str, error: type[VendorError], log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on("POST", "api.bfl.ai/v1/flux-2-pro", {"id": "t1", "polling_url": BFL_POLL})
        h.api.on(
            "GET", "api.us1.bfl.ai/v1/get_result", {"status": status, "details": {"reason": "nope"}}
        )
        with pytest.raises(error) as info:
            h.client.generate("bfl/flux-2-pro", "x")
    assert info.value.code == status and info.value.request_id == "t1"


def test_bfl_polling_gives_up_after_poll_timeout(log: AuditLog) -> None:
    with Harness(log, poll_timeout=3.5) as h:
        h.api.on("POST", "api.bfl.ai/v1/flux-2-pro", {"id": "t1", "polling_url": BFL_POLL})
        h.api.on("GET", "api.us1.bfl.ai/v1/get_result", {"status": "Pending"})
        with pytest.raises(VendorTimeout) as info:
            h.client.generate("bfl/flux-2-pro", "x")
    assert h.sleeps == [1.0, 1.0, 1.0] and info.value.request_id == "t1"


def test_a_polling_url_on_another_host_gets_no_key(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on(
            "POST",
            "api.bfl.ai/v1/flux-2-pro",
            {"id": "t1", "polling_url": "https://api.openai.com/v1/get_result?id=t1"},
        )
        with pytest.raises(VendorError, match="not its own"):
            h.client.generate("bfl/flux-2-pro", "x")
    assert h.api.to("api.openai.com") == []


# -- Replicate -------------------------------------------------------------------------------

PRED = "https://api.replicate.com/v1/predictions/p1"
OUT_URL = "https://replicate.delivery/xezq/abc/output.png"


def test_replicate_prediction_polls_until_succeeded(log: AuditLog, assert_clean: Any) -> None:
    start = {"id": "p1", "status": "starting", "urls": {"get": PRED, "cancel": f"{PRED}/cancel"}}
    with Harness(log) as h:
        h.api.on(
            "POST",
            "api.replicate.com/v1/models/black-forest-labs/flux-kontext-pro/predictions",
            (201, start),
        )
        h.api.on(
            "GET",
            "api.replicate.com/v1/predictions/p1",
            start | {"status": "processing"},
            start | {"status": "succeeded", "output": OUT_URL},
        )
        h.cdn.on("GET", "replicate.delivery/xezq/abc/output.png", (200, OUT_PNG))
        result = h.client.edit(
            "replicate/black-forest-labs/flux-kontext-pro",
            "a hat",
            PHOTO,
            aspect_ratio="match_input_image",
        )
    submit = h.api.seen[0]
    assert submit.headers["authorization"] == f"Bearer {KEYS['replicate']}"
    assert submit.headers["prefer"] == "wait"
    sent = json_body(submit)
    assert set(sent) == {"input"}
    assert sent["input"]["prompt"] == "a hat"
    assert sent["input"]["aspect_ratio"] == "match_input_image"
    media, data = data_uri_bytes(sent["input"]["input_image"])
    assert media == "image/jpeg"
    assert_clean(data, "replicate.jpg")
    assert [c.url for c in h.api.seen[1:]] == [PRED, PRED]
    assert result.images[0].data == OUT_PNG and result.images[0].provenance == ["c2pa"]
    assert result.request_id == "p1" and result.finish_reason == "succeeded"


def test_replicate_version_and_list_outputs(log: AuditLog) -> None:
    done = {
        "id": "p2",
        "status": "succeeded",
        "output": [f"data:image/png;base64,{OUT_B64}", OUT_URL],
    }
    with Harness(log) as h:
        h.api.on("POST", "api.replicate.com/v1/predictions", (201, done))
        h.cdn.on("GET", "replicate.delivery/xezq/abc/output.png", (200, OUT_JPEG))
        result = h.client.generate(
            "replicate/acme/painter:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
            "a fox",
            n=2,
        )
    sent = json_body(h.api.seen[0])
    assert sent["version"].startswith("5c7d5dc6") and sent["input"] == {
        "prompt": "a fox",
        "num_outputs": 2,
    }
    assert [i.data for i in result.images] == [OUT_PNG, OUT_JPEG]
    assert h.sleeps == []  # finished within Prefer: wait


def test_replicate_failed_prediction(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on(
            "POST",
            "api.replicate.com/v1/models/acme/painter/predictions",
            (201, {"id": "p3", "status": "failed", "error": "NSFW content detected"}),
        )
        with pytest.raises(VendorJobFailed, match="NSFW content detected") as info:
            h.client.generate("replicate/acme/painter", "x")
    assert info.value.request_id == "p3"


def test_replicate_unknown_multi_image_input_needs_a_name(log: AuditLog) -> None:
    with Harness(log) as h, pytest.raises(ConfigError, match="image_field"):
        h.client.edit("replicate/acme/painter", "x", [PHOTO, PHOTO])
    assert h.api.seen == []


# -- fal -------------------------------------------------------------------------------------

FAL_Q = "queue.fal.run/fal-ai/flux-pro/requests/r1"


def test_fal_queue_submit_poll_result(log: AuditLog, assert_clean: Any) -> None:
    submitted = {
        "request_id": "r1",
        "status": "IN_QUEUE",
        "queue_position": 0,
        "status_url": f"https://{FAL_Q}/status",
        "response_url": f"https://{FAL_Q}",
        "cancel_url": f"https://{FAL_Q}/cancel",
    }
    out = {
        "images": [
            {
                "url": "https://v3.fal.media/files/fox.png",
                "content_type": "image/png",
                "width": 64,
                "height": 48,
            }
        ],
        "has_nsfw_concepts": [False],
    }
    with Harness(log) as h:
        h.api.on("POST", "queue.fal.run/fal-ai/flux-pro/kontext", submitted)
        h.api.on(
            "GET",
            f"{FAL_Q}/status",
            {"status": "IN_QUEUE", "queue_position": 1},
            {"status": "IN_PROGRESS"},
            {"status": "COMPLETED"},
        )
        h.api.on("GET", FAL_Q, out)
        h.cdn.on("GET", "v3.fal.media/files/fox.png", (200, OUT_PNG))
        result = h.client.edit("fal/fal-ai/flux-pro/kontext", "a hat", PHOTO, guidance_scale=3.5)
    submit = h.api.seen[0]
    assert submit.headers["authorization"] == f"Key {KEYS['fal']}"
    assert submit.headers["x-fal-store-io"] == "0"  # the guard's privacy controls
    assert "expiration_duration_seconds" in submit.headers["x-fal-object-lifecycle-preference"]
    sent = json_body(submit)
    assert sent["prompt"] == "a hat" and sent["guidance_scale"] == 3.5
    assert_clean(data_uri_bytes(sent["image_url"])[1], "fal.jpg")
    assert [c.url for c in h.api.seen[1:]] == [f"https://{FAL_Q}/status"] * 3 + [f"https://{FAL_Q}"]
    assert result.images[0].data == OUT_PNG and result.request_id == "r1"
    assert h.sleeps == [1.0, 1.0, 1.0]


def test_fal_without_urls_builds_them_from_the_app_and_reads_data_uris(log: AuditLog) -> None:
    base = "queue.fal.run/fal-ai/flux/requests/r2"
    with Harness(log) as h:
        h.api.on("POST", "queue.fal.run/fal-ai/flux/dev", {"request_id": "r2"})
        h.api.on("GET", f"{base}/status", {"status": "COMPLETED"})
        h.api.on("GET", base, {"images": [{"url": f"data:image/png;base64,{OUT_B64}"}]})
        result = h.client.generate(
            "fal/fal-ai/flux/dev", "a fox", size="square_hd", n=2, sync_mode=True
        )
    assert json_body(h.api.seen[0]) == {
        "prompt": "a fox",
        "image_size": "square_hd",
        "num_images": 2,
        "sync_mode": True,
    }
    assert result.images[0].data == OUT_PNG and h.cdn.seen == []


def test_fal_failed_request(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on("POST", "queue.fal.run/fal-ai/flux/dev", {"request_id": "r3"})
        h.api.on(
            "GET",
            "queue.fal.run/fal-ai/flux/requests/r3/status",
            {"status": "COMPLETED", "error": "Out of memory", "error_type": "runner"},
        )
        with pytest.raises(VendorJobFailed, match="Out of memory"):
            h.client.generate("fal/fal-ai/flux/dev", "x")


def test_fal_timeout_cancels_the_request(log: AuditLog) -> None:
    with Harness(log, poll_timeout=1.5) as h:
        h.api.on("POST", "queue.fal.run/fal-ai/flux/dev", {"request_id": "r4"})
        h.api.on("GET", "queue.fal.run/fal-ai/flux/requests/r4/status", {"status": "IN_QUEUE"})
        h.api.on("PUT", "queue.fal.run/fal-ai/flux/requests/r4/cancel", (400, {"detail": "late"}))
        with pytest.raises(VendorTimeout):
            h.client.generate("fal/fal-ai/flux/dev", "x")
    assert h.api.last.method == "PUT"  # best effort: its error does not hide the timeout


# -- errors and retries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "route", "status", "body", "error", "message", "code"),
    [
        (
            "openai/gpt-image-2",
            "api.openai.com/v1/images/generations",
            401,
            {
                "error": {
                    "message": "Incorrect API key provided",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            VendorAuthError,
            "Incorrect API key provided",
            "invalid_api_key",
        ),
        (
            "openai/gpt-image-2",
            "api.openai.com/v1/images/generations",
            400,
            {
                "error": {
                    "message": "Your request was rejected by the safety system.",
                    "code": "moderation_blocked",
                }
            },
            VendorBadRequest,
            "rejected by the safety",
            "moderation_blocked",
        ),
        (
            "gemini/gemini-3-pro-image",
            f"{GEMINI}/gemini-3-pro-image:generateContent",
            400,
            {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}},
            VendorBadRequest,
            "API key not valid.",
            "INVALID_ARGUMENT",
        ),
        (
            "bfl/flux-2-pro",
            "api.bfl.ai/v1/flux-2-pro",
            422,
            {"detail": [{"loc": ["body", "width"], "msg": "must be a multiple of 16"}]},
            VendorBadRequest,
            "width: must be a multiple of 16",
            None,
        ),
        (
            "replicate/acme/painter",
            "api.replicate.com/v1/models/acme/painter/predictions",
            404,
            {
                "title": "Not found",
                "detail": "The requested resource could not be found.",
                "status": 404,
            },
            VendorBadRequest,
            "Not found: The requested resource",
            None,
        ),
        (
            "fal/fal-ai/flux/dev",
            "queue.fal.run/fal-ai/flux/dev",
            403,
            {"detail": "Forbidden: invalid key"},
            VendorAuthError,
            "Forbidden: invalid key",
            None,
        ),
        (
            "stability/core",
            f"{STABILITY}/generate/core",
            500,
            {"name": "internal_error", "errors": ["An unexpected server error occurred"]},
            VendorUnavailable,
            "unexpected server error",
            "internal_error",
        ),
        (
            "openai/gpt-image-2",
            "api.openai.com/v1/images/generations",
            402,
            b"<html>payment</html>",
            VendorError,
            None,
            None,
        ),
    ],
)
def test_vendor_errors_carry_the_vendors_message(
    model: str,
    route: str,
    status: int,
    body: Any,
    error: type[VendorError],
    message: str | None,
    code: str | None,
    log: AuditLog,
) -> None:
    with Harness(log, max_retries=0) as h:
        h.api.on("POST", route, (status, body))
        with pytest.raises(VendorError) as info:
            h.client.generate(model, "x")
    err = info.value
    assert type(err) is error and err.status == status and err.vendor == model.partition("/")[0]
    if message is None:
        assert err.vendor_message is None
    else:
        assert message in (err.vendor_message or "") and message in str(err)
    assert err.code == code and err.request_id == "req_1"


def test_anthropic_overloaded_is_unavailable(log: AuditLog) -> None:
    with Harness(log, max_retries=0) as h:
        h.api.on(
            "POST",
            "api.anthropic.com/v1/messages",
            (
                529,
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            ),
        )
        with pytest.raises(VendorUnavailable, match="Overloaded") as info:
            h.client.describe("anthropic/claude-opus-4-6", PHOTO)
    assert info.value.code == "overloaded_error"


def test_429_is_retried_after_retry_after(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on(
            "POST",
            "api.openai.com/v1/images/generations",
            (429, {"error": {"message": "Rate limit reached"}}, {"retry-after": "7"}),
            {"data": [{"b64_json": OUT_B64}]},
        )
        result = h.client.generate("openai/gpt-image-2", "x")
    assert h.sleeps == [7.0] and len(h.api.seen) == 2
    assert len(result.record_ids) == 2  # each attempt is a transfer, and recorded
    assert [r["status"] for r in records(log)] == [429, 200]


def test_429_retries_run_out(log: AuditLog) -> None:
    with Harness(log, max_retries=2) as h:
        h.api.on(
            "POST",
            "api.openai.com/v1/images/generations",
            (429, {"error": {"message": "slow down"}}, {"retry-after-ms": "1500"}),
        )
        with pytest.raises(VendorRateLimited, match="slow down") as info:
            h.client.generate("openai/gpt-image-2", "x")
    assert info.value.retry_after == 1.5 and h.sleeps == [1.5, 1.5] and len(h.api.seen) == 3


def test_a_long_retry_after_is_not_waited_for(log: AuditLog) -> None:
    with Harness(log) as h:
        h.api.on(
            "POST",
            "api.openai.com/v1/images/generations",
            (429, {"error": {"message": "quota"}}, {"retry-after": "3600"}),
        )
        with pytest.raises(VendorRateLimited) as info:
            h.client.generate("openai/gpt-image-2", "x")
    assert info.value.retry_after == 3600 and h.sleeps == [] and len(h.api.seen) == 1


def test_5xx_and_connection_errors_are_retried_4xx_are_not(log: AuditLog) -> None:
    def drop(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    with Harness(log) as h:
        h.api.on(
            "POST",
            "api.openai.com/v1/images/generations",
            drop,
            (503, {"error": {"message": "busy"}}),
            {"data": [{"b64_json": OUT_B64}]},
        )
        h.client.generate("openai/gpt-image-2", "x")
        assert len(h.api.seen) == 3 and len(h.sleeps) == 2
        assert 0 < h.sleeps[0] <= 0.5 and 0 < h.sleeps[1] <= 1.0  # exponential backoff
        h.api.on("POST", "api.openai.com/v1/images/edits", (400, {"error": {"message": "bad"}}))
        with pytest.raises(VendorBadRequest):
            h.client.edit("openai/gpt-image-2", "x", PHOTO)
    assert len(h.api.seen) == 4 and len(h.sleeps) == 2


def test_timeouts_become_vendor_unavailable(log: AuditLog) -> None:
    def slow(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    with Harness(log, max_retries=1) as h:
        h.api.on("POST", "api.openai.com/v1/images/generations", slow)
        with pytest.raises(VendorUnavailable, match="timed out") as info:
            h.client.generate("openai/gpt-image-2", "x")
    assert isinstance(info.value.__cause__, httpx2.ReadTimeout) and len(h.api.seen) == 2


def test_a_blocked_request_propagates_without_retry(log: AuditLog) -> None:
    with Harness(log, Policy(allowed_vendors=frozenset({"anthropic"}))) as h:
        with pytest.raises(RequestBlocked) as info:
            h.client.edit("openai/gpt-image-2", "x", PHOTO)
        assert info.value.rule == "destination.vendor"
    assert h.api.seen == [] and h.sleeps == []
    (rec,) = records(log)
    assert rec["outcome"] == "blocked" and rec["id"] == info.value.record_id


def test_an_unsanitizable_image_is_refused_before_sending(log: AuditLog) -> None:
    with Harness(log) as h:
        with pytest.raises(UnsupportedImage):
            h.client.edit("openai/gpt-image-2", "x", b"%PDF-1.7 not an image")
        with pytest.raises(RequestBlocked) as info:
            h.client.edit("openai/gpt-image-2", "x", b"\xff\xd8\xff\xe0" + b"\x00" * 40 + b"junk")
    assert info.value.rule.startswith("image.") and h.api.seen == []


# -- configuration ---------------------------------------------------------------------------


def test_keys_come_from_the_environment(log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-0123456789")
    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.setenv("FAL_KEY_ID", "kid")
    monkeypatch.setenv("FAL_KEY_SECRET", "ksecret")
    with Harness(log, api_keys={}) as h:
        h.api.on("POST", "api.openai.com/v1/images/generations", {"data": [{"b64_json": OUT_B64}]})
        h.api.on("POST", "fal.run/fal-ai/flux/schnell", {"images": [{"url": OUT_URL}]})
        h.cdn.on("GET", "replicate.delivery/xezq/abc/output.png", (200, OUT_PNG))
        h.client.generate("openai/gpt-image-2", "x")
        assert h.api.last.headers["authorization"] == "Bearer sk-from-env-0123456789"
    with Harness(log, api_keys={}, base_urls={"fal": "https://fal.run"}) as h:
        h.api.on("POST", "fal.run/fal-ai/flux/schnell", {"images": [{"url": OUT_URL}]})
        h.cdn.on("GET", "replicate.delivery/xezq/abc/output.png", (200, OUT_PNG))
        result = h.client.generate("fal/fal-ai/flux/schnell", "x")  # synchronous fal.run
        assert h.api.last.headers["authorization"] == "Key kid:ksecret"
        assert result.images[0].data == OUT_PNG


@pytest.mark.parametrize(
    ("model", "env"),
    [
        ("bfl/flux-2-pro", "BFL_API_KEY"),
        ("gemini/gemini-3-pro-image", "GEMINI_API_KEY"),
        ("replicate/a/b", "REPLICATE_API_TOKEN"),
        ("stability/core", "STABILITY_API_KEY"),
    ],
)
def test_a_missing_key_names_the_variable(
    model: str, env: str, log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "BFL_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "REPLICATE_API_TOKEN",
        "STABILITY_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    with Harness(log, api_keys={}) as h, pytest.raises(ConfigError, match=env):
        h.client.generate(model, "x")
    assert h.api.seen == []


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: c.generate("midjourney/v7", "x"), "no vendor 'midjourney'"),
        (lambda c: c.generate("anthropic/claude-opus-4-6", "x"), "does not support generate"),
        (lambda c: c.describe("bfl/flux-2-pro", PHOTO), "does not support describe"),
        (lambda c: c.generate("gpt-image-2", "x"), "does not name its vendor"),
        (lambda c: c.edit("openai/gpt-image-2", "x", []), "empty"),
        (lambda c: c.edit("openai/gpt-image-2", "x", 42), "must be bytes"),
        (lambda c: c.edit("openai/gpt-image-2", "x", "/no/such/file.jpg"), "cannot read"),
        (lambda c: c.generate("gemini/gemini-3-pro-image", "x", size="7x5"), "aspect ratio"),
        (lambda c: c.generate("bfl/flux-2-pro", "x", n=2), "one image per call"),
        (lambda c: c.edit("gemini/gemini-3-pro-image", "x", PHOTO, mask=PHOTO), "no mask"),
        (lambda c: c.generate("stability/dreamstudio", "x"), "no generate model"),
    ],
)
def test_configuration_errors(call: Callable[[Client], Any], match: str, log: AuditLog) -> None:
    with Harness(log) as h:
        with pytest.raises(ConfigError, match=match) as info:
            call(h.client)
        assert h.api.seen == []
    if "vendor" in match or "support" in match:
        assert "openai" in info.value.hint  # the supported list


def test_base_url_to_a_loopback_gateway(log: AuditLog) -> None:
    policy = Policy(vendor_hosts={"127.0.0.1": "bfl"})
    poll = "http://127.0.0.1:8790/v1/get_result?id=t9"
    with Harness(log, policy, base_urls={"bfl": "http://127.0.0.1:8790/"}) as h:
        h.api.on("POST", "127.0.0.1/v1/flux-2-pro", {"id": "t9", "polling_url": poll})
        h.api.on(
            "GET",
            "127.0.0.1/v1/get_result",
            {"status": "Ready", "result": {"sample": "http://127.0.0.1:8790/out.png"}},
        )
        h.cdn.on("GET", "127.0.0.1/out.png", (200, OUT_PNG))
        result = h.client.generate("bfl/flux-2-pro", "x")
    assert h.api.seen[0].url == "http://127.0.0.1:8790/v1/flux-2-pro"
    assert result.images[0].data == OUT_PNG
    assert records(log)[0]["where"]["vendor"] == "bfl"


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example.com/x.png",
        "https://10.0.0.5/x.png",
        "https://169.254.169.254/latest",
        "http://127.0.0.1:9/x.png",
        "file:///etc/passwd",
    ],
)
def test_result_urls_are_downloaded_only_over_https_from_public_hosts(
    url: str, log: AuditLog
) -> None:
    with Harness(log) as h:
        h.api.on("POST", "api.bfl.ai/v1/flux-2-pro", {"id": "t1", "polling_url": BFL_POLL})
        h.api.on(
            "GET", "api.us1.bfl.ai/v1/get_result", {"status": "Ready", "result": {"sample": url}}
        )
        with pytest.raises(VendorError, match="will not download"):
            h.client.generate("bfl/flux-2-pro", "x")
    assert h.cdn.seen == []


def test_downloads_are_capped_checked_and_follow_https_redirects(log: AuditLog) -> None:
    with Harness(log, max_download_bytes=len(OUT_PNG) + 10) as h:
        h.api.on("POST", "api.bfl.ai/v1/flux-2-pro", {"id": "t1", "polling_url": BFL_POLL})
        h.api.on(
            "GET",
            "api.us1.bfl.ai/v1/get_result",
            {"status": "Ready", "result": {"sample": BFL_SAMPLE}},
        )
        h.cdn.on(
            "GET",
            "delivery-us1.bfl.ai/results/t1/sample.jpeg",
            (302, b"", {"location": "https://cdn2.bfl.ai/final.png"}),
        )
        h.cdn.on("GET", "cdn2.bfl.ai/final.png", (200, OUT_PNG))
        assert h.client.generate("bfl/flux-2-pro", "x").images[0].data == OUT_PNG
        h.cdn.routes[("GET", "cdn2.bfl.ai/final.png")] = [(200, OUT_PNG + b"\0" * 100)]
        with pytest.raises(VendorError, match="over"):
            h.client.generate("bfl/flux-2-pro", "x")
        h.cdn.routes[("GET", "cdn2.bfl.ai/final.png")] = [
            (200, b"<html>expired</html>", {"content-type": "text/html"})
        ]
        with pytest.raises(VendorError, match="did not return an image"):
            h.client.generate("bfl/flux-2-pro", "x")
        h.cdn.routes[("GET", "cdn2.bfl.ai/final.png")] = [(403, b"expired")]
        with pytest.raises(VendorError, match="HTTP 403"):
            h.client.generate("bfl/flux-2-pro", "x")


# -- async -----------------------------------------------------------------------------------


def test_async_client(log: AuditLog, assert_clean: Any) -> None:
    api, cdn = Fake(), Fake()
    api.on("POST", "api.openai.com/v1/images/edits", {"data": [{"b64_json": OUT_B64}]})
    api.on("POST", "api.bfl.ai/v1/flux-2-pro", {"id": "t1", "polling_url": BFL_POLL})
    api.on(
        "GET",
        "api.us1.bfl.ai/v1/get_result",
        {"status": "Pending"},
        {"status": "Ready", "result": {"sample": BFL_SAMPLE}},
    )
    api.on("POST", "api.anthropic.com/v1/messages", {"content": [{"type": "text", "text": "ok"}]})
    cdn.on("GET", "delivery-us1.bfl.ai/results/t1/sample.jpeg", (200, OUT_JPEG))
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def run() -> tuple[veilpix.Result, veilpix.Result, veilpix.Result]:
        async with AsyncClient(
            Policy(),
            log,
            api_keys=KEYS,
            sleep=sleep,
            transport=httpx2.MockTransport(api),
            download_transport=httpx2.MockTransport(cdn),
        ) as client:
            return (
                await client.edit("openai/gpt-image-2", "x", PHOTO),
                await client.generate("bfl/flux-2-pro", "x"),
                await client.describe("anthropic/claude-opus-4-6", PHOTO),
            )

    edited, generated, described = asyncio.run(run())
    ((_, filename, _, data),) = [p for p in form_parts(api.seen[0]) if p[0] == "image"]
    assert_clean(data, filename or "async.jpg")
    assert edited.images[0].data == OUT_PNG and edited.removed["gps"] >= 1
    assert generated.images[0].data == OUT_JPEG and sleeps == [1.0, 1.0]
    assert described.text == "ok" and len(records(log)) == 5


def test_async_errors_and_retries(log: AuditLog) -> None:
    api = Fake().on(
        "POST",
        "api.openai.com/v1/images/generations",
        (429, {"error": {"message": "wait"}}, {"retry-after": "2"}),
        (401, {"error": {"message": "bad key"}}),
    )
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def run() -> None:
        async with AsyncClient(
            Policy(), log, api_keys=KEYS, sleep=sleep, transport=httpx2.MockTransport(api)
        ) as client:
            await client.generate("openai/gpt-image-2", "x")

    with pytest.raises(VendorAuthError, match="bad key"):
        asyncio.run(run())
    assert sleeps == [2.0] and len(api.seen) == 2

    async def blocked() -> None:
        async with AsyncClient(
            Policy(allowed_countries=frozenset({"DE"})),
            log,
            api_keys=KEYS,
            sleep=sleep,
            transport=httpx2.MockTransport(api),
        ) as client:
            await client.edit("openai/gpt-image-2", "x", PHOTO)

    with pytest.raises(RequestBlocked, match="does not allow"):
        asyncio.run(blocked())
    assert sleeps == [2.0] and len(api.seen) == 2


# -- results and provenance ------------------------------------------------------------------


def _xmp_png(source_type: str) -> bytes:
    xmp = (
        b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/"
        b"22-rdf-syntax-ns#'><rdf:Description xmlns:Iptc4xmpExt='http://iptc.org/std/"
        b"Iptc4xmpExt/2008-02-29/' Iptc4xmpExt:DigitalSourceType='http://cv.iptc.org/newscodes/"
        b"digitalsourcetype/" + source_type.encode() + b"'/></rdf:RDF></x:xmpmeta>"
    )
    plain = factories.encode(factories.picture(), "PNG")
    chunk = factories.png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp)
    return plain[:33] + chunk + plain[33:]


def test_provenance_detection() -> None:
    app11_only = factories.jpeg(exif=False, xmp=False, iptc=False, comment=False)
    assert detect_provenance(app11_only) == ["c2pa"]  # JUMBF in APP11
    assert detect_provenance(OUT_PNG) == ["c2pa"]  # caBX
    assert detect_provenance(_xmp_png("trainedAlgorithmicMedia")) == [
        "digital_source_type:trainedAlgorithmicMedia"
    ]
    xmp_png = _xmp_png("compositeWithTrainedAlgorithmicMedia")
    both = xmp_png[:33] + factories.png_chunk(b"caBX", factories.JUMBF_C2PA[2:]) + xmp_png[33:]
    assert detect_provenance(both) == [
        "c2pa",
        "digital_source_type:compositeWithTrainedAlgorithmicMedia",
    ]
    webp = factories.encode(factories.picture(), "WEBP")
    riff = webp[:4] + (len(webp) + 8 + 12 - 8).to_bytes(4, "little") + webp[8:]
    riff += b"C2PA" + (12).to_bytes(4, "little") + factories.JUMBF_C2PA[8:20]
    assert detect_provenance(riff) == ["c2pa"]
    for plain in (OUT_JPEG, factories.encode(factories.picture(), "PNG"), webp):
        assert detect_provenance(plain) == []


def test_generated_image_save_and_pil(log: AuditLog, tmp_path: Path) -> None:
    with Harness(log) as h:
        h.api.on("POST", "api.openai.com/v1/images/generations", {"data": [{"b64_json": OUT_B64}]})
        image = h.client.generate("openai/gpt-image-2", "x").image
    saved = image.save(tmp_path / "fox.png")
    assert saved.read_bytes() == OUT_PNG  # provenance kept: veilpix never touches results
    assert image.save(tmp_path).name == "image.png"
    assert image.to_pil().size == (64, 48) and image.extension == ".png" and image.has_provenance


def test_results_from_the_client_can_be_edited_again(log: AuditLog, assert_clean: Any) -> None:
    with Harness(log) as h:
        h.api.on("POST", "api.openai.com/v1/images/generations", {"data": [{"b64_json": OUT_B64}]})
        h.api.on("POST", "api.openai.com/v1/images/edits", {"data": [{"b64_json": OUT_B64}]})
        first = h.client.generate("openai/gpt-image-2", "x")
        second = h.client.edit("openai/gpt-image-2", "y", first.image)
    ((_, _, _, data),) = [p for p in form_parts(h.api.last) if p[0] == "image"]
    assert_clean(data, "again.png")  # the vendor's C2PA does not go back out
    assert second.removed.get("c2pa") == 1


def test_closing_the_client_closes_a_log_it_opened(tmp_path: Path, log: AuditLog) -> None:
    from veilpix import AuditLogError

    client = Client(log=tmp_path / "own.db", api_keys=KEYS, transport=httpx2.MockTransport(Fake()))
    assert (tmp_path / "own.db").exists()
    client.close()
    with pytest.raises(AuditLogError, match="closed"):
        list(client.guard.log.records())
    with Client(log=log, api_keys=KEYS, transport=httpx2.MockTransport(Fake())):
        pass
    assert list(log.records()) == []  # a log the caller passed stays open


def test_fal_endpoint_ids_keep_their_fal_ai_prefix() -> None:
    from veilpix.client.plans import spec_for

    spec, model = spec_for("fal-ai/flux/dev", "generate")
    assert spec.name == "fal"
    assert model == "fal-ai/flux/dev"
    assert spec_for("fal/fal-ai/flux/dev", "generate")[1] == "fal-ai/flux/dev"


def test_digital_source_type_stops_at_the_term() -> None:
    from veilpix.formats._provenance import _DIGITAL_SOURCE

    cbor = b"\x78\x40http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMediamsoftwareAgent"
    assert [m.group(1) for m in _DIGITAL_SOURCE.finditer(cbor)] == [b"trainedAlgorithmicMedia"]
