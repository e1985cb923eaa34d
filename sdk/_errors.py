"""The veilpix exception tree.

Every error veilpix raises on purpose is a :class:`VeilpixError`. Messages say what went wrong
and what to do about it; ``hint`` carries the "what to do" part separately for programs that
show it on its own line. Third-party errors (Pillow, zlib, struct, pillow-heif) are translated
where they occur with ``raise ... from exc`` so the original cause stays attached.

The tree (``tests/test_packaging.py`` checks that it matches the classes)::

    VeilpixError
        AuditLogError
            LogIntegrityError
        CAError
        ConfigError
        ImageError
            CorruptImage
            FaceDetectionError
            ImageTooLarge
            UnsafeOutput
            UnsupportedImage
        PolicyViolation
            ConsentRequired
            RequestBlocked
        RequestError
            MalformedMultipart
            RequestTooLarge
            UnsupportedEncoding
        VendorError
            VendorAuthError
            VendorBadRequest
            VendorJobFailed
            VendorRateLimited
            VendorTimeout
            VendorUnavailable

Two more live beside the code that raises them, in the same tree: ``SealError``
(``veilpix.audit._keys``, a ``VeilpixError``: a sealed field did not open) and
``UpstreamError`` (``veilpix.proxy``, a ``VeilpixError``: the gateway could not reach the
vendor).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from veilpix import _LAZY
from veilpix._install import install_command

if TYPE_CHECKING:
    from veilpix.guard import Receipt

__all__ = [
    "DOCS",
    "AuditLogError",
    "BlockRule",
    "CAError",
    "ConfigError",
    "ConsentRequired",
    "CorruptImage",
    "FaceDetectionError",
    "ImageError",
    "ImageTooLarge",
    "LogIntegrityError",
    "MalformedMultipart",
    "PolicyViolation",
    "RequestBlocked",
    "RequestError",
    "RequestTooLarge",
    "UnsafeOutput",
    "UnsupportedEncoding",
    "UnsupportedImage",
    "VeilpixError",
    "VendorAuthError",
    "VendorBadRequest",
    "VendorError",
    "VendorJobFailed",
    "VendorRateLimited",
    "VendorTimeout",
    "VendorUnavailable",
]


class VeilpixError(Exception):
    """Base class of every error veilpix raises on purpose."""

    default_hint = ""
    # "{install:EXTRA}" in a default hint becomes the pip command that adds EXTRA to this
    # install, from where it came from (veilpix._install)
    _INSTALL = re.compile(r"\{install:(\w+)\}")

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        if hint is None:
            hint = self._INSTALL.sub(lambda m: install_command(m[1]), self.default_hint)
        self.hint = hint
        super().__init__(f"{message} ({self.hint})" if self.hint else message)


# Where the documentation is read (hints link there: a pip install has no docs/ folder).
DOCS = "https://github.com/veilpix/veilpix/blob/main/docs/"


class ConfigError(VeilpixError):
    """A policy, option or configuration value is invalid."""

    default_hint = f"check the value against the documentation: {DOCS}"


class ImageError(VeilpixError):
    """An image could not be sanitized; nothing derived from it was produced."""


class UnsupportedImage(ImageError):
    """The bytes are not an image format veilpix can sanitize."""

    default_hint = (
        "convert it to JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC/HEIF or AVIF first"
        " (HEIC needs the 'heif' extra: {install:heif})"
    )


class CorruptImage(ImageError):
    """The image is truncated, malformed, or does not decode."""

    default_hint = "the file is damaged; re-export it from the original source"


class ImageTooLarge(ImageError):
    """The image exceeds a byte, pixel or frame limit or the work budget of the policy."""

    default_hint = (
        "downscale it first, or raise the limit with Policy(max_bytes=..., max_input_pixels=..., "
        "max_frames=..., max_total_pixels=..., max_work_seconds=..., max_memory=...) or the "
        "same keys in [policy] of veilpix.toml"
    )


class UnsafeOutput(ImageError):
    """veilpix could not prove its own output free of metadata, so it refuses to hand it out."""

    default_hint = "this is a veilpix bug: please report it with the input file's format"


class FaceDetectionError(ImageError):
    """Faces were to be blurred but detection failed, so the image was not let through."""

    default_hint = (
        "the image was blocked rather than sent with faces unblurred; check that the image "
        "decodes (the face model ships with veilpix; if it is missing, the install is "
        "damaged: reinstall veilpix)"
    )


class PolicyViolation(VeilpixError):
    """The request breaks the destination or privacy policy and was not sent."""

    default_hint = "change the request or the policy; nothing was sent"


# The rules a request can be blocked by (RequestBlocked.rule, the log's "rule" field):
# where it was going, what it carried, and what its own headers asked for.
BlockRule = Literal[
    "controls.required",
    "destination.country",
    "destination.https_only",
    "destination.unknown_host",
    "destination.vendor",
    "faces.consent",
    "image.too_large",
    "image.unrewritable",
    "image.unsanitizable",
    "image.unsupported",
    "record.header",
    "remote_images",
    "request.malformed",
    "request.too_large",
    "upload.chunked_image",
    "upload.document",
]


class RequestBlocked(PolicyViolation):
    """veilpix refused to send a request; not a byte of it left. ``rule`` names the policy
    rule that decided (e.g. ``destination.vendor``), ``record_id`` the transfer-log record,
    ``receipt`` (a :class:`~veilpix.Receipt` whose ``blocked`` is the rule) what veilpix
    knew of the request when it stopped it."""

    default_hint = "change the request or the policy; nothing was sent"

    def __init__(
        self,
        message: str,
        *,
        rule: BlockRule,
        hint: str | None = None,
        record_id: str | None = None,
        receipt: Receipt | None = None,
    ) -> None:
        self.rule: BlockRule = rule
        self.record_id = record_id
        self.receipt: Receipt | None = receipt
        super().__init__(message, hint=hint)

    @property
    def reason(self) -> str:
        return self.message


class ConsentRequired(PolicyViolation):
    """Faces would leave unblurred and the call carries no consent reference."""

    default_hint = (
        "blur them (Policy(faces='blur')) or pass the reference of the consent you hold: "
        "sanitize(data, policy, consent='...')"
    )


class AuditLogError(VeilpixError):
    """The transfer log cannot record (or read) a call. A call that cannot be recorded is not
    sent: veilpix never sends unlogged."""

    default_hint = (
        "check that the log file and its folder are writable and the disk has space "
        "(the log is at --log / VEILPIX_LOG, default: the veilpix user data folder); "
        "nothing was sent"
    )


class LogIntegrityError(AuditLogError):
    """The transfer log is not what its key file says it should be: missing, emptied, cut back
    or replaced, or it holds entries written without the key file. Nothing is written to it.
    ``found`` is ``"missing"``, ``"emptied"`` or ``"changed"``. Restore the log from a backup,
    or start over and record why with ``veilpix audit restart``."""

    def __init__(self, message: str, *, found: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.found = found


class CAError(VeilpixError):
    """The intercept proxy's local certificate authority is missing, damaged or unsafe, or was
    asked for a certificate its name constraints do not allow."""

    default_hint = (
        "create it with `veilpix ca init` (or replace it with `veilpix ca rotate`); "
        "the CA folder is --dir, $VEILPIX_CA_DIR, [intercept] ca_dir, else the user data folder"
    )


class RequestError(VeilpixError):
    """An outbound request body could not be read or rebuilt safely (a malformed body, an
    encoding veilpix cannot decode, a limit exceeded), so it was not sent."""

    default_hint = (
        "nothing was sent; check the request body against its Content-Type and "
        "Content-Encoding headers"
    )


class RequestTooLarge(RequestError):
    """A request body exceeds a size, part-count, header or nesting limit."""

    default_hint = (
        "nothing was sent; send fewer or smaller images per request, or raise the limit the "
        "caller passed (max_bytes=..., max_parts=..., max_depth=...)"
    )


class UnsupportedEncoding(RequestError):
    """The body's Content-Encoding is unknown, or needs an optional library that is missing."""

    default_hint = (
        "nothing was sent; send the body uncompressed or gzip-compressed, or install the "
        "library the message names"
    )


