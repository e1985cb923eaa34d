"""What every module of the finder shares: its limits, the callbacks it calls, and Refused.

The guard hands the finder a ``clean`` callback (the sanitizer) and a ``document`` callback
(non-image files); the finder raises :class:`Refused` where an image sits in a place it
cannot rebuild. The limits bound every walk: :data:`MAX_LAYERS` of nesting, :data:`MAX_MEMBERS`
per archive or JSON-in-prose scan, and the shortest encodings that can carry an image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from veilpix._errors import BlockRule, RequestError

Role = Literal["image", "mask"]
Clean = Callable[[bytes, str, Role], bytes]
"""``clean(data, where, role)``: the sanitized image (raises to block the request)."""

DocumentKind = Literal["PDF", "Office document", "audio or video"]
"""A non-image file that may carry personal data (see ``_archives._document_kind``)."""
Document = Callable[[DocumentKind, str], None]
"""``document(kind, where)``: a non-image file was found (raises to block the request)."""

MAX_LAYERS = 24  # encodings and containers inside one another
MAX_MEMBERS = 10_000  # archive members, multipart parts per layer
# The smallest file of any image format is over 21 bytes (a 1x1 QOI is 23, a GIF 26, a BMP
# 26), so nothing shorter than what 21 bytes take in an encoding can carry one.
MIN_IMAGE = 21
MIN_RUN = 28  # base64 characters: 21 bytes
MIN_HEX = 2 * MIN_IMAGE
_LEVEL = 1  # zlib level for rebuilt gzip/deflate layers: mostly images, which do not shrink


class Refused(RequestError):
    """An image (or a file the policy refuses) sits where veilpix cannot make it clean:
    the request is blocked under ``rule``."""

    def __init__(self, rule: BlockRule, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.rule: BlockRule = rule


def _unrewritable(what: str, where: str) -> Refused:
    return Refused(
        "image.unrewritable",
        f"{where} holds an image ({what}) that veilpix cannot put back cleaned, so the "
        "request cannot be proved clean",
        hint="send the image as a file part, a data: URI or base64 in JSON; nothing was sent",
    )


def _label(name: str) -> str:
    """A name from the request (a form field, an archive member) as it may appear in a
    record: printable, valid UTF-8 (escapes for the rest), at most 100 characters."""
    shown = name.encode("utf-8", "backslashreplace").decode("utf-8")
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)
    return shown if len(shown) <= 100 else shown[:97] + "..."
