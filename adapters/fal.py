"""fal.ai: model endpoints on fal.run / queue.fal.run, storage on the fal CDN.

A request body is the model's arguments; image inputs are model-specific keys (``image_url``,
``image_urls[]``, ``mask_url``, ...) holding an https URL fal downloads or, for some models, a
``data:`` URI. The adapter therefore names ``**``: every string in the body may be an image.
Hosts come from ``fal-client`` (``client.py``: run, queue, backup ``falrun.com`` hosts, REST,
CDN upload).
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

_RUN = frozenset({"run"})
_RUN_AND_UPLOAD = frozenset({"run", "storage.upload"})

VENDOR = Vendor(
    name="fal",
    display="fal.ai",
    base_url="https://fal.run",
    regions=(
        Region(
            "global",
            (
                "fal.run",
                "queue.fal.run",
                "falrun.com",
                "queue.falrun.com",
                "rest.fal.ai",
                "v3.fal.media",
                "v3b.fal.media",
            ),
            "US",
            "Features & Labels, Inc.",
            "No regional endpoints; the processing location is not documented, so US (home "
            "country of Features & Labels, Inc.) is recorded. Files on the CDN hosts are served "
            "as public URLs. Legal entity: fal's terms name 'fal - Features & Labels, Inc.'; no "
            "EEA entity found.",
        ),
    ),
    auth_headers=("authorization",),
    error_shape=OPENAI_ERRORS,
    # The app id is the path: fal.run/{owner}/{app}[/{sub}] (queue.fal.run alike); storage,
    # CDN and queue status paths are not models.
    models=(
        ModelField(
            "path", r"/(?!files/|storage/)(?!.*/requests(?:/|$))(?P<model>[^/]+/[^/]+(?:/[^/]+)*)"
        ),
    ),
    endpoints=(
        Endpoint(
            "storage.upload",
            "POST",
            r"/files/upload(?:/multipart)?",
            images=(ImageSlot("raw", "", frozenset({"bytes"})),),
            upload=True,
            filename_headers=("x-fal-file-name",),
            note="CDN upload ({base_upload_url}/files/upload on v3.fal.media): the raw body is "
            "the file (Content-Type, X-Fal-File-Name), after a token from "
            "rest.fal.ai/storage/auth/token. /files/upload/multipart is the chunked form for "
            "files over 100 MB. Uploaded files are public URLs.",
        ),
        Endpoint(
            "storage.upload.initiate",
            "POST",
            r"/storage/upload/initiate",
            images=(),
            filename_fields=("file_name",),
            note="Fallback upload on rest.fal.ai (storage_type=gcs): the JSON body names the "
            "file; the bytes then go with PUT to a signed URL on a host no adapter claims, so "
            "veilpix blocks that step.",
        ),
        Endpoint(
            "run",
            "POST",
            r"/[^/]+/[^/]+(?:/.*)?",
            images=(
                ImageSlot(
                    "json",
                    "**",
                    frozenset({"url", "data_uri"}),
                    fetched_by_vendor=True,
                ),
            ),
            accepts_data_uri=True,
            note="POST https://fal.run/{app} (synchronous) or https://queue.fal.run/{app} "
            "(queued; status and result are GETs, cancel a PUT). Model-specific arguments, "
            "hence '**'; data: URIs are accepted by some models only. Queue results are kept "
            "1 hour (6 minutes at 10 KB or more) unless payload storage is on.",
        ),
    ),
    controls=(
        Control(
            "X-Fal-Store-IO: 0",
            "request",
            "Do not store request and response payloads (files already on the CDN remain).",
            header=("X-Fal-Store-IO", "0"),
            operations=_RUN,
            source="https://fal.ai/docs/documentation/model-apis/media-expiration",
        ),
        Control(
            "media expiry 1 hour",
            "request",
            "X-Fal-Object-Lifecycle-Preference sets when generated media (and, on upload, the "
            "uploaded file) expires; veilpix asks for 3600 seconds. Input CDN files are not "
            "deleted by the Platform API's delete calls.",
            header=("X-Fal-Object-Lifecycle-Preference", '{"expiration_duration_seconds": 3600}'),
            operations=_RUN_AND_UPLOAD,
            source="https://fal.ai/docs/documentation/model-apis/common-parameters",
        ),
    ),
    env_key=("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"),
    env_base_url="FAL_RUN_HOST",
    sources=(
        "fal-client 1.0.3 wheel: fal_client/client.py (hosts, BackupDomainTransport, "
        "StorageSettings, CDN upload), fal_client/auth.py, fal_client/_headers.py",
        "https://fal.ai/docs/documentation/model-apis/common-parameters",
        "https://fal.ai/docs/documentation/model-apis/media-expiration",
        "https://fal.ai/docs/documentation/model-apis/fal-cdn",
        "https://fal.ai/docs/documentation/model-apis/inference/payloads",
        "https://docs.fal.ai/model-endpoints/queue",
        "https://docs.fal.ai/model-endpoints/synchronous-requests",
        "https://fal.ai/terms",
    ),
)
