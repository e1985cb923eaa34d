"""fal in :class:`veilpix.Client`: generate and edit.

``POST https://queue.fal.run/{app}`` returns ``{request_id, status_url, response_url}``;
``status_url`` is polled until ``COMPLETED``, then ``response_url`` read;
``Authorization: Key``. Image inputs are data URIs (``image_url`` / ``image_urls``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from veilpix._errors import ConfigError, VendorJobFailed, VendorTimeout
from veilpix.client._planning import (
    Poller,
    as_dict,
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


_LISTS = (  # models whose image input is image_urls even for one image
    "fal-ai/nano-banana/edit",
    "fal-ai/nano-banana-pro/edit",
    "fal-ai/gemini-25-flash-image/edit",
    "fal-ai/bytedance/seedream/v4/edit",
    "fal-ai/gpt-image-1/edit-image",
)
_NAMESPACES = ("workflows", "comfy")  # fal-client's APP_NAMESPACES


def _app_base(app: str) -> str:
    """``owner/alias`` (with a namespace) of an endpoint id: the queue's request URLs use
    it without the sub-path (fal-client ``AppId`` / ``SyncRequestHandle.from_request_id``)."""
    parts = app.split("/")
    keep = 3 if parts[0] in _NAMESPACES else 2
    return "/".join(parts[:keep])


def plan(call: Call) -> Plan:
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
        listed = app in _LISTS or len(call.images) > 1
        field_name = call.image_field or ("image_urls" if listed else "image_url")
        place_images(
            call, args, field_name, listed and not call.image_field, call.mask_field or "mask_url"
        )
    args.update(call.params)
    reply = yield post_json(call, f"{call.base_url}/{app}", args)
    doc = as_dict(read_json(call, reply))
    job = doc.get("request_id") if isinstance(doc.get("request_id"), str) else None
    if job is not None:  # the queue (queue.fal.run); a fal.run base answers with the result
        base = f"{call.base_url}/{_app_base(app)}/requests/{quote(job, safe='')}"
        status_url = check_followed(
            call, str(doc.get("status_url") or f"{base}/status"), "status_url"
        )
        result_url = check_followed(call, str(doc.get("response_url") or base), "response_url")
        poller = Poller(call, job)
        while True:
            try:
                yield from poller.wait()
            except VendorTimeout:
                cancel = doc.get("cancel_url") or f"{base}/cancel"
                check_followed(call, str(cancel), "cancel_url")
                yield Http("PUT", str(cancel), headers_for(call), optional=True)
                raise
            status = as_dict(read_json(call, (yield http_get(call, status_url))))
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
        doc = as_dict(read_json(call, (yield http_get(call, result_url))))
    out = Output(raw=doc, job_id=job)
    found = doc.get("images")
    items = found if isinstance(found, list) else [doc.get("image")] if doc.get("image") else []
    for entry in items:
        item = as_dict(entry) if not isinstance(entry, str) else {"url": entry}
        if is_ref(item.get("url")):
            out.images.append((yield from image_ref(call, item["url"], item.get("content_type"))))
    for key in ("text", "output", "description"):
        if isinstance(doc.get(key), str):
            out.text = doc[key]
            break
    return out


def _key(env: Mapping[str, str]) -> str | None:
    """FAL_KEY, or FAL_KEY_ID and FAL_KEY_SECRET joined as fal-client does."""
    if env.get("FAL_KEY"):
        return env["FAL_KEY"]
    if env.get("FAL_KEY_ID") and env.get("FAL_KEY_SECRET"):
        return f"{env['FAL_KEY_ID']}:{env['FAL_KEY_SECRET']}"
    return None


SPEC = VendorSpec(
    "fal",
    ("FAL_KEY",),
    "https://queue.fal.run",
    lambda key: (("Authorization", f"Key {key}"),),
    {"generate": plan, "edit": plan},
    aliases=("fal_ai",),
    # fal's own endpoint ids start with "fal-ai/": "fal-ai/flux/dev" means fal, app
    # "fal-ai/flux/dev" (the LiteLLM spelling is "fal_ai/fal-ai/flux/dev").
    model_prefixes=("fal-ai",),
    read_key=_key,
)
