"""Image format detection by content (magic bytes), never by file name or declared type."""

from __future__ import annotations

from veilpix._errors import UnsupportedImage

__all__ = ["MEDIA_TYPES", "looks_like_image", "sniff"]

MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
    "HEIF": "image/heif",
    "AVIF": "image/avif",
}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}
_GENERIC_BRANDS = {b"mif1", b"msf1", b"mif2", b"miaf"}
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


def _bmff_format(data: bytes) -> str | None:
    if data[4:8] != b"ftyp" or len(data) < 16:
        return None
    major = data[8:12]
    size = min(int.from_bytes(data[:4], "big"), 256, len(data))
    compatible = {data[i : i + 4] for i in range(16, size - 3, 4)}
    if major in _AVIF_BRANDS:
        return "AVIF"
    if major in _HEIF_BRANDS:
        return "HEIF"
    if major in _GENERIC_BRANDS or compatible & (_GENERIC_BRANDS | _HEIF_BRANDS | _AVIF_BRANDS):
        # a newer or vendor major brand ('MiHE', 'avci', 'vvic', ...) that declares itself
        # compatible with the HEIF image family: the decoder says whether it can read it
        if compatible & _AVIF_BRANDS and not compatible & _HEIF_BRANDS:
            return "AVIF"
        return "HEIF"
    return None


def _format(data: bytes) -> str | None:
    head = data[:32]
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if (
        head[:2] == b"BM"
        and len(data) >= 26
        and int.from_bytes(head[14:18], "little") in (12, 40, 52, 56, 64, 108, 124)
    ):
        return "BMP"
    return _bmff_format(data)


def sniff(data: bytes) -> str:
    """The container format of ``data``: JPEG, PNG, WEBP, GIF, TIFF, BMP, HEIF or AVIF."""
    found = _format(data)
    if found is not None:
        return found
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
    return _format(data) is not None
