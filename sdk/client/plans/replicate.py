"""Replicate in :class:`veilpix.Client`: generate and edit.

``POST /v1/models/{owner}/{name}/predictions`` (or ``/v1/predictions`` with a version) with
``Prefer: wait``, then ``urls.get`` until succeeded, failed or canceled; image inputs are data
URIs under model-specific keys in ``input``; ``Authorization: Bearer``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from veilpix._errors import ConfigError, VendorError, VendorJobFailed, VendorTimeout
from veilpix.client._planning import (
    Poller,
    as_dict,
    bearer,
    check_followed,
    headers_for,
    http_get,
    image_ref,
    is_ref,
    place_images,
    post_json,
    read_json,
)
from veilpix.client._steps import Call, Http, Output, Plan, VendorSpec

__all__ = ["SPEC"]


# Known image inputs of popular models (their version's openapi_schema); others: image_field=.
_FIELDS: Mapping[str, tuple[str, bool, str | None]] = {  # field, is a list, mask
    "black-forest-labs/flux-kontext-pro": ("input_image", False, None),
    "black-forest-labs/flux-kontext-max": ("input_image", False, None),
    "black-forest-labs/flux-kontext-dev": ("input_image", False, None),
    "black-forest-labs/flux-fill-pro": ("image", False, "mask"),
    "black-forest-labs/flux-fill-dev": ("image", False, "mask"),
    "google/nano-banana": ("image_input", True, None),
    "google/nano-banana-pro": ("image_input", True, None),
}
_DONE = frozenset({"succeeded", "failed", "canceled", "aborted"})
_REF = re.compile(r"([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)(?::([A-Za-z0-9_.-]+))?")


def plan(call: Call) -> Plan:
    m = _REF.fullmatch(call.model)
    if m is None:
        raise ConfigError(
            f"{call.model!r} is not a Replicate model reference",
            hint="use replicate/<owner>/<name> or replicate/<owner>/<name>:<version>",
        )
    owner, name, version = m[1], m[2], m[3]
    known = _FIELDS.get(f"{owner}/{name}")
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
        place_images(
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
    reply = yield post_json(call, url, body, extra=(("Prefer", "wait"),))
    pred = as_dict(read_json(call, reply))
    job = pred.get("id") if isinstance(pred.get("id"), str) else None
    poller = Poller(call, job)
    while pred.get("status") not in _DONE:
        get_url = as_dict(pred.get("urls")).get("get")
        if not isinstance(get_url, str):
            if job is None:
                raise VendorError(f"{call.display} returned no prediction id", vendor=call.vendor)
            get_url = f"{call.base_url}/v1/predictions/{quote(job, safe='')}"
        check_followed(call, get_url, "prediction URL")
        try:
            yield from poller.wait()
        except VendorTimeout:
            cancel = as_dict(pred.get("urls")).get("cancel")
            if isinstance(cancel, str):
                check_followed(call, cancel, "cancel URL")
                yield Http("POST", cancel, headers_for(call), optional=True)
            raise
        pred = as_dict(read_json(call, (yield http_get(call, get_url))))
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
        if is_ref(item):
            out.images.append((yield from image_ref(call, item)))
        elif isinstance(item, dict) and is_ref(item.get("url")):
            out.images.append((yield from image_ref(call, item["url"])))
        elif isinstance(item, str):
            texts.append(item)
    out.text = "".join(texts) or None
    return out


SPEC = VendorSpec(
    "replicate",
    ("REPLICATE_API_TOKEN",),
    "https://api.replicate.com",
    bearer,
    {"generate": plan, "edit": plan},
)
