"""Replicate (api.replicate.com): predictions whose inputs are model-specific.

Image inputs sit at model-specific keys inside ``input`` (``image``, ``input_image``,
``image_input[]``, ``mask``, ...; a version's ``openapi_schema`` marks them ``format: uri``),
as an https URL Replicate downloads or a ``data:`` URI. The adapter therefore names
``input.**``: every string under ``input`` may be an image.
"""

from __future__ import annotations

from veilpix.adapters._base import Endpoint, ErrorShape, ImageSlot, ModelField, Region, Vendor

__all__ = ["VENDOR"]

_INPUT = ImageSlot(
    "json",
    "input.**",
    frozenset({"url", "data_uri"}),
    fetched_by_vendor=True,
)

_NOTE = (
    "Model-specific inputs, hence input.**. Replicate's spec: a data URL for files up to "
    "256 KB is not stored ('Replicate will not store it'); its docs recommend data URIs only "
    "under 1 MB. Predictions' inputs, outputs, output files and logs made through the API are "
    "deleted after 1 hour."
)

# Replicate's error body (RFC 7807 problem details), which its client reads "detail" from.
_ERRORS = ErrorShape({"title": "Blocked by veilpix", "detail": "{message}", "status": "{status}"})

VENDOR = Vendor(
    name="replicate",
    display="Replicate",
    base_url="https://api.replicate.com",
    regions=(
        Region(
            "global",
            ("api.replicate.com",),
            "US",
            "Replicate, Inc.",
            "No regional endpoints; the processing location is not documented, so US "
            "(Replicate's home country) is recorded. Legal entity: no EEA entity found; the US "
            "company is named, and a secondary summary of the terms says Replicate LLC.",
        ),
    ),
    auth_headers=("authorization",),
    error_shape=_ERRORS,
    # /v1/models/{owner}/{name}/predictions, or "version" in the body of /v1/predictions
    # ("owner/name:id" or the version id). A deployment's model is not in the request.
    models=(
        ModelField("path", r"/v1/models/(?P<model>[^/]+/[^/]+)/predictions"),
        ModelField("json", "version", paths=r"/v1/predictions"),
    ),
    endpoints=(
        Endpoint(
            "predictions.create",
            "POST",
            r"/v1/(?:predictions|models/[^/]+/[^/]+/predictions|deployments/[^/]+/[^/]+/predictions)",
            images=(_INPUT,),
            accepts_data_uri=True,
            note=f"{_NOTE} Covers /v1/predictions (with version), "
            "/v1/models/{owner}/{name}/predictions and /v1/deployments/{owner}/{name}/predictions.",
        ),
        Endpoint(
            "files.upload",
            "POST",
            r"/v1/files",
            images=(ImageSlot("multipart", "content", frozenset({"bytes"})),),
            upload=True,
            note="Multipart part 'content' (with filename, type, metadata). The replicate SDK "
            "uploads file inputs here by default and passes the returned URL. File expiry is "
            "unverified.",
        ),
    ),
    controls=(),
    env_key=("REPLICATE_API_TOKEN",),
    env_base_url="REPLICATE_BASE_URL",
    sources=(
        "replicate 1.0.7 wheel: replicate/client.py, helpers.py (base64_encode_file), file.py, "
        "prediction.py",
        "https://github.com/replicate/replicate-python-beta "
        "(src/replicate/types/prediction_create_params.py, file_create_params.py)",
        "https://replicate.com/docs/topics/predictions/data-retention",
        "https://replicate.com/docs/topics/predictions/input-files",
        "https://replicate.com/terms",
    ),
)
