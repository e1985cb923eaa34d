"""Black Forest Labs FLUX API (api.bfl.ai and its regional hosts).

Every call is JSON and asynchronous: ``POST /v1/{model}`` returns ``{id, polling_url}``;
results come from ``GET /v1/get_result`` (always follow the returned ``polling_url``). Image
inputs are top-level, model-specific fields; models not in the table are covered by a
catch-all endpoint whose slot is ``**``.
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

_ENTITY = "Black Forest Labs Inc."
_ENTITY_NOTE = (
    "Legal entity: the Developer Terms of Service are with Black Forest Labs Inc.; no EEA "
    "contracting entity is named."
)


def _field(name: str, *, urls: bool = True, role: Literal["image", "mask"] = "image") -> ImageSlot:
    """A top-level field holding base64 image data or (``urls``) an https URL BFL downloads."""
    if urls:
        return ImageSlot(
            "json", name, frozenset({"url", "base64"}), role=role, fetched_by_vendor=True
        )
    return ImageSlot("json", name, frozenset({"base64"}), role=role)


def _numbered(count: int) -> tuple[ImageSlot, ...]:
    return (_field("input_image"), *(_field(f"input_image_{i}") for i in range(2, count + 1)))


def _model(operation: str, path: str, images: tuple[ImageSlot, ...], note: str) -> Endpoint:
    return Endpoint(operation, "POST", path, images=images, note=note)


_SIZE = "Input and output 64x64 px to 4 MP, multiples of 16."

VENDOR = Vendor(
    name="bfl",
    display="Black Forest Labs (FLUX)",
    base_url="https://api.bfl.ai",
    regions=(
        Region(
            "global",
            ("api.bfl.ai",),
            "US",
            _ENTITY,
            "Global multi-cluster host; where it processes is not documented, so US (home of "
            f"the contracting entity) is recorded. {_ENTITY_NOTE}",
        ),
        Region(
            "eu",
            ("api.eu.bfl.ai",),
            "DE",
            _ENTITY,
            "EU multi-cluster host ('GDPR compliant'); no country is named. DE (BFL's base in "
            "Freiburg) stands for the EU and is an assumption.",
        ),
        Region("us", ("api.us.bfl.ai",), "US", _ENTITY, "US multi-cluster host."),
        Region(
            "eu1",
            ("api.eu1.bfl.ai",),
            "DE",
            _ENTITY,
            "Single-cluster EU host (used for fine-tuning); no country is named, DE is an "
            "assumption as for 'eu'.",
        ),
        Region(
            "us1",
            ("api.us1.bfl.ai",),
            "US",
            _ENTITY,
            "Single-cluster US host (used for fine-tuning).",
        ),
        Region(
            "legacy",
            ("api.bfl.ml",),
            "US",
            _ENTITY,
            "Legacy host; treated like the global host.",
        ),
    ),
    auth_headers=("x-key",),
    error_shape=OPENAI_ERRORS,
    # POST /v1/{model}; only FLUX names count (get_result, finetune and the like are not models).
    models=(ModelField("path", r"/v1/(?P<model>flux[A-Za-z0-9._-]*)"),),
    endpoints=(
        _model(
            "flux2.edit",
            r"/v1/flux-2-(?:pro|max|flex)",
            _numbered(8),
            f"Text to image, or editing with input_image .. input_image_8 (URL or base64). {_SIZE}",
        ),
        _model(
            "flux2.edit",
            r"/v1/flux-2-klein-(?:4b|9b)",
            _numbered(4),
            f"FLUX.2 klein: up to 4 input images (URL or base64). {_SIZE}",
        ),
        _model(
            "kontext",
            r"/v1/flux-kontext(?:-pro|-max)?",
            _numbered(4),
            f"input_image (URL or base64); input_image_2..4 are experimental. {_SIZE}",
        ),
        _model(
            "fill",
            r"/v1/flux-pro-1\.0-fill",
            (_field("image", urls=False), _field("mask", urls=False, role="mask")),
            "image (base64; may carry the mask as alpha) and mask (base64). Whether URLs are "
            "accepted is unverified; veilpix treats the fields as base64.",
        ),
        _model(
            "expand",
            r"/v1/flux-pro-1\.0-expand",
            (_field("image", urls=False),),
            "image (base64); URL support unverified.",
        ),
        _model(
            "control",
            r"/v1/flux-pro-1\.0-(?:canny|depth)",
            (_field("control_image", urls=False),),
            "control_image (base64); URL support unverified.",
        ),
        _model(
            "generate",
            r"/v1/flux-pro-1\.1-ultra",
            (_field("image_prompt", urls=False),),
            "Text to image. The optional image_prompt (base64) is unverified; listed so it is "
            "sanitized if present.",
        ),
        _model(
            "generate",
            r"/v1/flux-(?:pro-1\.1|dev|pro)",
            (),
            "Text to image only.",
        ),
        Endpoint(
            "video",
            "POST",
            r"/v1/flux-3-video",
            images=(
                ImageSlot(
                    "json", "keyframes.**", frozenset({"url", "base64"}), fetched_by_vendor=True
                ),
            ),
            max_image_bytes=20_000_000,
            note="FLUX 3 video: keyframes as URL or base64 PNG/JPEG/WebP, up to 20 MB each.",
        ),
        Endpoint(
            "model.other",
            "POST",
            r"/v1/[A-Za-z0-9._-]+",
            images=(ImageSlot("json", "**", frozenset({"url", "base64"}), fetched_by_vendor=True),),
            note="Any other model endpoint: its fields are not in veilpix's table, hence '**'.",
        ),
    ),
    controls=(
        Control(
            "regional endpoint",
            "request",
            "Send to api.eu.bfl.ai (EU) or api.us.bfl.ai (US) instead of the global host.",
            source="https://docs.bfl.ai/integration_guidelines",
        ),
    ),
    env_key=("BFL_API_KEY",),
    sources=(
        "https://github.com/black-forest-labs/skills (skills/bfl-api/SKILL.md, "
        "skills/bfl-api/references/endpoints.md, "
        "skills/flux3-generate/references/api-quick-reference.md)",
        "https://docs.bfl.ai/integration_guidelines",
        "https://docs.bfl.ai/quick_start/generating_images",
        "https://api.bfl.ai/openapi.json",
        "https://bfl.ai/legal/developer-terms-of-service",
    ),
)
