"""OpenAI in :class:`veilpix.Client`: generate, edit and describe.

``POST /v1/images/generations`` (JSON), ``POST /v1/images/edits`` (multipart ``image`` /
``image[]`` and ``mask``, as the ``openai`` SDK sends them), ``POST /v1/responses`` with
``input_image`` data URLs for describe; ``Authorization: Bearer``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from veilpix._errors import VendorJobFailed
from veilpix.client._planning import (
    as_dict,
    bearer,
    decode_b64,
    image_ref,
    no_mask,
    post_json,
    post_multipart,
    read_json,
)
from veilpix.client._steps import Call, OutImage, Output, Plan, Reply, Step, VendorSpec
from veilpix.client._vendor_errors import message_in

__all__ = ["SPEC"]


def _images(call: Call, reply: Reply) -> Generator[Step, Any, Output]:
    doc = as_dict(read_json(call, reply))
    fmt = doc.get("output_format")
    media = f"image/{fmt}" if isinstance(fmt, str) and fmt else None
    out = Output(raw=doc)
    texts = []
    for entry in doc.get("data") or []:
        item = as_dict(entry)
        if isinstance(item.get("b64_json"), str):
            out.images.append(OutImage(decode_b64(call, item["b64_json"]), media))
        elif isinstance(item.get("url"), str):
            out.images.append((yield from image_ref(call, item["url"], media)))
        if isinstance(item.get("revised_prompt"), str):
            texts.append(item["revised_prompt"])
    out.text = "\n".join(texts) or None
    return out


def generate(call: Call) -> Plan:
    body: dict[str, Any] = {"model": call.model, "prompt": call.prompt}
    if call.n != 1:
        body["n"] = call.n
    if call.size is not None:
        body["size"] = str(call.size)
    body.update(call.params)
    reply = yield post_json(call, f"{call.base_url}/images/generations", body)
    return (yield from _images(call, reply))


def edit(call: Call) -> Plan:
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
    reply = yield post_multipart(call, f"{call.base_url}/images/edits", fields, files)
    return (yield from _images(call, reply))


def describe(call: Call) -> Plan:
    no_mask(call)
    content: list[dict[str, Any]] = [{"type": "input_text", "text": call.prompt}]
    content += [{"type": "input_image", "image_url": img.data_uri()} for img in call.images]
    body: dict[str, Any] = {"model": call.model, "input": [{"role": "user", "content": content}]}
    body.update(call.params)
    reply = yield post_json(call, f"{call.base_url}/responses", body)
    doc = as_dict(read_json(call, reply))
    if doc.get("status") == "failed" or isinstance(doc.get("error"), dict):
        message, code = message_in(doc)
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
        if as_dict(item).get("type") == "message"
        for part in as_dict(item).get("content") or []
        if as_dict(part).get("type") == "output_text"
    ]
    reason = as_dict(doc.get("incomplete_details")).get("reason") or doc.get("status")
    return Output(text="".join(texts), raw=doc, finish_reason=reason, job_id=doc.get("id"))


SPEC = VendorSpec(
    "openai",
    ("OPENAI_API_KEY",),
    "https://api.openai.com/v1",
    bearer,
    {"generate": generate, "edit": edit, "describe": describe},
)
