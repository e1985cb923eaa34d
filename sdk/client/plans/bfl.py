"""Black Forest Labs in :class:`veilpix.Client`: generate and edit.

``POST /v1/{model}`` returns ``{id, polling_url}``; the ``polling_url`` is polled until
``Ready`` (``result.sample`` is a URL that expires after 10 minutes); ``x-key``. Image inputs
are bare base64 under model-specific fields (``input_image``, ``input_image_2``, ...).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from veilpix._errors import ConfigError, VendorBadRequest, VendorError, VendorJobFailed
from veilpix.client._planning import (
    Poller,
    as_dict,
    check_followed,
    http_get,
    image_ref,
    no_mask,
    one_image,
    post_json,
    read_json,
)
from veilpix.client._steps import Call, Output, Plan, VendorSpec

__all__ = ["SPEC"]


# model (exact, or prefix ending in "-") -> (image fields in order, mask field)
_FIELDS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
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
_MODERATED = frozenset({"Request Moderated", "Content Moderated"})
_FAILED = frozenset({"Error", "Failed", "Task not found"})


def _fields(call: Call) -> tuple[tuple[str, ...], str | None]:
    for prefix, images, mask in _FIELDS:
        if call.model.startswith(prefix):
            return images, mask
    return ("input_image",), None


def plan(call: Call) -> Plan:
    one_image(call)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", call.model):
        raise ConfigError(f"{call.model!r} is not a Black Forest Labs model name (flux-2-pro, ...)")
    body: dict[str, Any] = {"prompt": call.prompt}
    if call.size is not None:
        if call.size.width and call.size.height:
            body["width"], body["height"] = call.size.width, call.size.height
        else:
            body["aspect_ratio"] = call.size.as_ratio or call.size.label
    names, mask_name = _fields(call)
    if len(call.images) > len(names):
        raise ConfigError(
            f"Black Forest Labs {call.model} takes at most {len(names)} image(s), "
            f"got {len(call.images)}"
        )
    for name, img in zip(names, call.images, strict=False):
        body[name] = img.b64()  # base64 without a data: prefix, as BFL's examples send
    if call.mask is not None:
        if mask_name is None:
            no_mask(call)
        else:
            body[mask_name] = call.mask.b64()
    body.update(call.params)
    reply = yield post_json(call, f"{call.base_url}/v1/{call.model}", body)
    doc = as_dict(read_json(call, reply))
    job = doc.get("id") if isinstance(doc.get("id"), str) else None
    polling = doc.get("polling_url")
    if not isinstance(polling, str):
        if job is None:
            raise VendorError(
                f"{call.display} returned neither id nor polling_url", vendor=call.vendor
            )
        polling = f"{call.base_url}/v1/get_result?id={quote(job, safe='')}"
    check_followed(call, polling, "polling_url")
    poller = Poller(call, job)
    while True:
        yield from poller.wait()
        doc = as_dict(read_json(call, (yield http_get(call, polling))))
        status = str(doc.get("status"))
        if status == "Ready":
            break
        if status in _MODERATED or status in _FAILED:
            detail = doc.get("details") or doc.get("error") or status
            cls = VendorBadRequest if status in _MODERATED else VendorJobFailed
            raise cls(
                f"{call.display} job {job}: {status}"
                + (f" ({detail})" if detail != status else ""),
                vendor=call.vendor,
                vendor_message=str(detail),
                code=status,
                request_id=job,
            )
    result = as_dict(doc.get("result"))
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
        out.images.append((yield from image_ref(call, ref)))
    return out


SPEC = VendorSpec(
    "bfl",
    ("BFL_API_KEY",),
    "https://api.bfl.ai",
    lambda key: (("x-key", key),),
    {"generate": plan, "edit": plan},
    aliases=("black_forest_labs", "black-forest-labs"),
)
