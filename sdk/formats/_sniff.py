"""Image format detection by content (magic bytes), never by file name or declared type."""

from __future__ import annotations

from veilpix._errors import UnsupportedImage
from veilpix.formats._format import FormatName
from veilpix.formats._registry import MEDIA_TYPES, format_of

__all__ = ["MEDIA_TYPES", "looks_like_image", "media_type", "sniff"]

_KNOWN_OTHERS = [
    (b"%PDF", "a PDF document"),
    (b"8BPS", "a Photoshop document (PSD)"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"<svg", "an SVG drawing"),
    (b"<?xml", "an XML document (SVG?)"),
    (b"qoif", "a QOI image"),
    (b"\x76\x2f\x31\x01", "an OpenEXR image"),
    (b"#?RADIANCE", "a Radiance HDR image"),
]


def sniff(data: bytes) -> FormatName:
    """The container format of ``data``: JPEG, PNG, WEBP, GIF, TIFF, BMP, HEIF or AVIF (the
    formats in veilpix.formats._registry), or :class:`UnsupportedImage` saying what it is."""
    found = format_of(data)
    if found is not None:
        return found.name
    head = data[:32]
    stripped = data[:64].lstrip()
    for magic, what in _KNOWN_OTHERS:
        if head.startswith(magic) or stripped.startswith(magic):
            raise UnsupportedImage(f"this is {what}, which veilpix does not sanitize")
    if not data:
        raise UnsupportedImage("the data is empty, not an image")
    if data[4:8] == b"ftyp" and len(data) >= 12:
        major = data[8:12].decode("latin-1", "replace")
        raise UnsupportedImage(
            f"this is an ISO-BMFF file of brand {major!r} (a video, or a camera raw such as "
            "Canon CR3), not a HEIF or AVIF image, which veilpix does not sanitize",
            hint="export the picture as JPEG, PNG or HEIC first",
        )
    raise UnsupportedImage("the data is not an image format veilpix recognises")


def looks_like_image(data: bytes) -> bool:
    """True when ``data`` starts like an image (any supported format)."""
    return format_of(data) is not None


def media_type(data: bytes) -> str | None:
    """The media type of the image ``data`` starts like, or None."""
    found = format_of(data)
    return None if found is None else found.media_type