class MalformedMultipart(RequestError):
    """A multipart/form-data body breaks RFC 7578 / RFC 2046 in a way that could make two
    readers see different parts (or none), so it is refused rather than guessed at."""

    default_hint = (
        "nothing was sent; build the body with an HTTP library's multipart encoder "
        "(httpx files=..., requests files=...) instead of by hand"
    )


class VendorError(VeilpixError):
    """An AI vendor answered a :class:`veilpix.Client` call with an error, or did not answer.

    ``vendor`` is the registry name ("openai"), ``status`` the HTTP status (None when there
    was no HTTP answer, or the job failed after it was accepted), ``vendor_message`` the
    vendor's own words, ``code`` its machine-readable error code or type when it gives one,
    and ``request_id`` its request or job id (quote it to the vendor's support). The request
    itself went through veilpix like every other: sanitized and recorded.
    """

    default_hint = "see the vendor's message; the request was sanitized and recorded as usual"

    def __init__(
        self,
        message: str,
        *,
        vendor: str,
        status: int | None = None,
        vendor_message: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.vendor = vendor
        self.status = status
        self.vendor_message = vendor_message
        self.code = code
        self.request_id = request_id
        super().__init__(message, hint=hint)


class VendorAuthError(VendorError):
    """The vendor refused the credentials (HTTP 401 or 403)."""

    default_hint = (
        "check the API key (the environment variable the Client reads, or "
        "Client(api_keys={...})) and that the account may use this model"
    )


class VendorRateLimited(VendorError):
    """The vendor rate-limited the call (HTTP 429) and the retries ran out.
    ``retry_after`` is the wait in seconds the vendor asked for, when it said."""

    default_hint = "wait and retry, lower the request rate, or raise Client(max_retries=...)"

    def __init__(
        self,
        message: str,
        *,
        vendor: str,
        status: int | None = 429,
        vendor_message: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(
            message,
            vendor=vendor,
            status=status,
            vendor_message=vendor_message,
            code=code,
            request_id=request_id,
            hint=hint,
        )


class VendorBadRequest(VendorError):
    """The vendor rejected the request itself (HTTP 400, 404, 413, 422), including content
    policy and moderation rejections; retrying the same request will not help."""

    default_hint = "change the request (model name, parameters, prompt or images)"


class VendorUnavailable(VendorError):
    """The vendor failed (HTTP 5xx), the connection failed or the request timed out, and the
    retries ran out."""

    default_hint = "retry later; raise Client(timeout=..., max_retries=...) for slow calls"


class VendorTimeout(VendorError):
    """An asynchronous job (BFL, Replicate, fal, Stability) did not finish before the
    Client's ``poll_timeout``; the job may still finish at the vendor."""

    default_hint = "raise Client(poll_timeout=...) for long jobs"


class VendorJobFailed(VendorError):
    """The vendor accepted an asynchronous job, which then failed or was cancelled."""

    default_hint = "see the vendor's message; retrying may help if the failure was transient"


# The errors veilpix exports show as veilpix.X in tracebacks and reprs, also when raised
# before anyone has looked them up on the package.
for _name, _module in _LAZY.items():
    if _module == __name__:
        globals()[_name].__module__ = "veilpix"
