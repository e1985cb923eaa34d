"""OpenAI API (api.openai.com and its data-residency hosts).

Image locations follow the ``openai`` SDK (multipart ``image``/``image[]``/``mask``/``markup``
via ``extract_files`` with ``array_format="brackets"``) and the OpenAPI spec
(``EditImageBodyJsonParam``, ``ImageRefParam``, ``InputImageContent``, ``input_image_mask``).
Azure OpenAI (``azure_openai``) reuses the slot tuples defined here.
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

__all__ = [
    "CHAT_SLOTS",
    "EDIT_NOTE",
    "EDIT_SLOTS",
    "FILE_SLOTS",
    "MODEL_FIELDS",
    "RESPONSES_SLOTS",
    "UPLOAD_PART_SLOTS",
    "VENDOR",
    "VISION_NOTE",
]

_ENTITY = "OpenAI Ireland Limited"
_ENTITY_NOTE = (
    "Legal entity: the OpenAI Services Agreement names an 'OpenAI Contracting Party'; for "
    "customers in the EEA and Switzerland that is OpenAI Ireland Limited (Dublin), as OpenAI's "
    "Europe terms also state. The stored copy of the agreement ends before the definition."
)
_VISION = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
_EDIT_FORMATS = frozenset({"image/png", "image/jpeg", "image/webp"})


def _region(name: str, hosts: tuple[str, ...], country: str, note: str) -> Region:
    return Region(name, hosts, country, _ENTITY, note)


Role = Literal["image", "mask"]


def _url(path: str, *, role: Role = "image") -> ImageSlot:
    """A JSON slot holding an https URL (fetched by OpenAI) or a base64 data URL."""
    return ImageSlot(
        "json", path, frozenset({"url", "data_uri"}), role=role, fetched_by_vendor=True
    )


def _file_id(path: str, *, role: Role = "image") -> ImageSlot:
    return ImageSlot("json", path, frozenset({"file_id"}), role=role)


def _file_data(path: str) -> ImageSlot:
    return ImageSlot("json", path, frozenset({"data_uri", "base64"}))


REGIONS = (
    _region(
        "global",
        ("api.openai.com", "mtls.api.openai.com"),
        "US",
        "Default host; requests are processed and stored in the United States unless the "
        "project has data residency. mtls.api.openai.com is the mTLS workload-identity host "
        f"(openai/auth/_x509.py). {_ENTITY_NOTE}",
    ),
    _region(
        "us",
        ("us.api.openai.com",),
        "US",
        "Regional processing host (Cloudflare Regional Services terminates TLS in-region).",
    ),
    _region(
        "eu",
        ("eu.api.openai.com",),
        "IE",
        "Docs: processed by OpenAI services running in the European Economic Area and "
        "Switzerland; no single country is named. IE (seat of OpenAI Ireland Limited) stands "
        "for that region; it is not documented as the processing country.",
    ),
    _region(
        "ae",
        ("ae.api.openai.com",),
        "AE",
        "Data-residency host for the United Arab Emirates (SDK data_residency='ae'). Not in the "
        "docs' list of hosts with in-region TLS termination; a region without regional "
        "processing may still process content outside it.",
    ),
    _region("au", ("au.api.openai.com",), "AU", "Data-residency host for Australia."),
    _region("in", ("in.api.openai.com",), "IN", "Data-residency host for India."),
    _region("jp", ("jp.api.openai.com",), "JP", "Data-residency host for Japan."),
)

# Every model call names its model in the body: JSON "model", or the "model" form field of a
# multipart images.edit (openai/resources/images.py).
MODEL_FIELDS = (ModelField("json", "model"), ModelField("form", "model"))

EDIT_SLOTS = (
    ImageSlot("multipart", "image", frozenset({"bytes"})),
    ImageSlot("multipart", "image[]", frozenset({"bytes"})),
    ImageSlot("multipart", "mask", frozenset({"bytes"}), role="mask"),
    ImageSlot("multipart", "markup", frozenset({"bytes"}), role="mask"),
    _url("images[*].image_url"),
    _file_id("images[*].file_id"),
    _url("mask.image_url", role="mask"),
    _file_id("mask.file_id", role="mask"),
)

CHAT_SLOTS = (
    _url("messages[*].content[?type=image_url].image_url.url"),
    _file_data("messages[*].content[?type=file].file.file_data"),
    _file_id("messages[*].content[?type=file].file.file_id"),
)

RESPONSES_SLOTS = (
    _url("input[*].content[?type=input_image].image_url"),
    _file_id("input[*].content[?type=input_image].file_id"),
    _file_data("input[*].content[?type=input_file].file_data"),
    _url("input[*].content[?type=input_file].file_url"),
    _file_id("input[*].content[?type=input_file].file_id"),
    _url("input[?type=function_call_output].output[?type=input_image].image_url"),
    _file_id("input[?type=function_call_output].output[?type=input_image].file_id"),
    _file_data("input[?type=function_call_output].output[?type=input_file].file_data"),
    _url("input[?type=computer_call_output].output.image_url"),
    _file_id("input[?type=computer_call_output].output.file_id"),
    ImageSlot(
        "json",
        "tools[?type=image_generation].input_image_mask.image_url",
        frozenset({"data_uri", "base64"}),
        role="mask",
    ),
    _file_id("tools[?type=image_generation].input_image_mask.file_id", role="mask"),
)

FILE_SLOTS = (ImageSlot("multipart", "file", frozenset({"bytes"})),)
UPLOAD_PART_SLOTS = (ImageSlot("multipart", "data", frozenset({"bytes"})),)

EDIT_NOTE = (
    "Two bodies on one path: multipart (image or image[] x up to 16, each png/webp/jpg under "
    "50 MB; mask: PNG under 4 MB with the first image's dimensions; markup: transparent PNG "
    "overlay, same dimensions, not combinable with mask) or JSON (images[] of {image_url | "
    "file_id}, image_url a URL or a base64 data URL of at most 20,971,520 characters). "
    "max_image_bytes is the JSON limit (about 15 MB decoded), the stricter of the two. markup "
    "is modelled as role='mask' because it must keep the first image's geometry."
)

VISION_NOTE = (
    "Vision limits (PNG, JPEG, WEBP, non-animated GIF; 20 MB per image; up to 500 images and "
    "50 MB of image bytes per request) come from a mirror of OpenAI's Images and vision guide."
)

VENDOR = Vendor(
    name="openai",
    display="OpenAI",
    base_url="https://api.openai.com/v1",
    regions=REGIONS,
    auth_headers=("authorization",),
    error_shape=OPENAI_ERRORS,
    models=MODEL_FIELDS,
    endpoints=(
        Endpoint(
            "images.generate",
            "POST",
            r"/v1/images/generations",
            images=(),
            note="JSON, text only (prompt, model, size, quality).",
        ),
        Endpoint(
            "images.edit",
            "POST",
            r"/v1/images/edits",
            images=EDIT_SLOTS,
            formats=_EDIT_FORMATS,
            max_image_bytes=15_728_000,
            max_images=16,
            accepts_data_uri=True,
            note=EDIT_NOTE,
        ),
        Endpoint(
            "images.variation",
            "POST",
            r"/v1/images/variations",
            images=(ImageSlot("multipart", "image", frozenset({"bytes"})),),
            formats=frozenset({"image/png"}),
            max_image_bytes=4_000_000,
            max_images=1,
            note="Retired (dall-e-2): square PNG under 4 MB. Kept so old clients are sanitized.",
        ),
        Endpoint(
            "chat.completions",
            "POST",
            r"/v1/chat/completions",
            images=CHAT_SLOTS,
            formats=_VISION,
            max_image_bytes=20_000_000,
            max_images=500,
            accepts_data_uri=True,
            note=f"{VISION_NOTE} With store=true, image inputs over 8 MB are dropped from the "
            "stored copy.",
        ),
        Endpoint(
            "responses.create",
            "POST",
            r"/v1/responses",
            images=RESPONSES_SLOTS,
            formats=_VISION,
            max_image_bytes=20_000_000,
            max_images=500,
            accepts_data_uri=True,
            note=f"{VISION_NOTE} Images also nest in function_call_output.output[] and "
            "computer_call_output. A fetched file_url is inlined as a data URL, which OpenAI may "
            "reject there (fails closed).",
        ),
        Endpoint(
            "files.upload",
            "POST",
            r"/v1/files",
            images=FILE_SLOTS,
            max_image_bytes=512_000_000,
            upload=True,
            note="Multipart part 'file' (purpose vision, user_data, ...), up to 512 MB. Files "
            "persist until deleted unless the form sets expires_after[anchor]=created_at and "
            "expires_after[seconds]=3600..2592000 (a form field, which Control cannot express).",
        ),
        Endpoint(
            "uploads.create",
            "POST",
            r"/v1/uploads",
            images=(),
            chunked_start=True,
            filename_fields=("filename",),
            note="Starts a chunked upload (JSON: purpose, filename, bytes, mime_type). Its parts "
            "are byte ranges no one can sanitize on their own, so veilpix refuses uploads that "
            "declare an image; upload images with files.create or send them inline.",
        ),
        Endpoint(
            "uploads.parts",
            "POST",
            r"/v1/uploads/[^/]+/parts",
            images=UPLOAD_PART_SLOTS,
            upload=True,
            note="Multipart part 'data' is a byte range of one file, not a whole image: it "
            "cannot be sanitized on its own.",
        ),
    ),
    controls=(
        Control(
            "store=false",
            "request",
            "Do not keep the response (Responses defaults to store=true and keeps data at "
            "least 30 days; Chat Completions defaults to false). veilpix sets it explicitly.",
            json_field=("store", False),
            operations=frozenset({"responses.create", "chat.completions"}),
            source="https://developers.openai.com/api/docs/guides/your-data",
        ),
        Control(
            "regional endpoint",
            "request",
            "Send to us/eu/ae/au/in/jp.api.openai.com. Needs a data-residency project "
            "(Enterprise, ZDR-eligible; set at project creation) or per-request residency "
            "enabled on a global project; the model and endpoint must be eligible.",
            source="https://developers.openai.com/api/docs/guides/data-residency",
        ),
        Control(
            "zero data retention",
            "account",
            "Organisation/project setting granted by OpenAI; forces store=false for Responses "
            "and Chat. Image and file inputs may still be scanned (CSAM) and retained in rare "
            "cases.",
            source="https://developers.openai.com/api/docs/guides/your-data",
        ),
        Control(
            "modified abuse monitoring",
            "account",
            "Organisation setting granted by OpenAI; without it abuse-monitoring logs are kept "
            "up to 30 days.",
            source="https://developers.openai.com/api/docs/guides/your-data",
        ),
        Control(
            "no training on API data",
            "account",
            "The default since 2023-03-01: API data is not used for training unless the "
            "organisation opts in (data sharing). No request header or parameter exists for it.",
            source="https://developers.openai.com/api/docs/guides/your-data",
        ),
    ),
    env_key=("OPENAI_API_KEY",),
    env_base_url="OPENAI_BASE_URL",
    sources=(
        "openai 3.57.0 wheel: openai/_client.py, openai/_data_residency.py, "
        "openai/auth/_x509.py, openai/resources/images.py, openai/_utils/_utils.py, "
        "openai/lib/_client_auth.py, openai/types/responses/response_create_params.py, "
        "openai/types/chat/completion_create_params.py",
        "https://github.com/openai/openai-openapi (openapi.yaml: /images/edits, "
        "EditImageBodyJsonParam, ImageRefParam, InputImageContent, CreateFileRequest, "
        "AddUploadPartRequest, FunctionCallOutputItemParam, input_image_mask)",
        "https://developers.openai.com/api/docs/guides/your-data",
        "https://developers.openai.com/api/docs/guides/data-residency",
        "https://help.openai.com/en/articles/10503543-data-residency-for-the-openai-api",
        "https://openai-hd4n6.mintlify.app/docs/guides/images (mirror of the Images and "
        "vision guide)",
        "https://openai.com/policies/services-agreement/",
    ),
)
