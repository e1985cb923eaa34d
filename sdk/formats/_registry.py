"""The format registry: every :class:`~veilpix.formats._format.Format` veilpix sanitizes,
declared by its own module, looked up by name, media type, extension or content."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from types import MappingProxyType

from veilpix._errors import CorruptImage
from veilpix.formats import _bmff, _bmp, _gif, _jpeg, _png, _tiff, _webp
from veilpix.formats._format import Format
from veilpix.formats._scan import Scan

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "MEDIA_TYPES",
    "extension_for",
    "for_media_type",
    "format_of",
    "scan_as",
]

# In the order content is tried (each signature is distinct, so the order is only speed).
FORMATS: Mapping[str, Format] = MappingProxyType(
    {f.name: f for module in (_jpeg, _png, _webp, _gif, _tiff, _bmp, _bmff) for f in module.FORMATS}
)
MEDIA_TYPES: Mapping[str, str] = MappingProxyType({f.name: f.media_type for f in FORMATS.values()})
# Every extension a supported image file may have (lower case, with the dot).
IMAGE_EXTENSIONS = frozenset(
    ext for f in FORMATS.values() for ext in (*f.extensions, *f.read_extensions)
)

_BY_MEDIA_TYPE = {f.media_type: f for f in FORMATS.values()}
_ORDER = tuple(FORMATS.values())
# Signatures at each offset, for the quick "not an image" answer most bytes get
_HEADS = tuple(
    (offset, tuple(s for f in _ORDER if f.offset == offset for s in f.signatures))
    for offset in sorted({f.offset for f in _ORDER})
)


def format_of(data: bytes) -> Format | None:
    """The format ``data`` starts like (content only), or None."""
    if not any(data.startswith(sigs, offset) for offset, sigs in _HEADS):
        return None
    for f in _ORDER:
        if f.accepts(data):
            return f
    return None


def for_media_type(media_type: str) -> Format | None:
    """The format of a media type veilpix writes or reads (``image/apng`` is PNG)."""
    base = media_type.split(";", 1)[0].strip().lower()
    return _BY_MEDIA_TYPE.get("image/png" if base == "image/apng" else base)


def extension_for(media_type: str) -> str | None:
    """The file extension veilpix names an image of ``media_type`` with."""
    found = for_media_type(media_type)
    return None if found is None else found.extension


def scan_as(data: bytes, name: str) -> Scan:
    """``data`` scanned as the format ``name``; a scanner's low-level failure (a short read,
    a bad zlib stream) is :class:`CorruptImage` like any other damage."""
    try:
        return FORMATS[name].scan(data)
    except (struct.error, IndexError, ValueError, zlib.error) as exc:
        raise CorruptImage(f"{name} is malformed: {exc}") from exc
