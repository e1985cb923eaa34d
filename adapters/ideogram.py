"""Ideogram API (api.ideogram.ai); image endpoints are multipart/form-data.

v1 endpoints (``/v1/ideogram-v3/...``, ``/v1/ideogram-v4/remix``), the legacy root endpoints
(``/edit``, ``/remix``, ``/upscale``, ``/describe``) and the v2 endpoints
(``/v2/image/{remix,precise-edit}/{model}``) from the API reference. The v3 generate file
fields come from community SDKs.
"""

from __future__ import annotations

from typing import Literal

from veilpix.adapters._base import OPENAI_ERRORS, Endpoint, ImageSlot, ModelField, Region, Vendor

__all__ = ["VENDOR"]

_FORMATS = frozenset({"image/jpeg", "image/png", "image/webp"})


def _part(name: str, role: Literal["image", "mask"] = "image") -> ImageSlot:
    return ImageSlot("multipart", name, frozenset({"bytes"}), role=role)


def _endpoint(
    operation: str,
    path: str,
    slots: tuple[ImageSlot, ...],
    note: str,
    *,
    max_image_bytes: int | None = 25_000_000,
) -> Endpoint:
    return Endpoint(
        operation,
        "POST",
        path,
        images=slots,
        formats=_FORMATS,
        max_image_bytes=max_image_bytes,
        note=note,
    )


_V1 = "JPEG, PNG or WebP, up to 25 MB per image (older docs: 10 MB)."

VENDOR = Vendor(
    name="ideogram",
    display="Ideogram",
    base_url="https://api.ideogram.ai",
    regions=(
        Region(
            "global",
            ("api.ideogram.ai",),
            "CA",
            "Ideogram AI, Inc.",
            "No regional endpoints; the processing location is not documented, so CA is "
            "recorded (Ideogram is based in Toronto and its terms choose Ontario law). Legal "
            "entity: the Developer API Agreement is with Ideogram AI, Inc.; no EEA entity.",
        ),
    ),
    auth_headers=("api-key",),
    error_shape=OPENAI_ERRORS,
    # v2 paths and v1 paths name the model; the legacy endpoints name it in "image_request"
    # (a JSON object, or a form field holding one).
    models=(
        ModelField("path", r"/v2/image/(?:remix|precise-edit)/(?P<model>[^/]+)"),
        ModelField("path", r"/v1/(?P<model>ideogram-v[0-9][A-Za-z0-9._-]*)/.*"),
        ModelField("json", "model"),
        ModelField("json", "image_request.model"),
        ModelField("form", "model"),
        ModelField("form", "image_request.model"),
    ),
    endpoints=(
        _endpoint(
            "v3.generate",
            r"/v1/ideogram-v3/generate",
            (
                _part("style_reference_images"),
                _part("character_reference_images"),
                _part("character_reference_images_mask", "mask"),
            ),
            f"Text to image with optional reference images (field names from community "
            f"SDKs). {_V1}",
        ),
        _endpoint(
            "v3.inpaint",
            r"/v1/ideogram-v3/(?:inpaint|edit)",
            (_part("image"), _part("mask", "mask")),
            f"Inpainting (formerly 'edit'). {_V1}",
        ),
        _endpoint(
            "v3.edit",
            r"/v1/ideogram-v3/(?:remix|reframe|replace-background)",
            (_part("image"),),
            _V1,
        ),
        _endpoint(
            "v4.remix", r"/v1/ideogram-v4/remix", (_part("image"),), f"With text_prompt. {_V1}"
        ),
        _endpoint(
            "legacy.edit",
            r"/edit",
            (_part("image_file"), _part("mask", "mask")),
            "Legacy endpoint; 10 MB per image assumed (older docs).",
            max_image_bytes=10_000_000,
        ),
        _endpoint(
            "legacy.image",
            r"/(?:remix|upscale|describe)",
            (_part("image_file"),),
            "Legacy endpoints; image_file plus an image_request JSON string; 10 MB per image "
            "assumed (older docs).",
            max_image_bytes=10_000_000,
        ),
        _endpoint(
            "v2.remix",
            r"/v2/image/remix/[^/]+",
            (_part("image"), _part("reference_images")),
            "Up to 4 reference_images; optional async (GET /v2/generations/{id}); "
            "?dry_run=true prices without storing.",
            max_image_bytes=None,
        ),
        _endpoint(
            "v2.precise_edit",
            r"/v2/image/precise-edit/[^/]+",
            (_part("image"), _part("mask", "mask"), _part("reference_images")),
            "Bounded by 16,777,216 px; ?dry_run=true prices without storing.",
            max_image_bytes=None,
        ),
    ),
    controls=(),
    sources=(
        "https://developer.ideogram.ai/v1/api-reference/edit-images/inpaint-v3.md",
        "https://developer.ideogram.ai/v1/api-reference/edit-images/remix-v3.md",
        "https://developer.ideogram.ai/api-reference/edit-images/remix-v4.md",
        "https://developer.ideogram.ai/api-reference/images/remix.md",
        "https://developer.ideogram.ai/api-reference/images/precise-edit/ideogram-4-6.md",
        "https://about.ideogram.ai/api-tos",
    ),
)
