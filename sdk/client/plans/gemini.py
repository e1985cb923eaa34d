"""Gemini in :class:`veilpix.Client`: generate, edit and describe.

``POST /v1beta/models/{model}:generateContent`` with ``inlineData`` parts and
``generationConfig.responseModalities`` ``["TEXT", "IMAGE"]``; ``x-goog-api-key``. Google
marks the images of its image models with SynthID, which :func:`invisible_watermark` names
on the results (of Gemini, and of Google's models served by other vendors).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from veilpix._errors import VendorBadRequest
from veilpix.client._planning import (
    as_dict,
    decode_b64,
    no_mask,
    one_image,
    post_json,
    ratio_for,
    read_json,
)
from veilpix.client._steps import Call, OutImage, Output, Plan, VendorSpec

__all__ = ["SPEC", "invisible_watermark"]

API_VERSION = "v1beta"  # the version of the image-generation docs and examples
# Google marks images from its image models with SynthID, an invisible watermark in the
# pixels; no public detector exists, so veilpix can only say that it is expected.
_SYNTHID = "SynthID (Google's invisible watermark: expected, not detectable by veilpix)"
_GOOGLE_MODELS = re.compile(r"gemini|imagen|nano-banana", re.IGNORECASE)


_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
_SIZES = ("1K", "2K", "4K")
_OK = (None, "STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED")


def _plan(call: Call, *, images_out: bool) -> Plan:
    no_mask(call)
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
        one_image(call)
        config["responseModalities"] = ["TEXT", "IMAGE"]
        if call.size is not None:
            image_config: dict[str, Any] = {}
            label = call.size.label
            if label is not None and label.upper() in _SIZES:
                image_config["imageSize"] = label.upper()
            else:
                image_config["aspectRatio"] = ratio_for(call, _RATIOS)
            config["imageConfig"] = image_config
    params = dict(call.params)
    extra_config = params.pop("generationConfig", None) or params.pop("generation_config", None)
    if isinstance(extra_config, dict):
        config.update(extra_config)
    if config:
        body["generationConfig"] = config
    body.update(params)
    model = quote(call.model, safe="-._~")
    url = f"{call.base_url}/{API_VERSION}/models/{model}:generateContent"
    reply = yield post_json(call, url, body)
    doc = as_dict(read_json(call, reply))
    feedback = as_dict(doc.get("promptFeedback"))
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
    first = as_dict(candidates[0]) if candidates else {}
    out = Output(raw=doc, job_id=doc.get("responseId"))
    texts = []
    for entry in as_dict(first.get("content")).get("parts") or []:
        part = as_dict(entry)
        if part.get("thought"):
            continue  # interim "thinking" drafts of Gemini 3 image models
        inline = as_dict(part.get("inlineData") or part.get("inline_data"))
        if isinstance(inline.get("data"), str):
            media = inline.get("mimeType") or inline.get("mime_type")
            out.images.append(OutImage(decode_b64(call, inline["data"]), media))
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    out.text = "".join(texts) or None
    out.finish_reason = first.get("finishReason")
    nothing = not out.images if images_out else not out.text
    if nothing and out.finish_reason not in _OK:
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


def generate(call: Call) -> Plan:
    return (yield from _plan(call, images_out=True))


def describe(call: Call) -> Plan:
    return (yield from _plan(call, images_out=False))


def invisible_watermark(call: Call) -> str | None:
    """The watermark Google's image models put in their pixels, which veilpix cannot see:
    for any Gemini call, and for Google's models served by other vendors
    (``replicate/google/nano-banana``, ``fal/fal-ai/nano-banana``)."""
    return _SYNTHID if call.vendor == "gemini" or _GOOGLE_MODELS.search(call.model) else None


SPEC = VendorSpec(
    "gemini",
    ("GOOGLE_API_KEY", "GEMINI_API_KEY"),  # google-genai prefers GOOGLE_API_KEY
    "https://generativelanguage.googleapis.com",
    lambda key: (("x-goog-api-key", key),),
    {"generate": generate, "edit": generate, "describe": describe},
    aliases=("google",),
)
