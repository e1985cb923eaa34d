"""What :class:`veilpix.Client` sends to each vendor and how it reads the answers.

Everything here is pure: no sockets, no clocks, no sleeping. Each operation of each vendor
is a *plan*, a generator that yields the steps it needs (an HTTP request, a pause between
polls, a download of a result URL) and receives each step's outcome; the sync and async
clients in ``veilpix.client._client`` run the same plans, so every vendor's logic exists once.

Request shapes follow the vendors' own SDKs and API references, as collected in the
project's vendor research notes (and the adapters' ``sources``):

* OpenAI: ``POST /v1/images/generations`` (JSON), ``POST /v1/images/edits`` (multipart
  ``image`` / ``image[]`` and ``mask``, as the ``openai`` SDK sends them), ``POST /v1/responses``
  with ``input_image`` data URLs for describe; ``Authorization: Bearer``.
* Gemini: ``POST /v1beta/models/{model}:generateContent`` with ``inlineData`` parts and
  ``generationConfig.responseModalities`` ``["TEXT", "IMAGE"]``; ``x-goog-api-key``.
* Anthropic: ``POST /v1/messages`` with base64 ``image`` blocks; ``x-api-key`` and
  ``anthropic-version``.
* Stability: ``/v2beta/stable-image/...``, always multipart, ``Accept: application/json``
  (base64 ``image`` and ``finish_reason``); the asynchronous ones return an id polled at
  ``GET /v2beta/results/{id}`` (202 while running).
* Black Forest Labs: ``POST /v1/{model}`` returns ``{id, polling_url}``; the ``polling_url``
  is polled until ``Ready`` (``result.sample`` is a URL that expires after 10 minutes);
  ``x-key``.
* Replicate: ``POST /v1/models/{owner}/{name}/predictions`` (or ``/v1/predictions`` with a
  version) with ``Prefer: wait``, then ``urls.get`` until succeeded, failed or canceled;
  image inputs are data URIs under model-specific keys in ``input``.
* fal: ``POST https://queue.fal.run/{app}`` returns ``{request_id, status_url,
  response_url}``; ``status_url`` is polled until ``COMPLETED``, then ``response_url`` read;
  ``Authorization: Key``. Image inputs are data URIs (``image_url`` / ``image_urls``).

Images go out as the caller's bytes: the guard on the client's transport sanitizes them on
the way (and fixes the media-type fields beside them), so nothing here touches an image.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import math
import re
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import quote, urlsplit

from veilpix import __version__
from veilpix._errors import (
    ConfigError,
    RequestError,
    VendorAuthError,
    VendorBadRequest,
    VendorError,
    VendorJobFailed,
    VendorRateLimited,
    VendorTimeout,
    VendorUnavailable,
)
from veilpix.image._report import EXTENSIONS

__all__ = [
    "USER_AGENT",
    "VENDORS",
    "Call",
    "Download",
    "Fetched",
    "Http",
    "InputImage",
    "OutImage",
    "Output",
    "Plan",
    "Reply",
    "Size",
    "Sleep",
    "VendorSpec",
    "error_for",
    "fal_key",
    "parse_size",
    "retry_after",
    "spec_for",
    "supported",
    "vendor_message",
]

USER_AGENT = f"veilpix-client/{__version__}"
# anthropic 2.14.0 (anthropic/_constants.py) sends this version; older SDKs sent 2023-06-01.
ANTHROPIC_VERSION = "2026-10-21"
GEMINI_API_VERSION = "v1beta"  # the version of the image-generation docs and examples

_REQUEST_ID_HEADERS = (
    "x-request-id",
    "request-id",
    "x-fal-request-id",
    "x-goog-request-id",
    "x-amzn-requestid",
)
_MODERATION_CODES = frozenset(
    {"content_moderation", "moderation_blocked", "content_policy_violation", "content_filter"}
)


# -- the steps a plan yields, and what it gets back --------------------------------------------


@dataclass(frozen=True)
class Http:
    """One request to the vendor, sent through the guard. ``prompt`` is the prompt this
    request carries (recorded with it); ``optional`` requests (best-effort cancels) answer
    None instead of raising on a vendor error."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    prompt: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class Sleep:
    """Pause between polls. Answered with the seconds since the call started."""

    seconds: float


@dataclass(frozen=True)
class Download:
    """Fetch a result URL the vendor gave (no credentials, https only). Answered with a
    :class:`Fetched`."""

    url: str


Step = Http | Sleep | Download


@dataclass(frozen=True)
class Reply:
    """A vendor's 2xx answer (header names lower-case)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None


@dataclass(frozen=True)
class InputImage:
    """An image to send: the caller's bytes and their sniffed media type."""

    data: bytes = field(repr=False)
    media_type: str

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.media_type, ".bin")

    def data_uri(self) -> str:
        return f"data:{self.media_type};base64,{self.b64()}"

    def b64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


@dataclass(frozen=True)
class OutImage:
    data: bytes = field(repr=False)
    media_type: str | None = None  # what the vendor said; the client sniffs the bytes too
    url: str | None = None  # where it was downloaded from, when it came as a URL


@dataclass
class Output:
    images: list[OutImage] = field(default_factory=list)
    text: str | None = None
    raw: Any = None
    finish_reason: str | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class Call:
    """Everything one operation needs, resolved by the client before the plan starts."""

    vendor: str
    display: str
    model: str
    operation: str
    prompt: str
    base_url: str
    auth: tuple[tuple[str, str], ...] = field(repr=False)
    images: tuple[InputImage, ...] = ()
    mask: InputImage | None = None
    size: Size | None = None
    n: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)
    extra_headers: tuple[tuple[str, str], ...] = ()
    image_field: str | None = None
    mask_field: str | None = None
    poll_interval: float = 1.0
    poll_timeout: float = 600.0
    trusted_hosts: frozenset[str] = frozenset()


