"""Azure OpenAI (Microsoft Foundry): per-resource hosts, OpenAI body shapes.

Paths come from the ``openai`` SDK's ``AzureOpenAI`` client (``openai/lib/azure.py``): the
client's base is ``{endpoint}/openai``; the ``_deployments_endpoints`` (chat/completions,
images/generations, images/edits, ...) get ``/deployments/{deployment}`` inserted, everything
else (responses, files, uploads) is appended as is. The v1 API (``{endpoint}/openai/v1/``)
is used with the plain ``OpenAI`` client. Bodies are the OpenAI ones.
"""

from __future__ import annotations

from veilpix.adapters._base import OPENAI_ERRORS, Control, Endpoint, ModelField, Region, Vendor
from veilpix.adapters.openai import (
    CHAT_SLOTS,
    EDIT_NOTE,
    EDIT_SLOTS,
    FILE_SLOTS,
    MODEL_FIELDS,
    RESPONSES_SLOTS,
    UPLOAD_PART_SLOTS,
    VISION_NOTE,
)

__all__ = ["VENDOR"]

_ENTITY = "Microsoft Ireland Operations Limited"
_NOTE = (
    "Processing happens in the region of the customer's Azure resource, further shaped by the "
    "deployment type (Standard/regional, Global, DataZone EU/US); none of that is visible in "
    "the host name. US (Microsoft's home country) is recorded as a placeholder. Legal entity: "
    "Microsoft's cloud agreements for EEA customers are with Microsoft Ireland Operations "
    "Limited (secondary source)."
)
_DEPLOY = r"/openai/(?:deployments/[^/]+|v1)"  # legacy deployment path or the v1 API
_PLAIN = r"/openai(?:/v1)?"  # non-deployment operations
_VISION = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})

VENDOR = Vendor(
    name="azure",
    display="Azure OpenAI",
    base_url="https://{resource}.openai.azure.com/openai/v1",
    regions=(
        Region(
            "resource",
            ("*.openai.azure.com", "*.cognitiveservices.azure.com", "*.services.ai.azure.com"),
            "US",
            _ENTITY,
            f"{_NOTE} The cognitiveservices and services.ai host forms (Foundry resources) are "
            "unverified variants.",
        ),
    ),
    auth_headers=("api-key", "authorization"),
    error_shape=OPENAI_ERRORS,
    # The legacy API names the deployment (the model as the resource calls it) in the path;
    # the v1 API names it in the body, as OpenAI does.
    models=(ModelField("path", r"/openai/deployments/(?P<model>[^/]+)/.*"), *MODEL_FIELDS),
    endpoints=(
        Endpoint(
            "images.generate",
            "POST",
            rf"{_DEPLOY}/images/generations",
            images=(),
            note="JSON, text only. Legacy paths take ?api-version=.",
        ),
        Endpoint(
            "images.edit",
            "POST",
            rf"{_DEPLOY}/images/edits",
            images=EDIT_SLOTS,
            formats=frozenset({"image/png", "image/jpeg", "image/webp"}),
            max_image_bytes=15_728_000,
            max_images=16,
            accepts_data_uri=True,
            note=f"Same bodies as OpenAI. {EDIT_NOTE}",
        ),
        Endpoint(
            "chat.completions",
            "POST",
            rf"{_DEPLOY}/chat/completions",
            images=CHAT_SLOTS,
            formats=_VISION,
            max_image_bytes=20_000_000,
            max_images=500,
            accepts_data_uri=True,
            note=f"Same body as OpenAI; limits assumed equal. {VISION_NOTE}",
        ),
        Endpoint(
            "responses.create",
            "POST",
            rf"{_PLAIN}/responses",
            images=RESPONSES_SLOTS,
            formats=_VISION,
            max_image_bytes=20_000_000,
            max_images=500,
            accepts_data_uri=True,
            note="Same body as OpenAI (input_image, input_file, nested tool outputs).",
        ),
        Endpoint(
            "files.upload",
            "POST",
            rf"{_PLAIN}/files",
            images=FILE_SLOTS,
            upload=True,
            note="Multipart part 'file'.",
        ),
        Endpoint(
            "uploads.parts",
            "POST",
            rf"{_PLAIN}/uploads/[^/]+/parts",
            images=UPLOAD_PART_SLOTS,
            upload=True,
            note="Multipart part 'data' is a byte range of one file, not a whole image.",
        ),
    ),
    controls=(
        Control(
            "regional deployment",
            "account",
            "Processing location is chosen when the resource and deployment are created "
            "(region; deployment type Standard, Global or DataZone EU/US), not per request.",
            source="https://learn.microsoft.com/azure/foundry/openai/api-version-lifecycle",
        ),
        Control(
            "store=false",
            "request",
            "The Responses API takes OpenAI's store flag; veilpix sets it to false.",
            json_field=("store", False),
            operations=frozenset({"responses.create"}),
            source="openai 3.57.0 wheel: openai/lib/azure.py (OpenAI body shapes)",
        ),
        Control(
            "modified abuse monitoring",
            "account",
            "No content logging for abuse monitoring (otherwise kept up to 30 days); granted "
            "by Microsoft on application (Limited Access, EA/MCA customers). Secondary source.",
            source="https://learn.microsoft.com/azure/ai-services/openai/how-to/dall-e",
        ),
        Control(
            "no training on prompts",
            "account",
            "Contractual default: prompts and completions are not used to train models and are "
            "not shared with OpenAI. Nothing to set. Secondary source.",
        ),
    ),
    env_key=("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN"),
    env_base_url="AZURE_OPENAI_ENDPOINT",
    sources=(
        "openai 3.57.0 wheel: openai/lib/azure.py (_deployments_endpoints, api-key header, "
        "azure_ad_token, AZURE_OPENAI_* and OPENAI_API_VERSION)",
        "https://learn.microsoft.com/azure/foundry/openai/api-version-lifecycle",
        "https://learn.microsoft.com/azure/ai-services/openai/how-to/dall-e",
        "http://go2azure.eu/legal/microsoft-customer-cloud-agreement/ (copy of the Microsoft "
        "Customer Cloud Agreement naming Microsoft Ireland Operations Limited)",
    ),
)
