"""Stability AI in :class:`veilpix.Client`: generate and edit.

``/v2beta/stable-image/...``, always multipart, ``Accept: application/json`` (base64
``image`` and ``finish_reason``); the asynchronous operations return an id polled at
``GET /v2beta/results/{id}`` (202 while running). The model name picks the operation
(``stability/core``, ``stability/inpaint``, ``stability/sd3.5-large``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from veilpix._errors import ConfigError, VendorError
from veilpix.client._planning import (
    Poller,
    as_dict,
    bearer,
    decode_b64,
    http_get,
    no_mask,
    one_image,
    post_multipart,
    ratio_for,
    read_json,
)
from veilpix.client._steps import Call, OutImage, Output, Plan, VendorSpec

__all__ = ["SPEC"]


_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")


@dataclass(frozen=True)
class _Op:
    path: str
    images: tuple[str, ...] = ("image",)  # multipart field per input image, in order
    mask: bool = False
    prompt: str | None = "prompt"  # the form field the prompt goes in (None: takes none)
    asynchronous: bool = False
    fields: tuple[tuple[str, str], ...] = ()
    ratio: bool = False


_GENERATE = {
    "ultra": _Op("generate/ultra", images=(), ratio=True),
    "core": _Op("generate/core", images=(), ratio=True),
    "sd3": _Op("generate/sd3", images=(), ratio=True),
}
_EDIT = {
    "ultra": _Op("generate/ultra"),
    "sd3": _Op("generate/sd3", fields=(("mode", "image-to-image"),)),
    "inpaint": _Op("edit/inpaint", mask=True),
    "erase": _Op("edit/erase", mask=True, prompt=None),
    "outpaint": _Op("edit/outpaint"),
    "search-and-replace": _Op("edit/search-and-replace"),
    "search-and-recolor": _Op("edit/search-and-recolor"),
    "remove-background": _Op("edit/remove-background", prompt=None),
    "replace-background-and-relight": _Op(
        "edit/replace-background-and-relight",
        images=("subject_image", "background_reference", "light_reference"),
        prompt="background_prompt",
        asynchronous=True,
    ),
    "upscale-fast": _Op("upscale/fast", prompt=None),
    "upscale-conservative": _Op("upscale/conservative"),
    "upscale-creative": _Op("upscale/creative", asynchronous=True),
    "control-sketch": _Op("control/sketch"),
    "control-structure": _Op("control/structure"),
    "control-style": _Op("control/style"),
    "style-transfer": _Op("control/style-transfer", images=("init_image", "style_image")),
}


def _op(call: Call, table: Mapping[str, _Op]) -> tuple[_Op, dict[str, Any]]:
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


def _plan(call: Call, table: Mapping[str, _Op]) -> Plan:
    one_image(call)
    op, fields = _op(call, table)
    fields.update(op.fields)
    if call.mask is not None and not op.mask:
        no_mask(call)
    if len(call.images) > len(op.images) or (op.images and not call.images):
        raise ConfigError(
            f"Stability AI {call.model} takes {len(op.images)} image(s) "
            f"({', '.join(op.images) or 'none'}), got {len(call.images)}"
        )
    if op.prompt is not None and call.prompt:
        fields[op.prompt] = call.prompt
    if call.size is not None:
        fields["aspect_ratio"] = ratio_for(call, _RATIOS)
    fields.update(call.params)
    files = [(name, img, name) for name, img in zip(op.images, call.images, strict=False)]
    if call.mask is not None:
        files.append(("mask", call.mask, "mask"))
    reply = yield post_multipart(
        call, f"{call.base_url}/v2beta/stable-image/{op.path}", fields, files
    )
    doc = as_dict(read_json(call, reply))
    if op.asynchronous:
        job = doc.get("id")
        if not isinstance(job, str) or not job:
            raise VendorError(f"{call.display} returned no job id", vendor=call.vendor)
        poller = Poller(call, job)
        while True:
            yield from poller.wait()
            reply = yield http_get(call, f"{call.base_url}/v2beta/results/{quote(job, safe='')}")
            if reply.status != 202:
                doc = as_dict(read_json(call, reply))
                break
    b64 = doc.get("image") or doc.get("result")
    out = Output(raw=doc, finish_reason=doc.get("finish_reason"), job_id=doc.get("id"))
    if isinstance(b64, str):
        fmt = call.params.get("output_format")
        out.images.append(OutImage(decode_b64(call, b64), f"image/{fmt}" if fmt else None))
    else:
        raise VendorError(
            f"{call.display} answered without an image (finish_reason {out.finish_reason})",
            vendor=call.vendor,
            status=reply.status,
        )
    return out


def generate(call: Call) -> Plan:
    return (yield from _plan(call, _GENERATE))


def edit(call: Call) -> Plan:
    return (yield from _plan(call, _EDIT))


SPEC = VendorSpec(
    "stability",
    ("STABILITY_API_KEY",),
    "https://api.stability.ai",
    bearer,
    {"generate": generate, "edit": edit},
    aliases=("stabilityai", "stability_ai"),
)
