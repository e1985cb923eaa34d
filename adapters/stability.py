"""Stability AI REST API v2beta (api.stability.ai); every endpoint is multipart/form-data.

Field names and endpoints follow Stability's own ComfyUI node (``Stability-AI/ComfyUI-SAI_API``
``stability_api.py``) and the request schemas of the API reference.
"""

from __future__ import annotations

from typing import Literal

from veilpix.adapters._base import (
    OPENAI_ERRORS,
    Control,
    Endpoint,
    ImageSlot,
    ModelField,
    Region,
    Vendor,
)

__all__ = ["VENDOR"]

_BASE = r"/v2beta/stable-image"
_FORMATS = frozenset({"image/jpeg", "image/png", "image/webp"})
_MAX_REQUEST = 10 * 1024 * 1024  # HTTP 413 above 10 MiB


def _part(name: str, role: Literal["image", "mask"] = "image") -> ImageSlot:
    return ImageSlot("multipart", name, frozenset({"bytes"}), role=role)


def _endpoint(operation: str, path: str, slots: tuple[ImageSlot, ...], note: str) -> Endpoint:
    return Endpoint(
        operation,
        "POST",
        f"{_BASE}/{path}",
        images=slots,
        formats=_FORMATS,
        max_request_bytes=_MAX_REQUEST,
        note=note,
    )


_PIXELS = "Every side at least 64 px; 4,096 to 9,437,184 px in total."

VENDOR = Vendor(
    name="stability",
    display="Stability AI",
    base_url="https://api.stability.ai",
    regions=(
        Region(
            "global",
            ("api.stability.ai",),
            "GB",
            "Stability AI Ltd",
            "No regional endpoints documented; the processing location is not documented, so GB "
            "(home country of Stability AI Ltd, London) is recorded. Legal entity: the Terms of "
            "Service contract UK, EU and Swiss customers with Stability AI Ltd.",
        ),
    ),
    auth_headers=("authorization",),
    error_shape=OPENAI_ERRORS,
    # generate/sd3 takes a "model" form field (sd3.5-large, ...); otherwise the path names the
    # model family. Edit, upscale and control endpoints name none.
    models=(
        ModelField("form", "model"),
        ModelField("path", rf"{_BASE}/generate/(?P<model>sd3|ultra|core)"),
    ),
    endpoints=(
        _endpoint(
            "generate",
            r"generate/(?:ultra|sd3)",
            (_part("image"),),
            "Text to image; the optional image (with strength, or mode=image-to-image for sd3) "
            "makes it image to image.",
        ),
        _endpoint("generate.core", r"generate/core", (), "Text to image only."),
        _endpoint(
            "edit.masked",
            r"edit/(?:erase|inpaint)",
            (_part("image"), _part("mask", "mask")),
            f"Optional mask. {_PIXELS}",
        ),
        _endpoint(
            "edit",
            r"edit/(?:outpaint|search-and-replace|search-and-recolor|remove-background)",
            (_part("image"),),
            _PIXELS,
        ),
        _endpoint(
            "edit.relight",
            r"edit/replace-background-and-relight",
            (_part("subject_image"), _part("background_reference"), _part("light_reference")),
            "Asynchronous: the result comes from GET /v2beta/results/{id}.",
        ),
        _endpoint(
            "upscale",
            r"upscale/(?:fast|conservative|creative)",
            (_part("image"),),
            "fast: 32..1,536 px per side and 1,024..1,048,576 px in total; creative: "
            "4,096..1,048,576 px in total, asynchronous (GET /v2beta/results/{id}).",
        ),
        _endpoint(
            "control",
            r"control/(?:sketch|structure|style)",
            (_part("image"),),
            _PIXELS,
        ),
        _endpoint(
            "control.style_transfer",
            r"control/style-transfer",
            (_part("init_image"), _part("style_image")),
            "Sides 64..16,383 px, aspect ratio 1:2.5 to 2.5:1.",
        ),
    ),
    controls=(
        Control(
            "per-request opt-out",
            "unavailable",
            "No request parameter or header limits storage or training.",
            source="https://stability.ai/terms-of-service",
        ),
        Control(
            "training opt-out by email",
            "account",
            "A third-party reading of the privacy policy says prompts, inputs and outputs may "
            "be used for training, with an opt-out by emailing privacy@stability.ai or through "
            "enterprise terms. Unverified against the current API terms.",
            source="https://stability.ai/privacy-policy",
        ),
    ),
    env_key=("STABILITY_API_KEY",),  # the name the Stability docs and SDKs use
    sources=(
        "https://github.com/Stability-AI/ComfyUI-SAI_API (stability_api.py)",
        "https://platform.stability.ai/docs/api-reference",
        "https://stability.ai/terms-of-service",
        "https://stability.ai/privacy-policy",
    ),
)
