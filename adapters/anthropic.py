"""Anthropic Messages API (api.anthropic.com).

Image blocks are ``{"type": "image", "source": {...}}`` with a base64, url or file source
(``anthropic`` SDK types ``image_block_param``, ``base64_image_source_param``,
``url_image_source_param``, ``file_image_source_param``); they also nest inside
``tool_result`` blocks.
"""

from __future__ import annotations

from veilpix.adapters._base import (
    Control,
    Endpoint,
    ErrorShape,
    ImageSlot,
    ModelField,
    Region,
    Vendor,
)

__all__ = ["VENDOR"]


def _image_blocks(blocks: str) -> tuple[ImageSlot, ...]:
    return (
        ImageSlot(
            "json",
            f"{blocks}[?type=image].source.data",
            frozenset({"base64"}),
            mime_path="media_type",
        ),
        ImageSlot(
            "json", f"{blocks}[?type=image].source.url", frozenset({"url"}), fetched_by_vendor=True
        ),
        ImageSlot("json", f"{blocks}[?type=image].source.file_id", frozenset({"file_id"})),
    )


# Anthropic's error body (docs.anthropic.com/en/api/errors): its SDK raises
# PermissionDeniedError for a 403, and so on.
_ERRORS = ErrorShape(
    {"type": "error", "error": {"type": "{kind}", "message": "{message}"}},
    kinds={403: "permission_error", 408: "timeout_error", 503: "overloaded_error"},
    kind="invalid_request_error",
)

VENDOR = Vendor(
    name="anthropic",
    display="Anthropic",
    base_url="https://api.anthropic.com",
    regions=(
        Region(
            "global",
            ("api.anthropic.com",),
            "US",
            "Anthropic Ireland, Limited",
            "No regional hosts; inference_geo defaults to 'global' (no documented country) and "
            "can be 'us'; no EU option on the first-party API. US (Anthropic's home country) is "
            "recorded. Legal entity: the Commercial Terms contract EEA, Swiss and UK customers "
            "with Anthropic Ireland, Limited (read via a secondary summary of the terms).",
        ),
    ),
    auth_headers=("x-api-key", "authorization"),
    error_shape=_ERRORS,
    models=(ModelField("json", "model"),),
    endpoints=(
        Endpoint(
            "messages.create",
            "POST",
            r"/v1/messages",
            images=_image_blocks("messages[*].content")
            + _image_blocks("messages[*].content[?type=tool_result].content"),
            formats=frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"}),
            max_images=100,
            max_request_bytes=32_000_000,
            note="Up to 100 images per request on 200k-context models (600 on others); max "
            "8000x8000 px (2000x2000 px above 20 images); 32 MB per request; long edges over "
            "1568 px are downscaled by Anthropic. The 5 MB per-image limit is unverified and not "
            "set. Whether 'system' can hold images is unverified.",
        ),
        Endpoint(
            "files.upload",
            "POST",
            r"/v1/files",
            images=(ImageSlot("multipart", "file", frozenset({"bytes"})),),
            upload=True,
            note="Beta (anthropic-beta: files-api-2025-04-14). Files are kept until deleted, "
            "even under zero data retention, unless the form sets expires_in_seconds "
            "(3600..7776000; a form field, which Control cannot express).",
        ),
    ),
    controls=(
        Control(
            "inference_geo=us",
            "request",
            "Run inference in the US (Opus 4.6 and later; the response's usage.inference_geo "
            "confirms). Only meaningful when the policy asks for US processing: there is no EU "
            "value, and the default 'global' names no country.",
            json_field=("inference_geo", "us"),
            operations=frozenset({"messages.create"}),
            when_region="us",
            source="https://platform.claude.com/docs/en/manage-claude/data-residency",
        ),
        Control(
            "workspace geo",
            "account",
            "The workspace's geo setting controls storage and endpoint processing such as "
            "image transcoding.",
            source="https://platform.claude.com/docs/en/manage-claude/data-residency",
        ),
        Control(
            "zero data retention",
            "account",
            "By agreement with Anthropic for eligible APIs; Files API uploads stay until "
            "deleted and safety-classifier results are kept.",
            source="https://privacy.claude.com/en/articles/8956058",
        ),
        Control(
            "no training (commercial)",
            "account",
            "Contractual default under the Commercial Terms: customer content from the API is "
            "not used for training. Default retention about 30 days. Nothing to set.",
            source="https://platform.claude.com/docs/en/manage-claude/api-and-data-retention",
        ),
    ),
    env_key=("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
    env_base_url="ANTHROPIC_BASE_URL",
    sources=(
        "anthropic 2.14.0 wheel: anthropic/_client.py, anthropic/_constants.py, "
        "anthropic/types/{image_block_param,base64_image_source_param,url_image_source_param,"
        "file_image_source_param,message_create_params}.py, anthropic/resources/beta/files.py",
        "https://github.com/anthropics/anthropic-sdk-python",
        "https://platform.claude.com/docs/en/build-with-claude/vision",
        "https://platform.claude.com/docs/en/manage-claude/data-residency",
        "https://platform.claude.com/docs/en/manage-claude/api-and-data-retention",
        "https://privacy.claude.com/en/articles/8956058",
        "https://www.anthropic.com/legal/commercial-terms",
    ),
)