Plan = Generator[Step, Any, Output]


@dataclass(frozen=True)
class VendorSpec:
    name: str
    env: tuple[str, ...]  # environment variables the key is read from, in order
    base_url: str
    auth: Callable[[str], tuple[tuple[str, str], ...]]
    plans: Mapping[str, Callable[[Call], Plan]]


# -- sizes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    """A requested output size: pixels, an aspect ratio, or a vendor label ("2K", "square_hd")."""

    width: int | None = None
    height: int | None = None
    ratio: str | None = None
    label: str | None = None

    @property
    def as_ratio(self) -> str | None:
        if self.ratio is not None:
            return self.ratio
        if self.width and self.height:
            g = math.gcd(self.width, self.height)
            return f"{self.width // g}:{self.height // g}"
        return None

    def __str__(self) -> str:
        if self.width and self.height:
            return f"{self.width}x{self.height}"
        return self.ratio or self.label or ""


_WH = re.compile(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*")
_RATIO = re.compile(r"\s*(\d{1,3})\s*:\s*(\d{1,3})\s*")


def parse_size(size: str | tuple[int, int] | None) -> Size | None:
    """``"1024x768"`` or ``(1024, 768)`` (pixels), ``"16:9"`` (aspect ratio), anything else a
    vendor label passed on as it is."""
    if size is None:
        return None
    if isinstance(size, tuple):
        if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
            raise ConfigError(f"size must be (width, height) in pixels, got {size!r}")
        return Size(width=size[0], height=size[1])
    if not isinstance(size, str) or not size.strip():
        raise ConfigError(f"size must be a string such as '1024x1024' or '16:9', got {size!r}")
    if m := _WH.fullmatch(size):
        return Size(width=int(m[1]), height=int(m[2]))
    if m := _RATIO.fullmatch(size):
        return Size(ratio=f"{int(m[1])}:{int(m[2])}")
    return Size(label=size.strip())


def _ratio_for(call: Call, allowed: Sequence[str]) -> str:
    assert call.size is not None
    ratio = call.size.as_ratio
    if ratio is None or ratio not in allowed:
        raise ConfigError(
            f"{call.display} takes an aspect ratio, not size={str(call.size)!r}",
            hint=f"use one of {', '.join(allowed)} (or pass the vendor's own parameter)",
        )
    return ratio


# -- helpers shared by the plans -----------------------------------------------------------------


def _headers(call: Call, content_type: str | None = None) -> tuple[tuple[str, str], ...]:
    out = [("Accept", "application/json"), ("User-Agent", USER_AGENT), *call.auth]
    if content_type is not None:
        out.append(("Content-Type", content_type))
    out += call.extra_headers
    return tuple(out)


def _json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _post_json(call: Call, url: str, doc: Any, *, extra: Sequence[tuple[str, str]] = ()) -> Http:
    headers = _headers(call, "application/json") + tuple(extra)
    return Http("POST", url, headers, _json_bytes(doc), prompt=call.prompt or None)


def _get(call: Call, url: str) -> Http:
    return Http("GET", url, _headers(call))


def _json(call: Call, reply: Reply) -> Any:
    try:
        return json.loads(reply.body)
    except ValueError as exc:
        raise VendorError(
            f"{call.display} answered HTTP {reply.status} with a body that is not JSON",
            vendor=call.vendor,
            status=reply.status,
            request_id=_request_id(reply.headers),
        ) from exc


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _b64decode(call: Call, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise VendorError(
            f"{call.display} returned an image whose base64 does not decode",
            vendor=call.vendor,
        ) from exc


_SCHEME = re.compile(r"data:|[A-Za-z][A-Za-z0-9+.-]{1,15}://", re.IGNORECASE)  # not base64


def _image_ref(
    call: Call, ref: str, media_type: str | None = None
) -> Generator[Step, Any, OutImage]:
    """An output image given as a data URI, an http(s) URL or bare base64."""
    from veilpix.codec._codec import parse_data_uri

    if ref[:5].lower() == "data:":
        try:
            parsed = parse_data_uri(ref)
        except RequestError as exc:
            raise VendorError(
                f"{call.display} returned a data: URI that does not decode", vendor=call.vendor
            ) from exc
        if parsed is None:
            raise VendorError(f"{call.display} returned a malformed data: URI", vendor=call.vendor)
        return OutImage(parsed.data, parsed.media_type)
    if _SCHEME.match(ref):  # a URL: downloaded only over https (the client checks)
        fetched: Fetched = yield Download(ref)
        return OutImage(fetched.data, media_type or fetched.content_type, url=ref)
    return OutImage(_b64decode(call, ref), media_type)


def _is_ref(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and _SCHEME.match(value) is not None


def _no_mask(call: Call) -> None:
    if call.mask is not None:
        raise ConfigError(
            f"{call.display} model {call.model!r} takes no mask through veilpix.Client",
            hint="drop mask=..., or use a model that takes one (OpenAI edits, Stability "
            "inpaint/erase, BFL flux-pro-1.0-fill, Replicate/fal inpainting models)",
        )


def _one_image(call: Call) -> None:
    if call.n != 1:
        raise ConfigError(
            f"{call.display} ({call.model}) makes one image per call; n={call.n} is not supported",
            hint="call generate() once per image",
        )


def _check_followed(call: Call, url: str, what: str) -> str:
    """A URL the vendor told us to poll gets the API key: it must be the vendor's own."""
    from veilpix import adapters

    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        host, parts = "", None
    base = urlsplit(call.base_url)
    same_scheme = parts is not None and (
        parts.scheme == "https" or (parts.scheme == "http" and base.scheme == "http")
    )
    found = adapters.match(host) if host else None
    ours = host in call.trusted_hosts or (found is not None and found[0].name == call.vendor)
    if not (same_scheme and ours):
        raise VendorError(
            f"{call.display} gave a {what} on a host that is not its own ({host or url!r}); "
            "veilpix does not send the API key there",
            vendor=call.vendor,
            hint="if the vendor really serves from that host, map it with "
            f"Policy(vendor_hosts={{{host!r}: {call.vendor!r}}})",
        )
    return url


class _Poller:
    """Waits ``poll_interval`` between polls and gives up after ``poll_timeout``."""

    def __init__(self, call: Call, job_id: str | None) -> None:
        self.call = call
        self.job_id = job_id
        self.slept = 0.0
        self.elapsed = 0.0

    def wait(self) -> Generator[Step, Any, None]:
        call = self.call
        if max(self.elapsed, self.slept) + call.poll_interval > call.poll_timeout:
            job = f" {self.job_id}" if self.job_id else ""
            raise VendorTimeout(
                f"{call.display} job{job} did not finish within {call.poll_timeout:g} s",
                vendor=call.vendor,
                request_id=self.job_id,
            )
        self.elapsed = float((yield Sleep(call.poll_interval)) or 0.0)
        self.slept += call.poll_interval


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _multipart(
    call: Call, url: str, fields: Mapping[str, Any], files: Sequence[tuple[str, InputImage, str]]
) -> Http:
    from veilpix.codec._codec import Part, build_multipart

    parts = [Part(name, data=_form_value(v).encode("utf-8")) for name, v in fields.items()]
    parts += [
        Part(name, filename=f"{stem}{img.extension}", content_type=img.media_type, data=img.data)
        for name, img, stem in files
    ]
    body, ctype = build_multipart(parts)
    return Http("POST", url, _headers(call, ctype), body, prompt=call.prompt or None)


# -- OpenAI ----------------------------------------------------------------------------------


def _openai_images(call: Call, reply: Reply) -> Generator[Step, Any, Output]:
    doc = _obj(_json(call, reply))
    fmt = doc.get("output_format")
    media = f"image/{fmt}" if isinstance(fmt, str) and fmt else None
    out = Output(raw=doc)
    texts = []
    for entry in doc.get("data") or []:
        item = _obj(entry)
        if isinstance(item.get("b64_json"), str):
            out.images.append(OutImage(_b64decode(call, item["b64_json"]), media))
        elif isinstance(item.get("url"), str):
            out.images.append((yield from _image_ref(call, item["url"], media)))
        if isinstance(item.get("revised_prompt"), str):
            texts.append(item["revised_prompt"])
    out.text = "\n".join(texts) or None
    return out


def openai_generate(call: Call) -> Plan:
    body: dict[str, Any] = {"model": call.model, "prompt": call.prompt}
    if call.n != 1:
        body["n"] = call.n
    if call.size is not None:
        body["size"] = str(call.size)
    body.update(call.params)
    reply = yield _post_json(call, f"{call.base_url}/images/generations", body)
    return (yield from _openai_images(call, reply))


def openai_edit(call: Call) -> Plan:
    fields: dict[str, Any] = {"model": call.model, "prompt": call.prompt}
    if call.n != 1:
        fields["n"] = call.n
    if call.size is not None:
        fields["size"] = str(call.size)
    fields.update(call.params)
    # The openai SDK sends one image as "image" and several as "image[]" (brackets format).
    name = "image" if len(call.images) == 1 else "image[]"
    files = [(name, img, f"image{i}") for i, img in enumerate(call.images)]
    if call.mask is not None:
        files.append(("mask", call.mask, "mask"))
    reply = yield _multipart(call, f"{call.base_url}/images/edits", fields, files)
    return (yield from _openai_images(call, reply))


def openai_describe(call: Call) -> Plan:
    _no_mask(call)
    content: list[dict[str, Any]] = [{"type": "input_text", "text": call.prompt}]
    content += [{"type": "input_image", "image_url": img.data_uri()} for img in call.images]
    body: dict[str, Any] = {"model": call.model, "input": [{"role": "user", "content": content}]}
    body.update(call.params)
    reply = yield _post_json(call, f"{call.base_url}/responses", body)
    doc = _obj(_json(call, reply))
    if doc.get("status") == "failed" or isinstance(doc.get("error"), dict):
        message, code = _message_in(doc)
        raise VendorJobFailed(
            f"{call.display} could not answer: {message or 'failed'}",
            vendor=call.vendor,
            vendor_message=message,
            code=code,
            request_id=doc.get("id"),
        )
    texts = [
        str(part.get("text", ""))
        for item in doc.get("output") or []
        if _obj(item).get("type") == "message"
        for part in _obj(item).get("content") or []
        if _obj(part).get("type") == "output_text"
    ]
    reason = _obj(doc.get("incomplete_details")).get("reason") or doc.get("status")
    return Output(text="".join(texts), raw=doc, finish_reason=reason, job_id=doc.get("id"))


# -- Gemini ----------------------------------------------------------------------------------

_GEMINI_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
_GEMINI_SIZES = ("1K", "2K", "4K")
_GEMINI_OK = (None, "STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED")


def _gemini(call: Call, *, images_out: bool) -> Plan:
    _no_mask(call)
    parts: list[dict[str, Any]] = []
    if not images_out:  # understanding: images first, then the question (Google's advice)
        parts += [{"inlineData": {"mimeType": i.media_type, "data": i.b64()}} for i in call.images]
        parts.append({"text": call.prompt})
    else:
        parts.append({"text": call.prompt})
        parts += [{"inlineData": {"mimeType": i.media_type, "data": i.b64()}} for i in call.images]
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": parts}]}
    config: dict[str, Any] = {}
    if images_out:
        _one_image(call)
        config["responseModalities"] = ["TEXT", "IMAGE"]
        if call.size is not None:
            image_config: dict[str, Any] = {}
            label = call.size.label
            if label is not None and label.upper() in _GEMINI_SIZES:
                image_config["imageSize"] = label.upper()
            else:
                image_config["aspectRatio"] = _ratio_for(call, _GEMINI_RATIOS)
            config["imageConfig"] = image_config
    params = dict(call.params)
    extra_config = params.pop("generationConfig", None) or params.pop("generation_config", None)
    if isinstance(extra_config, dict):
        config.update(extra_config)
    if config:
        body["generationConfig"] = config
    body.update(params)
    model = quote(call.model, safe="-._~")
    url = f"{call.base_url}/{GEMINI_API_VERSION}/models/{model}:generateContent"
    reply = yield _post_json(call, url, body)
    doc = _obj(_json(call, reply))
    feedback = _obj(doc.get("promptFeedback"))
    if feedback.get("blockReason"):
        reason = str(feedback["blockReason"])
        raise VendorBadRequest(
            f"{call.display} blocked the prompt ({reason})",
            vendor=call.vendor,
            status=reply.status,
            vendor_message=str(feedback.get("blockReasonMessage") or reason),
            code=reason,
            request_id=doc.get("responseId"),
        )
    candidates = doc.get("candidates") or []
    first = _obj(candidates[0]) if candidates else {}
    out = Output(raw=doc, job_id=doc.get("responseId"))
    texts = []
    for entry in _obj(first.get("content")).get("parts") or []:
        part = _obj(entry)
        if part.get("thought"):
            continue  # interim "thinking" drafts of Gemini 3 image models
        inline = _obj(part.get("inlineData") or part.get("inline_data"))
        if isinstance(inline.get("data"), str):
            media = inline.get("mimeType") or inline.get("mime_type")
            out.images.append(OutImage(_b64decode(call, inline["data"]), media))
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    out.text = "".join(texts) or None
    out.finish_reason = first.get("finishReason")
    nothing = not out.images if images_out else not out.text
    if nothing and out.finish_reason not in _GEMINI_OK:
        why = first.get("finishMessage") or out.text or out.finish_reason
        raise VendorBadRequest(
            f"{call.display} returned no {'image' if images_out else 'text'} "
            f"(finishReason {out.finish_reason}): {why}",
            vendor=call.vendor,
            status=reply.status,
            vendor_message=str(why),
            code=str(out.finish_reason),
            request_id=out.job_id,
        )
    return out


def gemini_generate(call: Call) -> Plan:
    return (yield from _gemini(call, images_out=True))


def gemini_describe(call: Call) -> Plan:
    return (yield from _gemini(call, images_out=False))


# -- Anthropic -------------------------------------------------------------------------------


def anthropic_describe(call: Call) -> Plan:
    _no_mask(call)
    content: list[dict[str, Any]] = [
        {"type": "image", "source": {"type": "base64", "media_type": i.media_type, "data": i.b64()}}
        for i in call.images
    ]
    content.append({"type": "text", "text": call.prompt})
    params = dict(call.params)
    body: dict[str, Any] = {
        "model": call.model,
        "max_tokens": params.pop("max_tokens", 1024),
        "messages": [{"role": "user", "content": content}],
    }
    body.update(params)
    reply = yield _post_json(call, f"{call.base_url}/v1/messages", body)
    doc = _obj(_json(call, reply))
    texts = [
        str(block.get("text", ""))
        for block in doc.get("content") or []
        if _obj(block).get("type") == "text"
    ]
    return Output(text="".join(texts), raw=doc, finish_reason=doc.get("stop_reason"),
                  job_id=doc.get("id"))  # fmt: skip


# -- Stability AI ----------------------------------------------------------------------------

_STABILITY_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")


@dataclass(frozen=True)
class _StabilityOp:
    path: str
    images: tuple[str, ...] = ("image",)  # multipart field per input image, in order
    mask: bool = False
    prompt: str | None = "prompt"  # the form field the prompt goes in (None: takes none)
    asynchronous: bool = False
    fields: tuple[tuple[str, str], ...] = ()
    ratio: bool = False


_STABILITY_GENERATE = {
    "ultra": _StabilityOp("generate/ultra", images=(), ratio=True),
    "core": _StabilityOp("generate/core", images=(), ratio=True),
    "sd3": _StabilityOp("generate/sd3", images=(), ratio=True),
}
_STABILITY_EDIT = {
    "ultra": _StabilityOp("generate/ultra"),
    "sd3": _StabilityOp("generate/sd3", fields=(("mode", "image-to-image"),)),
    "inpaint": _StabilityOp("edit/inpaint", mask=True),
    "erase": _StabilityOp("edit/erase", mask=True, prompt=None),
    "outpaint": _StabilityOp("edit/outpaint"),
    "search-and-replace": _StabilityOp("edit/search-and-replace"),
    "search-and-recolor": _StabilityOp("edit/search-and-recolor"),
    "remove-background": _StabilityOp("edit/remove-background", prompt=None),
    "replace-background-and-relight": _StabilityOp(
        "edit/replace-background-and-relight",
        images=("subject_image", "background_reference", "light_reference"),
        prompt="background_prompt",
        asynchronous=True,
    ),
    "upscale-fast": _StabilityOp("upscale/fast", prompt=None),
    "upscale-conservative": _StabilityOp("upscale/conservative"),
    "upscale-creative": _StabilityOp("upscale/creative", asynchronous=True),
    "control-sketch": _StabilityOp("control/sketch"),
    "control-structure": _StabilityOp("control/structure"),
    "control-style": _StabilityOp("control/style"),
    "style-transfer": _StabilityOp("control/style-transfer", images=("init_image", "style_image")),
}


def _stability_op(
    call: Call, table: Mapping[str, _StabilityOp]
) -> tuple[_StabilityOp, dict[str, Any]]:
    model = call.model
    fields: dict[str, Any] = {}
    if model.startswith("sd3") and "sd3" in table:
        op = table["sd3"]
        if model != "sd3":
            fields["model"] = model  # sd3.5-large, sd3.5-large-turbo, sd3.5-medium, ...
        return op, fields
    if model in table:
        return table[model], fields
    known = sorted({*table, "sd3.5-large", "sd3.5-medium"} - {"sd3"})
    raise ConfigError(
        f"Stability AI has no {call.operation} model {model!r} in veilpix.Client",
        hint=f"use stability/<one of: {', '.join(known)}>",
    )


def _stability(call: Call, table: Mapping[str, _StabilityOp]) -> Plan:
    _one_image(call)
    op, fields = _stability_op(call, table)
    fields.update(op.fields)
    if call.mask is not None and not op.mask:
        _no_mask(call)
    if len(call.images) > len(op.images) or (op.images and not call.images):
        raise ConfigError(
            f"Stability AI {call.model} takes {len(op.images)} image(s) "
            f"({', '.join(op.images) or 'none'}), got {len(call.images)}"
        )
    if op.prompt is not None and call.prompt:
        fields[op.prompt] = call.prompt
    if call.size is not None:
        fields["aspect_ratio"] = _ratio_for(call, _STABILITY_RATIOS)
    fields.update(call.params)
    files = [(name, img, name) for name, img in zip(op.images, call.images, strict=False)]
    if call.mask is not None:
        files.append(("mask", call.mask, "mask"))
    reply = yield _multipart(call, f"{call.base_url}/v2beta/stable-image/{op.path}", fields, files)
    doc = _obj(_json(call, reply))
    if op.asynchronous:
        job = doc.get("id")
        if not isinstance(job, str) or not job:
            raise VendorError(f"{call.display} returned no job id", vendor=call.vendor)
        poller = _Poller(call, job)
        while True:
            yield from poller.wait()
            reply = yield _get(call, f"{call.base_url}/v2beta/results/{quote(job, safe='')}")
            if reply.status != 202:
                doc = _obj(_json(call, reply))
                break
    b64 = doc.get("image") or doc.get("result")
    out = Output(raw=doc, finish_reason=doc.get("finish_reason"), job_id=doc.get("id"))
    if isinstance(b64, str):
        fmt = call.params.get("output_format")
        out.images.append(OutImage(_b64decode(call, b64), f"image/{fmt}" if fmt else None))
    else:
        raise VendorError(
            f"{call.display} answered without an image (finish_reason {out.finish_reason})",
            vendor=call.vendor,
            status=reply.status,
        )
    return out


def stability_generate(call: Call) -> Plan:
    return (yield from _stability(call, _STABILITY_GENERATE))


def stability_edit(call: Call) -> Plan:
    return (yield from _stability(call, _STABILITY_EDIT))


# -- Black Forest Labs -----------------------------------------------------------------------

# model (exact, or prefix ending in "-") -> (image fields in order, mask field)
_BFL_FIELDS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("flux-2-klein-", ("input_image", *(f"input_image_{i}" for i in range(2, 5))), None),
    ("flux-2-", ("input_image", *(f"input_image_{i}" for i in range(2, 9))), None),
    ("flux-kontext", ("input_image", *(f"input_image_{i}" for i in range(2, 5))), None),
    ("flux-pro-1.0-fill", ("image",), "mask"),
    ("flux-fill", ("image",), "mask"),
    ("flux-pro-1.0-expand", ("image",), None),
    ("flux-pro-1.0-canny", ("control_image",), None),
    ("flux-pro-1.0-depth", ("control_image",), None),
    ("flux-pro-1.1-ultra", ("image_prompt",), None),
)
_BFL_MODERATED = frozenset({"Request Moderated", "Content Moderated"})
_BFL_FAILED = frozenset({"Error", "Failed", "Task not found"})


def _bfl_fields(call: Call) -> tuple[tuple[str, ...], str | None]:
    for prefix, images, mask in _BFL_FIELDS:
        if call.model.startswith(prefix):
            return images, mask
    return ("input_image",), None


def bfl_plan(call: Call) -> Plan:
    _one_image(call)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", call.model):
        raise ConfigError(f"{call.model!r} is not a Black Forest Labs model name (flux-2-pro, ...)")
    body: dict[str, Any] = {"prompt": call.prompt}
    if call.size is not None:
        if call.size.width and call.size.height:
            body["width"], body["height"] = call.size.width, call.size.height
        else:
            body["aspect_ratio"] = call.size.as_ratio or call.size.label
    names, mask_name = _bfl_fields(call)
    if len(call.images) > len(names):
        raise ConfigError(
            f"Black Forest Labs {call.model} takes at most {len(names)} image(s), "
            f"got {len(call.images)}"
        )
    for name, img in zip(names, call.images, strict=False):
        body[name] = img.b64()  # base64 without a data: prefix, as BFL's examples send
    if call.mask is not None:
        if mask_name is None:
            _no_mask(call)
        else:
            body[mask_name] = call.mask.b64()
    body.update(call.params)
    reply = yield _post_json(call, f"{call.base_url}/v1/{call.model}", body)
    doc = _obj(_json(call, reply))
    job = doc.get("id") if isinstance(doc.get("id"), str) else None
    polling = doc.get("polling_url")
    if not isinstance(polling, str):
        if job is None:
            raise VendorError(
                f"{call.display} returned neither id nor polling_url", vendor=call.vendor
            )
        polling = f"{call.base_url}/v1/get_result?id={quote(job, safe='')}"
    _check_followed(call, polling, "polling_url")
    poller = _Poller(call, job)
    while True:
        yield from poller.wait()
        doc = _obj(_json(call, (yield _get(call, polling))))
        status = str(doc.get("status"))
        if status == "Ready":
            break
        if status in _BFL_MODERATED or status in _BFL_FAILED:
            detail = doc.get("details") or doc.get("error") or status
            cls = VendorBadRequest if status in _BFL_MODERATED else VendorJobFailed
            raise cls(
                f"{call.display} job {job}: {status}"
                + (f" ({detail})" if detail != status else ""),
                vendor=call.vendor,
                vendor_message=str(detail),
                code=status,
                request_id=job,
            )
    result = _obj(doc.get("result"))
    samples = result.get("sample") or result.get("samples")
    refs = (
        [samples] if isinstance(samples, str) else [s for s in samples or [] if isinstance(s, str)]
    )
    if not refs:
        raise VendorError(
            f"{call.display} job {job} is Ready but names no sample", vendor=call.vendor
        )
    out = Output(raw=doc, job_id=job, finish_reason=status)
    for ref in refs:
        out.images.append((yield from _image_ref(call, ref)))
    return out


# -- Replicate -------------------------------------------------------------------------------

# Known image inputs of popular models (their version's openapi_schema); others: image_field=.
_REPLICATE_FIELDS: Mapping[str, tuple[str, bool, str | None]] = {  # field, is a list, mask
    "black-forest-labs/flux-kontext-pro": ("input_image", False, None),
    "black-forest-labs/flux-kontext-max": ("input_image", False, None),
    "black-forest-labs/flux-kontext-dev": ("input_image", False, None),
    "black-forest-labs/flux-fill-pro": ("image", False, "mask"),
    "black-forest-labs/flux-fill-dev": ("image", False, "mask"),
    "google/nano-banana": ("image_input", True, None),
    "google/nano-banana-pro": ("image_input", True, None),
}
_REPLICATE_DONE = frozenset({"succeeded", "failed", "canceled", "aborted"})
_REF = re.compile(r"([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)(?::([A-Za-z0-9_.-]+))?")


def _place_images(
    call: Call, args: dict[str, Any], field_name: str, as_list: bool, mask_name: str | None
) -> None:
    uris = [img.data_uri() for img in call.images]
    if uris:
        args[field_name] = uris if as_list or len(uris) > 1 else uris[0]
    if call.mask is not None:
        if mask_name is None:
            _no_mask(call)
        else:
            args[mask_name] = call.mask.data_uri()


def replicate_plan(call: Call) -> Plan:
    m = _REF.fullmatch(call.model)
    if m is None:
        raise ConfigError(
            f"{call.model!r} is not a Replicate model reference",
            hint="use replicate/<owner>/<name> or replicate/<owner>/<name>:<version>",
        )
    owner, name, version = m[1], m[2], m[3]
    known = _REPLICATE_FIELDS.get(f"{owner}/{name}")
    args: dict[str, Any] = {}
    if call.prompt:
        args["prompt"] = call.prompt
    if call.size is not None:
        if call.size.width and call.size.height:
            args["width"], args["height"] = call.size.width, call.size.height
        else:
            args["aspect_ratio"] = call.size.as_ratio or call.size.label
    if call.n != 1:
        args["num_outputs"] = call.n
    if call.images or call.mask is not None:
        field_name = call.image_field or (known[0] if known else None)
        if field_name is None and len(call.images) > 1:
            raise ConfigError(
                f"veilpix does not know which input of {owner}/{name} takes several images",
                hint="name it: edit(..., image_field='image_input') (see the model's API page)",
            )
        _place_images(
            call,
            args,
            field_name or "image",
            bool(known and known[1] and not call.image_field),
            call.mask_field or (known[2] if known and known[2] else "mask"),
        )
    args.update(call.params)
    if version:
        url, body = f"{call.base_url}/v1/predictions", {"version": version, "input": args}
    else:
        url, body = f"{call.base_url}/v1/models/{owner}/{name}/predictions", {"input": args}
    reply = yield _post_json(call, url, body, extra=(("Prefer", "wait"),))
    pred = _obj(_json(call, reply))
    job = pred.get("id") if isinstance(pred.get("id"), str) else None
    poller = _Poller(call, job)
    while pred.get("status") not in _REPLICATE_DONE:
        get_url = _obj(pred.get("urls")).get("get")
        if not isinstance(get_url, str):
            if job is None:
                raise VendorError(f"{call.display} returned no prediction id", vendor=call.vendor)
            get_url = f"{call.base_url}/v1/predictions/{quote(job, safe='')}"
        _check_followed(call, get_url, "prediction URL")
        try:
            yield from poller.wait()
        except VendorTimeout:
            cancel = _obj(pred.get("urls")).get("cancel")
            if isinstance(cancel, str):
                _check_followed(call, cancel, "cancel URL")
                yield Http("POST", cancel, _headers(call), optional=True)
            raise
        pred = _obj(_json(call, (yield _get(call, get_url))))
    status = str(pred.get("status"))
    if status != "succeeded":
        detail = pred.get("error") or status
        raise VendorJobFailed(
            f"{call.display} prediction {job} {status}: {detail}",
            vendor=call.vendor,
            vendor_message=str(detail),
            code=status,
            request_id=job,
        )
    output = pred.get("output")
    items = output if isinstance(output, list) else [output]
    out = Output(raw=pred, job_id=job, finish_reason=status)
    texts = []
    for item in items:
        if _is_ref(item):
            out.images.append((yield from _image_ref(call, item)))
        elif isinstance(item, dict) and _is_ref(item.get("url")):
            out.images.append((yield from _image_ref(call, item["url"])))
        elif isinstance(item, str):
            texts.append(item)
    out.text = "".join(texts) or None
    return out


# -- fal -------------------------------------------------------------------------------------

_FAL_LISTS = (  # models whose image input is image_urls even for one image
    "fal-ai/nano-banana/edit",
    "fal-ai/nano-banana-pro/edit",
    "fal-ai/gemini-25-flash-image/edit",
    "fal-ai/bytedance/seedream/v4/edit",
    "fal-ai/gpt-image-1/edit-image",
)
_FAL_NAMESPACES = ("workflows", "comfy")  # fal-client's APP_NAMESPACES


def _fal_app_base(app: str) -> str:
    """``owner/alias`` (with a namespace) of an endpoint id: the queue's request URLs use
    it without the sub-path (fal-client ``AppId`` / ``SyncRequestHandle.from_request_id``)."""
    parts = app.split("/")
    keep = 3 if parts[0] in _FAL_NAMESPACES else 2
    return "/".join(parts[:keep])


def fal_plan(call: Call) -> Plan:
    app = call.model
    if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+", app):
        raise ConfigError(
            f"{app!r} is not a fal endpoint id", hint="use fal/<owner>/<app>[/<path>]"
        )
    args: dict[str, Any] = {}
    if call.prompt:
        args["prompt"] = call.prompt
    if call.size is not None:
        if call.size.width and call.size.height:
            args["image_size"] = {"width": call.size.width, "height": call.size.height}
        elif call.size.ratio:
            args["aspect_ratio"] = call.size.ratio
        else:
            args["image_size"] = call.size.label  # "square_hd", "landscape_16_9", ...
    if call.n != 1:
        args["num_images"] = call.n
    if call.images or call.mask is not None:
        listed = app in _FAL_LISTS or len(call.images) > 1
        field_name = call.image_field or ("image_urls" if listed else "image_url")
        _place_images(call, args, field_name, listed and not call.image_field,
                      call.mask_field or "mask_url")  # fmt: skip
    args.update(call.params)
    reply = yield _post_json(call, f"{call.base_url}/{app}", args)
    doc = _obj(_json(call, reply))
    job = doc.get("request_id") if isinstance(doc.get("request_id"), str) else None
    if job is not None:  # the queue (queue.fal.run); a fal.run base answers with the result
        base = f"{call.base_url}/{_fal_app_base(app)}/requests/{quote(job, safe='')}"
        status_url = _check_followed(call, str(doc.get("status_url") or f"{base}/status"),
                                     "status_url")  # fmt: skip
        result_url = _check_followed(call, str(doc.get("response_url") or base), "response_url")
        poller = _Poller(call, job)
        while True:
            try:
                yield from poller.wait()
            except VendorTimeout:
                cancel = doc.get("cancel_url") or f"{base}/cancel"
                _check_followed(call, str(cancel), "cancel_url")
                yield Http("PUT", str(cancel), _headers(call), optional=True)
                raise
            status = _obj(_json(call, (yield _get(call, status_url))))
            if status.get("status") == "COMPLETED":
                if status.get("error"):
                    raise VendorJobFailed(
                        f"{call.display} request {job} failed: {status['error']}",
                        vendor=call.vendor,
                        vendor_message=str(status["error"]),
                        code=str(status.get("error_type") or "") or None,
                        request_id=job,
                    )
                break
        doc = _obj(_json(call, (yield _get(call, result_url))))
    out = Output(raw=doc, job_id=job)
    found = doc.get("images")
    items = found if isinstance(found, list) else [doc.get("image")] if doc.get("image") else []
    for entry in items:
        item = _obj(entry) if not isinstance(entry, str) else {"url": entry}
        if _is_ref(item.get("url")):
            out.images.append((yield from _image_ref(call, item["url"], item.get("content_type"))))
    for key in ("text", "output", "description"):
        if isinstance(doc.get(key), str):
            out.text = doc[key]
            break
    return out


# -- errors ----------------------------------------------------------------------------------


def _request_id(headers: Mapping[str, str]) -> str | None:
    return next((headers[h] for h in _REQUEST_ID_HEADERS if h in headers), None)


def _message_in(doc: Any) -> tuple[str | None, str | None]:
    """The vendor's message and error code in an error body of any of the vendors."""
    if not isinstance(doc, dict):
        return (str(doc)[:500] if doc not in (None, "") else None), None
    err = doc.get("error")
    code: Any = None
    message: Any = None
    if isinstance(err, dict):  # OpenAI, Gemini, Anthropic
        message = err.get("message") or err.get("detail")
        code = err.get("code") if isinstance(err.get("code"), str) else None
        code = code or err.get("status") or err.get("type")
    elif isinstance(err, str) and err:  # Replicate predictions, fal status
        message, code = err, doc.get("error_type")
    detail = doc.get("detail")
    if message is None and isinstance(detail, str):  # BFL, fal, Replicate (RFC 7807)
        message = detail
        if isinstance(doc.get("title"), str) and doc["title"] not in detail:
            message = f"{doc['title']}: {detail}"
    elif message is None and isinstance(detail, list):  # FastAPI validation errors (BFL, fal)
        bits = []
        for entry in detail[:5]:
            item = _obj(entry)
            where = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
            bits.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        message = "; ".join(bits) or None
    if message is None and isinstance(doc.get("errors"), list):  # Stability
        message = "; ".join(str(e) for e in doc["errors"][:5]) or None
        code = code or doc.get("name")
    if message is None:
        message = doc.get("message") or doc.get("title")
    code = code or doc.get("name") or doc.get("code")
    return (str(message)[:2000] if message else None), (str(code) if code else None)


def vendor_message(body: bytes) -> tuple[str | None, str | None]:
    try:
        doc = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        if text.lstrip()[:1] == "<":  # an HTML error page from a load balancer
            return None, None
        return (text[:500] or None), None
    return _message_in(doc)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (RFC 9110:
    seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def error_for(call: Call, status: int, headers: Mapping[str, str], body: bytes) -> VendorError:
    """The :class:`VendorError` for an HTTP error answer, with the vendor's own message."""
    message, code = vendor_message(body)
    rid = _request_id(headers)
    text = f"{call.display} answered HTTP {status}" + (f": {message}" if message else "")
    moderated = code is not None and code.lower() in _MODERATION_CODES
    common: dict[str, Any] = {
        "vendor": call.vendor,
        "status": status,
        "vendor_message": message,
        "code": code,
        "request_id": rid,
    }
    if status == 429:
        return VendorRateLimited(text, retry_after=retry_after(headers), **common)
    if status in (401, 403) and not moderated:
        return VendorAuthError(text, **common)
    if status in (400, 404, 413, 422) or moderated:
        return VendorBadRequest(text, **common)
    if status == 408 or status >= 500:
        return VendorUnavailable(text, **common)
    return VendorError(text, **common)


# -- the registry ----------------------------------------------------------------------------


def _bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("Authorization", f"Bearer {key}"),)


VENDORS: Mapping[str, VendorSpec] = {
    spec.name: spec
    for spec in (
        VendorSpec(
            "openai",
            ("OPENAI_API_KEY",),
            "https://api.openai.com/v1",
            _bearer,
            {"generate": openai_generate, "edit": openai_edit, "describe": openai_describe},
        ),
        VendorSpec(
            "gemini",
            ("GOOGLE_API_KEY", "GEMINI_API_KEY"),  # google-genai prefers GOOGLE_API_KEY
            "https://generativelanguage.googleapis.com",
            lambda key: (("x-goog-api-key", key),),
            {"generate": gemini_generate, "edit": gemini_generate, "describe": gemini_describe},
        ),
        VendorSpec(
            "anthropic",
            ("ANTHROPIC_API_KEY",),
            "https://api.anthropic.com",
            lambda key: (("x-api-key", key), ("anthropic-version", ANTHROPIC_VERSION)),
            {"describe": anthropic_describe},
        ),
        VendorSpec(
            "stability",
            ("STABILITY_API_KEY",),
            "https://api.stability.ai",
            _bearer,
            {"generate": stability_generate, "edit": stability_edit},
        ),
        VendorSpec(
            "bfl",
            ("BFL_API_KEY",),
            "https://api.bfl.ai",
            lambda key: (("x-key", key),),
            {"generate": bfl_plan, "edit": bfl_plan},
        ),
        VendorSpec(
            "replicate",
            ("REPLICATE_API_TOKEN",),
            "https://api.replicate.com",
            _bearer,
            {"generate": replicate_plan, "edit": replicate_plan},
        ),
        VendorSpec(
            "fal",
            ("FAL_KEY",),
            "https://queue.fal.run",
            lambda key: (("Authorization", f"Key {key}"),),
            {"generate": fal_plan, "edit": fal_plan},
        ),
    )
}
_ALIASES = {
    "google": "gemini",
    "fal_ai": "fal",
    "fal-ai": "fal",
    "black_forest_labs": "bfl",
    "black-forest-labs": "bfl",
    "stabilityai": "stability",
    "stability_ai": "stability",
}


def supported(operation: str) -> list[str]:
    return [name for name, spec in VENDORS.items() if operation in spec.plans]


def spec_for(model: str, operation: str) -> tuple[VendorSpec, str]:
    """The vendor spec and the vendor's model name for a ``vendor/model`` string."""
    prefix, slash, rest = model.partition("/") if isinstance(model, str) else ("", "", "")
    vendors = ", ".join(supported(operation))
    if not slash or not rest:
        raise ConfigError(
            f"model {model!r} does not name its vendor",
            hint=f"write it as 'vendor/model'; {operation} supports: {vendors}",
        )
    name = _ALIASES.get(prefix.lower(), prefix.lower())
    if prefix.lower() == "fal-ai":
        # fal's own endpoint ids start with "fal-ai/": "fal-ai/flux/dev" means fal, app
        # "fal-ai/flux/dev" (the LiteLLM spelling is "fal_ai/fal-ai/flux/dev").
        rest = model
    spec = VENDORS.get(name)
    if spec is None:
        raise ConfigError(
            f"veilpix.Client has no vendor {prefix!r}",
            hint=f"{operation} supports: {vendors}",
        )
    if operation not in spec.plans:
        raise ConfigError(
            f"{prefix} does not support {operation} in veilpix.Client",
            hint=f"{operation} supports: {vendors}",
        )
    return spec, rest


def fal_key(env: Mapping[str, str]) -> str | None:
    """FAL_KEY, or FAL_KEY_ID and FAL_KEY_SECRET joined as fal-client does."""
    if env.get("FAL_KEY"):
        return env["FAL_KEY"]
    if env.get("FAL_KEY_ID") and env.get("FAL_KEY_SECRET"):
        return f"{env['FAL_KEY_ID']}:{env['FAL_KEY_SECRET']}"
    return None
