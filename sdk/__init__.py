"""veilpix: the privacy layer between your application and AI image APIs.

>>> import veilpix
>>> clean = veilpix.sanitize(open("photo.jpg", "rb").read())
>>> clean.report.gps          # where the photo was taken, before veilpix removed it
>>> clean.data                # the same picture, upright, with no metadata left

Public names are re-exported here once; everything else lives in private modules. Heavy parts
(Pillow's plugins, the pixel pipeline, OpenCV) are imported only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [  # noqa: RUF022 - plain sorted() order, which tests/test_packaging.py checks
    "AsyncClient",
    "AuditLog",
    "AuditLogError",
    "Authority",
    "CAError",
    "CenterFace",
    "Client",
    "Config",
    "ConfigError",
    "ConsentRequired",
    "Context",
    "CorruptImage",
    "EEA",
    "FaceBox",
    "FaceDetectionError",
    "FaceDetector",
    "Finding",
    "GeneratedImage",
    "GpsPosition",
    "Guard",
    "ImageError",
    "ImageReport",
    "ImageTooLarge",
    "Inspection",
    "LogIntegrityError",
    "Outbound",
    "OutboundImage",
    "PendingTransfer",
    "Policy",
    "PolicyViolation",
    "Prepared",
    "Receipt",
    "Removed",
    "RequestBlocked",
    "RequestError",
    "Restarted",
    "Result",
    "SanitizedImage",
    "Transfer",
    "TransferRecord",
    "UnsafeOutput",
    "UnsupportedImage",
    "VeilpixError",
    "VendorAuthError",
    "VendorBadRequest",
    "VendorError",
    "VendorJobFailed",
    "VendorRateLimited",
    "VendorTimeout",
    "VendorUnavailable",
    "VerifyResult",
    "__version__",
    "async_http_client",
    "detect_faces",
    "http_client",
    "inspect",
    "load_config",
    "restart_log",
    "sanitize",
    "sanitize_file",
    "sanitize_mask",
    "verify_log",
]

_LAZY = {
    "AsyncClient": "veilpix.client._client",
    "Client": "veilpix.client._client",
    "GeneratedImage": "veilpix.client._client",
    "Result": "veilpix.client._client",
    "VendorAuthError": "veilpix._errors",
    "VendorBadRequest": "veilpix._errors",
    "VendorError": "veilpix._errors",
    "VendorJobFailed": "veilpix._errors",
    "VendorRateLimited": "veilpix._errors",
    "VendorTimeout": "veilpix._errors",
    "VendorUnavailable": "veilpix._errors",
    "RequestError": "veilpix._errors",
    "Guard": "veilpix.guard._guard",
    "Outbound": "veilpix.guard._guard",
    "Context": "veilpix.guard._guard",
    "Receipt": "veilpix.guard._guard",
    "Prepared": "veilpix.guard._guard",
    "RequestBlocked": "veilpix._errors",
    "EEA": "veilpix._policy",
    "http_client": "veilpix.transports._clients",
    "async_http_client": "veilpix.transports._clients",
    "Config": "veilpix._config",
    "load_config": "veilpix._config",
    "AuditLog": "veilpix.audit._log",
    "AuditLogError": "veilpix._errors",
    "LogIntegrityError": "veilpix._errors",
    "restart_log": "veilpix.audit._restart",
    "Restarted": "veilpix.audit._restart",
    "Authority": "veilpix._ca",
    "CAError": "veilpix._errors",
    "OutboundImage": "veilpix.audit._record",
    "PendingTransfer": "veilpix.audit._log",
    "Transfer": "veilpix.audit._record",
    "TransferRecord": "veilpix.audit._log",
    "VerifyResult": "veilpix.audit._verify",
    "verify_log": "veilpix.audit._verify",
    "CenterFace": "veilpix.image._faces",
    "FaceBox": "veilpix.image._faces",
    "FaceDetector": "veilpix.image._faces",
    "detect_faces": "veilpix.image._faces",
    "ConsentRequired": "veilpix._errors",
    "FaceDetectionError": "veilpix._errors",
    "ConfigError": "veilpix._errors",
    "CorruptImage": "veilpix._errors",
    "ImageError": "veilpix._errors",
    "ImageTooLarge": "veilpix._errors",
    "PolicyViolation": "veilpix._errors",
    "UnsafeOutput": "veilpix._errors",
    "UnsupportedImage": "veilpix._errors",
    "VeilpixError": "veilpix._errors",
    "Policy": "veilpix._policy",
    "Finding": "veilpix.image._report",
    "GpsPosition": "veilpix.image._report",
    "ImageReport": "veilpix.image._report",
    "Removed": "veilpix.image._report",
    "SanitizedImage": "veilpix.image._report",
    "Inspection": "veilpix.image._pipeline",
    "inspect": "veilpix.image._pipeline",
    "sanitize": "veilpix.image._pipeline",
    "sanitize_file": "veilpix.image._pipeline",
    "sanitize_mask": "veilpix.image._pipeline",
}

if TYPE_CHECKING:
    from veilpix._ca import Authority
    from veilpix._config import Config, load_config
    from veilpix._errors import (
        AuditLogError,
        CAError,
        ConfigError,
        ConsentRequired,
        CorruptImage,
        FaceDetectionError,
        ImageError,
        ImageTooLarge,
        LogIntegrityError,
        PolicyViolation,
        RequestBlocked,
        RequestError,
        UnsafeOutput,
        UnsupportedImage,
        VeilpixError,
        VendorAuthError,
        VendorBadRequest,
        VendorError,
        VendorJobFailed,
        VendorRateLimited,
        VendorTimeout,
        VendorUnavailable,
    )
    from veilpix._policy import EEA, Policy
    from veilpix.audit._log import AuditLog, PendingTransfer, TransferRecord
    from veilpix.audit._record import OutboundImage, Transfer
    from veilpix.audit._restart import Restarted, restart_log
    from veilpix.audit._verify import VerifyResult, verify_log
    from veilpix.client._client import AsyncClient, Client, GeneratedImage, Result
    from veilpix.guard._guard import Context, Guard, Outbound, Prepared, Receipt
    from veilpix.image._faces import CenterFace, FaceBox, FaceDetector, detect_faces
    from veilpix.image._pipeline import Inspection, inspect, sanitize, sanitize_file, sanitize_mask
    from veilpix.image._report import Finding, GpsPosition, ImageReport, Removed, SanitizedImage
    from veilpix.transports._clients import async_http_client, http_client


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'veilpix' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
