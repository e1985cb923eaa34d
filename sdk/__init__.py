"""veilpix: the privacy layer between your application and AI image APIs.

>>> import veilpix
>>> clean = veilpix.sanitize(open("photo.jpg", "rb").read())
>>> clean.report.gps          # where the photo was taken, before veilpix removed it
>>> clean.data                # the same picture, upright, with no metadata left

Public names are re-exported here once; everything else lives in private modules. Heavy parts
(Pillow's plugins, the pixel pipeline, numpy) are imported only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Every public name and the private module that defines it. Nothing is imported until a name
# is first used, so ``import veilpix`` stays light; the name then shows as ``veilpix.X``.
_LAZY = {
    "AsyncClient": "veilpix.client._client",
    "AuditLog": "veilpix.audit._log",
    "AuditLogError": "veilpix._errors",
    "Authority": "veilpix._ca",
    "CAError": "veilpix._errors",
    "CenterFace": "veilpix.image._faces",
    "Client": "veilpix.client._client",
    "Config": "veilpix._config",
    "ConfigError": "veilpix._errors",
    "ConsentRequired": "veilpix._errors",
    "Context": "veilpix.guard",
    "CorruptImage": "veilpix._errors",
    "EEA": "veilpix._policy",
    "FaceBox": "veilpix.image._faces",
    "FaceDetectionError": "veilpix._errors",
    "FaceDetector": "veilpix.image._faces",
    "Finding": "veilpix.metadata._facts",
    "GeneratedImage": "veilpix.client._results",
    "GpsPosition": "veilpix.metadata._facts",
    "Guard": "veilpix.guard",
    "ImageError": "veilpix._errors",
    "ImageReport": "veilpix.image._report",
    "ImageTooLarge": "veilpix._errors",
    "Inspection": "veilpix.image._pipeline",
    "LogIntegrityError": "veilpix._errors",
    "Outbound": "veilpix.guard",
    "OutboundImage": "veilpix.audit._record",
    "PendingTransfer": "veilpix.audit._log",
    "Policy": "veilpix._policy",
    "PolicyViolation": "veilpix._errors",
    "Prepared": "veilpix.guard",
    "Receipt": "veilpix.guard",
    "Removed": "veilpix.metadata._facts",
    "RequestBlocked": "veilpix._errors",
    "RequestError": "veilpix._errors",
    "Restarted": "veilpix.audit._restart",
    "Result": "veilpix.client._results",
    "SanitizedImage": "veilpix.image._report",
    "Transfer": "veilpix.audit._record",
    "TransferRecord": "veilpix.audit._records",
    "UnsafeOutput": "veilpix._errors",
    "UnsupportedImage": "veilpix._errors",
    "VeilpixError": "veilpix._errors",
    "VendorAuthError": "veilpix._errors",
    "VendorBadRequest": "veilpix._errors",
    "VendorError": "veilpix._errors",
    "VendorJobFailed": "veilpix._errors",
    "VendorRateLimited": "veilpix._errors",
    "VendorTimeout": "veilpix._errors",
    "VendorUnavailable": "veilpix._errors",
    "VerifyResult": "veilpix.audit._verify",
    "async_http_client": "veilpix.transports._clients",
    "detect_faces": "veilpix.image._faces",
    "http_client": "veilpix.transports._clients",
    "inspect": "veilpix.image._pipeline",
    "load_config": "veilpix._config",
    "restart_log": "veilpix.audit._restart",
    "sanitize": "veilpix.image._pipeline",
    "sanitize_file": "veilpix.image._pipeline",
    "sanitize_mask": "veilpix.image._pipeline",
    "verify_log": "veilpix.audit._log",
}

__all__ = [  # noqa: RUF022 - plain sorted() order; tests/test_packaging.py checks it is _LAZY's
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

if TYPE_CHECKING:  # the same names for type checkers ("X": an explicit re-export)
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
    from veilpix.audit._log import (
        AuditLog,
        PendingTransfer,
        verify_log,
    )
    from veilpix.audit._record import OutboundImage, Transfer
    from veilpix.audit._records import TransferRecord
    from veilpix.audit._restart import Restarted, restart_log
    from veilpix.audit._verify import VerifyResult
    from veilpix.client._client import AsyncClient, Client
    from veilpix.client._results import GeneratedImage, Result
    from veilpix.guard import Context, Guard, Outbound, Prepared, Receipt
    from veilpix.image._faces import (
        CenterFace,
        FaceBox,
        FaceDetector,
        detect_faces,
    )
    from veilpix.image._pipeline import (
        Inspection,
        inspect,
        sanitize,
        sanitize_file,
        sanitize_mask,
    )
    from veilpix.image._report import ImageReport, SanitizedImage
    from veilpix.metadata._facts import (
        Finding,
        GpsPosition,
        Removed,
    )
    from veilpix.transports._clients import (
        async_http_client,
        http_client,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'veilpix' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    if isinstance(value, type) or callable(value):
        value.__module__ = "veilpix"
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
