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
    "AsyncClient": "veilpix._client",
    "Client": "veilpix._client",
    "GeneratedImage": "veilpix._client",
    "Result": "veilpix._client",
    "VendorAuthError": "veilpix._errors",
    "VendorBadRequest": "veilpix._errors",
    "VendorError": "veilpix._errors",
    "VendorJobFailed": "veilpix._errors",
    "VendorRateLimited": "veilpix._errors",
    "VendorTimeout": "veilpix._errors",
    "VendorUnavailable": "veilpix._errors",
    "RequestError": "veilpix._errors",
    "Guard": "veilpix._guard",
    "Outbound": "veilpix._guard",
    "Context": "veilpix._guard",
    "Receipt": "veilpix._guard",
    "Prepared": "veilpix._guard",
    "RequestBlocked": "veilpix._errors",
    "EEA": "veilpix._policy",
    "http_client": "veilpix._http",
    "async_http_client": "veilpix._http",
    "Config": "veilpix._config",
    "load_config": "veilpix._config",
    "AuditLog": "veilpix._audit",
    "AuditLogError": "veilpix._errors",
    "LogIntegrityError": "veilpix._errors",
    "restart_log": "veilpix._audit_restart",
    "Restarted": "veilpix._audit_restart",
    "Authority": "veilpix._ca",
    "CAError": "veilpix._errors",
    "OutboundImage": "veilpix._audit_record",
    "PendingTransfer": "veilpix._audit",
    "Transfer": "veilpix._audit_record",
    "TransferRecord": "veilpix._audit",
    "VerifyResult": "veilpix._audit_verify",
    "verify_log": "veilpix._audit_verify",
    "CenterFace": "veilpix._faces",
    "FaceBox": "veilpix._faces",
    "FaceDetector": "veilpix._faces",
    "detect_faces": "veilpix._faces",
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
    "Finding": "veilpix._report",
    "GpsPosition": "veilpix._report",
    "ImageReport": "veilpix._report",
    "Removed": "veilpix._report",
    "SanitizedImage": "veilpix._report",
    "Inspection": "veilpix._pipeline",
    "inspect": "veilpix._pipeline",
    "sanitize": "veilpix._pipeline",
    "sanitize_file": "veilpix._pipeline",
    "sanitize_mask": "veilpix._pipeline",
}

if TYPE_CHECKING:
    from veilpix._audit import AuditLog, PendingTransfer, TransferRecord
    from veilpix._audit_record import OutboundImage, Transfer
    from veilpix._audit_restart import Restarted, restart_log
    from veilpix._audit_verify import VerifyResult, verify_log
    from veilpix._ca import Authority
    from veilpix._client import AsyncClient, Client, GeneratedImage, Result
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
    from veilpix._faces import CenterFace, FaceBox, FaceDetector, detect_faces
    from veilpix._guard import Context, Guard, Outbound, Prepared, Receipt
    from veilpix._http import async_http_client, http_client
    from veilpix._pipeline import Inspection, inspect, sanitize, sanitize_file, sanitize_mask
    from veilpix._policy import EEA, Policy
    from veilpix._report import Finding, GpsPosition, ImageReport, Removed, SanitizedImage


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
