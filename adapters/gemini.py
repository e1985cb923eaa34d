"""Google Gemini Developer API (generativelanguage.googleapis.com).

Content parts carry images as ``inlineData {mimeType, data}`` (base64) or ``fileData
{mimeType, fileUri}``; the SDK writes camelCase, proto3-JSON parsers also accept snake_case,
so both spellings are listed. :func:`content_slots` is shared with Vertex AI (``vertex``).
"""

from __future__ import annotations

from veilpix.adapters._base import (
    GOOGLE_ERRORS,
    Control,
    Endpoint,
    ImageSlot,
    ModelField,
    Region,
    Vendor,
)

__all__ = ["VENDOR", "content_slots"]

FORMATS = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
_VERSION = r"/v1(?:beta|alpha)?"


def content_slots(parts: str) -> tuple[ImageSlot, ...]:
    """The image slots of the Content parts at JSON path ``parts`` (e.g. ``contents[*].parts[*]``).

    ``fileData.fileUri`` is a Files-API URI, a registered ``gs://`` object or (since
    2026-01-12) a public or signed https URL that Google downloads.
    """
    return (
        ImageSlot("json", f"{parts}.inlineData.data", frozenset({"base64"}), mime_path="mimeType"),
        ImageSlot(
            "json", f"{parts}.inline_data.data", frozenset({"base64"}), mime_path="mime_type"
        ),
        ImageSlot(
            "json",
            f"{parts}.fileData.fileUri",
            frozenset({"url", "file_id"}),
            mime_path="mimeType",
            fetched_by_vendor=True,
        ),
        ImageSlot(
            "json",
            f"{parts}.file_data.file_uri",
            frozenset({"url", "file_id"}),
            mime_path="mime_type",
            fetched_by_vendor=True,
        ),
    )


def generate_slots() -> tuple[ImageSlot, ...]:
    """Every place a generateContent body holds Content parts."""
    return (
        content_slots("contents[*].parts[*]")
        + content_slots("contents[*].parts[*].functionResponse.parts[*]")
        + content_slots("contents[*].parts[*].function_response.parts[*]")
        + content_slots("systemInstruction.parts[*]")
        + content_slots("system_instruction.parts[*]")
    )


_ENTITY = "Google LLC"
_REGION_NOTE = (
    "No regional hosts for the Developer API (regional or EU residency means Vertex AI); the "
    "processing location is not documented, so US (Google's home country) is recorded. Legal "
    "entity: the Google APIs Terms of Service name Google LLC unless additional terms say "
    "otherwise, and the Gemini API Additional Terms name no other entity; the paid tier is "
    "billed through a Cloud Billing account."
)

