"""Google Vertex AI (Gemini and Imagen on Google Cloud), regional hosts.

Hosts follow ``google-genai``'s ``_api_client.py``: ``{location}-aiplatform.googleapis.com``,
the global ``aiplatform.googleapis.com`` (``location='global'`` or API-key "express mode") and
the multi-region ``aiplatform.{eu,us}.rep.googleapis.com``. Each location with a documented
country is its own region (so a policy can name ``europe-west4``); the catch-all pattern for
other locations comes last.
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
from veilpix.adapters.gemini import FORMATS, generate_slots

__all__ = ["LOCATIONS", "VENDOR"]

_ENTITY = "Google Cloud EMEA Limited"
_ENTITY_NOTE = (
    "Legal entity: Google Cloud's contracting-entity table picks the entity by billing address; "
    "EEA business customers are invoiced by Google Cloud EMEA Limited (Dublin)."
)

# Generative AI on Vertex AI locations and their countries, from the Vertex locations page.
LOCATIONS: dict[str, str] = {
    "us-central1": "US",
    "us-east1": "US",
    "us-east4": "US",
    "us-east5": "US",
    "us-south1": "US",
    "us-west1": "US",
    "us-west4": "US",
    "northamerica-northeast1": "CA",
    "southamerica-east1": "BR",
    "europe-west1": "BE",
    "europe-north1": "FI",
    "europe-west3": "DE",
    "europe-west2": "GB",
    "europe-southwest1": "ES",
    "europe-west8": "IT",
    "europe-west4": "NL",
    "europe-west9": "FR",
    "europe-central2": "PL",
    "europe-west6": "CH",
    "asia-east1": "TW",
    "asia-east2": "HK",
    "asia-south1": "IN",
    "asia-northeast3": "KR",
    "asia-southeast1": "SG",
    "australia-southeast1": "AU",
    "asia-northeast1": "JP",
    "me-west1": "IL",
    "me-central1": "QA",
    "me-central2": "SA",
}

_REGIONS = (
    Region(
        "eu",
        ("aiplatform.eu.rep.googleapis.com",),
        "IE",
        _ENTITY,
        "EU multi-region endpoint: processing stays in EU Google Cloud regions; no single "
        f"country is named, IE (seat of the contracting entity) stands for it. {_ENTITY_NOTE}",
    ),
    Region(
        "us",
        ("aiplatform.us.rep.googleapis.com",),
        "US",
        _ENTITY,
        "US multi-region endpoint.",
    ),
    *(
        Region(
            location,
            (f"{location}-aiplatform.googleapis.com",),
            country,
            _ENTITY,
            "Regional endpoint: data stored and processed in the region (generally available "
            "features).",
        )
        for location, country in LOCATIONS.items()
    ),
    Region(
        "global",
        ("aiplatform.googleapis.com",),
        "US",
        _ENTITY,
        "Global endpoint (location='global' or API-key express mode): Google may serve the "
        "request from any region; US (Google's home country) is recorded.",
    ),
    Region(
        "other-location",
        ("*-aiplatform.googleapis.com",),
        "US",
        _ENTITY,
        "A regional host whose location is not in veilpix's table: its country is unknown, "
        "US (Google's home country) is recorded.",
    ),
)

_MODEL = r"/v1(?:beta1)?/(?:projects/[^/]+/locations/[^/]+/)?publishers/google/models/[^/:]+"


def _b64(path: str) -> ImageSlot:
    return ImageSlot("json", path, frozenset({"base64"}), mime_path="mimeType")


def _gcs(path: str) -> ImageSlot:
    return ImageSlot("json", path, frozenset({"url"}), fetched_by_vendor=True)


_PREDICT_SLOTS = (
    _b64("instances[*].referenceImages[*].referenceImage.bytesBase64Encoded"),
    _gcs("instances[*].referenceImages[*].referenceImage.gcsUri"),
    _b64("instances[*].image.bytesBase64Encoded"),
    _gcs("instances[*].image.gcsUri"),
    _b64("instances[*].personImage.image.bytesBase64Encoded"),
    _gcs("instances[*].personImage.image.gcsUri"),
    ImageSlot(
        "json",
        "instances[*].productImages[*].**",
        frozenset({"base64", "url"}),
        fetched_by_vendor=True,
    ),
    ImageSlot(
        "json", "instances[*].scribble.**", frozenset({"base64", "url"}), fetched_by_vendor=True
    ),
)

VENDOR = Vendor(
    name="vertex_ai",
    display="Google Vertex AI",
    base_url="https://aiplatform.googleapis.com",
    regions=_REGIONS,
    path_names_region=True,
    auth_headers=("authorization", "x-goog-api-key"),
    auth_query=("key",),
    error_shape=GOOGLE_ERRORS,
    # .../publishers/{publisher}/models/{model}:generateContent (and :predict, ...); the
    # OpenAI-compatible endpoint names it in the body.
    models=(
        ModelField(
            "path",
            r"/v1(?:beta1)?/(?:projects/[^/]+/locations/[^/]+/)?publishers/[^/]+/models/"
            r"(?P<model>[^/:]+):[A-Za-z]+",
        ),
        ModelField("json", "model", paths=r".*/endpoints/openapi/chat/completions"),
    ),
    endpoints=(
        Endpoint(
            "models.generate_content",
            "POST",
            rf"{_MODEL}:(?:generateContent|streamGenerateContent)",
            images=generate_slots(),
            formats=FORMATS,
            max_image_bytes=7_000_000,
            note="As Gemini: inlineData or fileData (gs:// or https, fetched by Google). Limits "
            "are model-dependent; image models take 7 MB per inline file and 30 MB per GCS "
            "file (up to 14 reference images for gemini-3-pro-image).",
        ),
        Endpoint(
            "models.predict",
            "POST",
            rf"{_MODEL}:predict",
            images=_PREDICT_SLOTS,
            formats=frozenset({"image/png", "image/jpeg", "image/webp"}),
            note="Imagen-style predict: edit (referenceImages incl. mask config), upscale and "
            "segment (image), recontext (personImage, productImages), scribble. The inner "
            "shape of productImages and scribble is not pinned down, hence '**'. Text-only "
            "Imagen generation uses the same path.",
        ),
    ),
    controls=(
        Control(
            "regional endpoint",
            "request",
            "Send to {location}-aiplatform.googleapis.com or aiplatform.eu/us.rep.googleapis.com. "
            "The request path also names the location, which must match the host.",
            source="https://docs.cloud.google.com/vertex-ai/docs/general/locations",
        ),
        Control(
            "disable caching",
            "account",
            "Project setting cacheConfig.disableCache=true (part of zero data retention).",
            source="https://docs.cloud.google.com/gemini-enterprise-agent-platform/resources/"
            "zero-data-retention",
        ),
        Control(
            "abuse-logging exception",
            "account",
            "Request the exception from abuse-monitoring prompt logging (part of zero data "
            "retention); avoid grounding, which keeps data 30 days.",
            source="https://docs.cloud.google.com/gemini-enterprise-agent-platform/resources/"
            "zero-data-retention",
        ),
        Control(
            "no training (Training Restriction)",
            "account",
            "Contractual default: the Service Specific Terms' Training Restriction forbids "
            "training on customer data without permission. Nothing to set.",
            source="https://cloud.google.com/terms/service-terms",
        ),
    ),
    env_key=("GOOGLE_API_KEY",),
    env_base_url="GOOGLE_VERTEX_BASE_URL",
    sources=(
        "google-genai 3.6.1 wheel: google/genai/_api_client.py (_MULTI_REGIONAL_LOCATIONS, "
        "regional and global hosts), models.py (_Image_to_vertex and the edit, upscale, "
        "recontext and segment request builders)",
        "https://docs.cloud.google.com/vertex-ai/docs/general/locations",
        "https://firebase.google.com/docs/vertex-ai/locations",
        "https://docs.cloud.google.com/gemini-enterprise-agent-platform/resources/"
        "zero-data-retention",
        "Vertex AI image-understanding page (limits per model)",
        "https://cloud.google.com/terms/service-terms",
        "https://cloud.google.com/terms/google-entity",
    ),
)
