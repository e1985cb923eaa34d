"""Anthropic in :class:`veilpix.Client`: describe.

``POST /v1/messages`` with base64 ``image`` blocks; ``x-api-key`` and ``anthropic-version``.
"""

from __future__ import annotations

from typing import Any

from veilpix.client._planning import as_dict, no_mask, post_json, read_json
from veilpix.client._steps import Call, Output, Plan, VendorSpec

__all__ = ["SPEC"]

# anthropic 2.14.0 (anthropic/_constants.py) sends this version; older SDKs sent 2023-06-01.
API_VERSION = "2026-10-21"


def describe(call: Call) -> Plan:
    no_mask(call)
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
    reply = yield post_json(call, f"{call.base_url}/v1/messages", body)
    doc = as_dict(read_json(call, reply))
    texts = [
        str(block.get("text", ""))
        for block in doc.get("content") or []
        if as_dict(block).get("type") == "text"
    ]
    return Output(
        text="".join(texts), raw=doc, finish_reason=doc.get("stop_reason"), job_id=doc.get("id")
    )


SPEC = VendorSpec(
    "anthropic",
    ("ANTHROPIC_API_KEY",),
    "https://api.anthropic.com",
    lambda key: (("x-api-key", key), ("anthropic-version", API_VERSION)),
    {"describe": describe},
)
