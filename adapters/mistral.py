"""Mistral AI API (api.mistral.ai and its EU and US servers).

Servers and the ``image_url`` chunk follow the ``mistralai`` SDK
(``client/sdkconfiguration.py``, ``client/models/imageurlchunk.py``): ``image_url`` is a string
(URL or data URI) or ``{"url": ..., "detail": ...}``.
"""

from __future__ import annotations

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

_ENTITY = "Mistral AI SAS"
_ENTITY_NOTE = "Legal entity: Mistral AI, a French SAS (Paris)."

VENDOR = Vendor(
    name="mistral",
    display="Mistral AI",
    base_url="https://api.mistral.ai",
    regions=(
        Region(
            "global",
            ("api.mistral.ai",),
            "FR",
            _ENTITY,
            "Global server: where it processes is not pinned down (Mistral describes its "
            f"infrastructure as European); FR, Mistral's home country, is recorded. {_ENTITY_NOTE}",
        ),
        Region(
            "eu",
            ("api.eu.mistral.ai",),
            "FR",
            _ENTITY,
            "EU server: inputs and outputs are processed in the EU; no country is named, FR "
            "(Mistral's home country) stands for it.",
        ),
        Region(
            "us",
            ("api.us.mistral.ai",),
            "US",
            _ENTITY,
            "US server (supported models only).",
        ),
    ),
    auth_headers=("authorization",),
    error_shape=OPENAI_ERRORS,
    models=(ModelField("json", "model"),),
    endpoints=(
        Endpoint(
            "chat.completions",
            "POST",
            r"/v1/chat/completions",
            images=(
                ImageSlot(
                    "json",
                    "messages[*].content[?type=image_url].image_url",
                    frozenset({"url", "data_uri"}),
                    fetched_by_vendor=True,
                ),
                ImageSlot(
                    "json",
                    "messages[*].content[?type=image_url].image_url.url",
                    frozenset({"url", "data_uri"}),
                    fetched_by_vendor=True,
                ),
            ),
            accepts_data_uri=True,
            note="image_url is either the URL or data URI itself or an object with url and "
            "detail; both forms are listed.",
        ),
    ),
    controls=(
        Control(
            "regional endpoint",
            "request",
            "Send to api.eu.mistral.ai or api.us.mistral.ai (Mistral(server='eu'|'us')); each "
            "region is an independent deployment with its own data boundary.",
            source="https://mistral.ai/cloud/inference/",
        ),
        Control(
            "zero data retention",
            "account",
            "Available on request for the organisation.",
            source="https://mistral.ai/cloud/inference/",
        ),
        Control(
            "no training (commercial)",
            "account",
            "Commercial API data is not used for training, except on the free tier or when "
            "feedback is given (secondary source). Nothing to set.",
            source="https://mistral.ai/terms",
        ),
    ),
    env_key=("MISTRAL_API_KEY",),
    sources=(
        "mistralai 3.7.0 wheel: mistralai/client/sdkconfiguration.py, "
        "client/utils/security.py, client/models/imageurlchunk.py, client/sdk.py",
        "https://mistral.ai/cloud/inference/",
        "https://mistral.ai/terms",
    ),
)