VENDOR = Vendor(
    name="gemini",
    display="Google Gemini API",
    base_url="https://generativelanguage.googleapis.com",
    regions=(
        Region("global", ("generativelanguage.googleapis.com",), "US", _ENTITY, _REGION_NOTE),
    ),
    # an API key, or an OAuth access token (Authorization: Bearer)
    auth_headers=("x-goog-api-key", "authorization"),
    auth_query=("key",),
    error_shape=GOOGLE_ERRORS,
    # models/{model}:generateContent (and :streamGenerateContent, :predict, ...); the
    # Interactions API and cached contents name it in the body.
    models=(
        ModelField("path", rf"{_VERSION}/models/(?P<model>[^/:]+):[A-Za-z]+"),
        ModelField("json", "model"),
    ),
    endpoints=(
        Endpoint(
            "models.generate_content",
            "POST",
            rf"{_VERSION}/models/[^/:]+:(?:generateContent|streamGenerateContent)",
            images=generate_slots(),
            formats=FORMATS,
            max_request_bytes=100_000_000,
            note="Also native image generation and editing (responseModalities IMAGE); images "
            "nest in functionResponse parts and systemInstruction. Inline payload limit raised "
            "from 20 MB to 100 MB on 2026-01-12; image count per prompt is model-dependent. "
            "fileData URIs of the Files API are references to uploads, not fetches.",
        ),
        Endpoint(
            "cached_contents.create",
            "POST",
            rf"{_VERSION}/cachedContents",
            images=content_slots("contents[*].parts[*]")
            + content_slots("systemInstruction.parts[*]")
            + content_slots("system_instruction.parts[*]"),
            formats=FORMATS,
            note="Same Content shape as generateContent.",
        ),
        Endpoint(
            "batches.create",
            "POST",
            rf"{_VERSION}/models/[^/:]+:batchGenerateContent",
            images=content_slots(
                "batch.inputConfig.requests.requests[*].request.contents[*].parts[*]"
            )
            + content_slots("batch.input_config.requests.requests[*].request.contents[*].parts[*]"),
            formats=FORMATS,
            note="Batch API inline requests. The research notes name the inline requests but "
            "not this path or nesting; both follow the Batch API reference and need checking.",
        ),
        Endpoint(
            "interactions.create",
            "POST",
            rf"{_VERSION}/interactions",
            images=(
                ImageSlot(
                    "json", "input[?type=image].data", frozenset({"base64"}), mime_path="mime_type"
                ),
                ImageSlot(
                    "json", "input[?type=image].uri", frozenset({"url"}), fetched_by_vendor=True
                ),
            ),
            formats=FORMATS | frozenset({"image/gif", "image/bmp", "image/tiff"}),
            note="Interactions API (client.interactions.create): image blocks {type: image, "
            "data, mime_type, uri}; stores state unless store=false.",
        ),
        Endpoint(
            "files.upload",
            "POST",
            rf"/upload{_VERSION}/files",
            images=(ImageSlot("raw", "", frozenset({"bytes"})),),
            formats=FORMATS,
            max_image_bytes=2_000_000_000,
            upload=True,
            declared_length_headers=("x-goog-upload-header-content-length",),
            filename_fields=("file.display_name", "file.displayName"),
            note="Resumable upload: the 'start' request (X-Goog-Upload-Command: start) carries "
            "JSON metadata only; the bytes follow in the 'upload, finalize' request to the "
            "returned X-Goog-Upload-URL (same path, upload_id query). Files API: 2 GB per file, "
            "20 GB per project, files kept 48 hours.",
        ),
        Endpoint(
            "files.upload",
            "PUT",
            rf"/upload{_VERSION}/files",
            images=(ImageSlot("raw", "", frozenset({"bytes"})),),
            formats=FORMATS,
            max_image_bytes=2_000_000_000,
            upload=True,
            note="The same resumable upload when the bytes are sent with PUT.",
        ),
        Endpoint(
            "models.predict",
            "POST",
            rf"{_VERSION}/models/[^/:]+:predict",
            images=(),
            note="Imagen text-to-image (instances[0].prompt), text only. Deprecated: disabled in "
            "google-genai since 2026-08-21, models shutting down.",
        ),
    ),
    controls=(
        Control(
            "store=false",
            "request",
            "Interactions API keeps interaction state by default; store=false turns it off.",
            json_field=("store", False),
            operations=frozenset({"interactions.create"}),
            source="google-genai 3.6.1 wheel: google/genai/_gaos/types/interactions/"
            "createmodelinteraction.py",
        ),
        Control(
            "regional endpoint",
            "unavailable",
            "The Developer API has one global host; regional processing needs Vertex AI.",
            source="google-genai 3.6.1 wheel: google/genai/_base_url.py",
        ),
        Control(
            "paid tier (no training)",
            "account",
            "Use a billing-enabled (paid) project: paid-tier prompts, files and responses are "
            "not used to improve products. Unpaid use may be used and read by human reviewers "
            "(except for users in the EEA, Switzerland and the UK, where paid rules apply).",
            source="https://ai.google.dev/gemini-api/terms",
        ),
        Control(
            "zero data retention",
            "account",
            "Project-level ZDR on request (content cleared before abuse logging, which otherwise "
            "keeps prompts and outputs 55 days). Do not configure Live API session resumption "
            "(24 h) and avoid or delete Files API uploads (48 h).",
            source="https://ai.google.dev/gemini-api/docs/zdr",
        ),
        Control(
            "logs and datasets sharing off",
            "account",
            "Logging of API calls for billing-enabled projects is an owner opt-in; logs expire "
            "after 55 days unless added to datasets. Keep it off.",
            source="https://ai.google.dev/gemini-api/docs/logs-policy",
        ),
        Control(
            "grounding without retention",
            "unavailable",
            "Grounding with Google Search or Maps stores data 30 days and cannot be turned off.",
            source="https://ai.google.dev/gemini-api/docs/zdr",
        ),
    ),
    env_key=("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    env_base_url="GOOGLE_GEMINI_BASE_URL",
    sources=(
        "google-genai 3.6.1 wheel: google/genai/_api_client.py, _base_url.py, types.py, "
        "models.py, files.py, _extra_utils.py, _gaos/interactions.py, "
        "_gaos/types/interactions/{imagecontent,createmodelinteraction}.py",
        "https://github.com/googleapis/python-genai (commit 43ef621: disable GenerateImages "
        "for the Gemini API)",
        "https://ai.google.dev/gemini-api/docs/zdr",
        "https://ai.google.dev/gemini-api/docs/usage-policies",
        "https://ai.google.dev/gemini-api/docs/logs-policy",
        "https://ai.google.dev/gemini-api/docs/file-input-methods",
        "https://ai.google.dev/gemini-api/docs/oauth",
        "https://ai.google.dev/gemini-api/terms",
        "https://developers.google.com/terms",
        "blog.google post 'Increased file size limits' on the Gemini API (blog.google/.../gemini-api-new-file-limits)",
    ),
)
