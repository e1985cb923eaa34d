"""ICC colour profiles: tell a standard working space from a device profile, and apply a
device profile to the pixels so it can be dropped.

A standard profile (sRGB, Display P3, Adobe RGB and a few other shared working spaces) says
nothing about where a picture came from and is needed to show it right, so it may stay. Any other profile (a calibrated monitor,
a camera, a printer, a scanner) can identify its source: its effect is baked into the pixels
(converted to sRGB) and the profile itself is dropped.
"""

from __future__ import annotations

import functools
import io
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Pillow is imported where pixels are touched, not on the lossless path
    from PIL import Image, ImageCms

__all__ = ["STANDARD_PROFILES", "colour_space", "describe", "is_standard", "to_srgb"]

STANDARD_PROFILES = frozenset(
    {
        "sRGB IEC61966-2.1",
        "sRGB IEC61966-2-1 black scaled",
        "sRGB IEC61966-2-1",
        "sRGB",
        "sRGB built-in",
        "sRGB2014",
        "sRGB v4 ICC preference perceptual intent beta",
        "GIMP built-in sRGB",
        "c2",
        "c2ci",
        "Display P3",
        "Adobe RGB (1998)",
        "Compatible with Adobe RGB (1998)",
        # other shared working spaces, installed identically on every system that has them
        "ProPhoto RGB",
        "ROMM RGB",
        "Generic RGB Profile",
        "Rec. 2020",
        "ITU-R BT.2020",
    }
)
_MAX_STANDARD_SIZE = 64 * 1024  # the standard profiles are 0.5-61 KB
_TEXT_TAGS = {b"desc", b"dscm", b"cprt", b"dmnd", b"dmdd", b"vued"}
_COLORIMETRIC = _TEXT_TAGS | {
    b"wtpt",
    b"bkpt",
    b"rXYZ",
    b"gXYZ",
    b"bXYZ",
    b"rTRC",
    b"gTRC",
    b"bTRC",
    b"kTRC",
    b"chad",
    b"chrm",
    b"lumi",
    b"meas",
    b"tech",
    b"view",
    b"cicp",
    b"aarg",
    b"aagg",
    b"aabg",
    b"A2B0",
    b"A2B1",
    b"A2B2",
    b"B2A0",
    b"B2A1",
    b"B2A2",
    b"gamt",
    b"pre0",
    b"pre1",
    b"pre2",
    b"rig0",
    b"ciis",
}


def describe(icc: bytes) -> str | None:
    """The profile description ('desc' tag, v2 text or v4 multi-localized), or None."""
    if len(icc) < 132:
        return None
    try:
        (count,) = struct.unpack_from(">I", icc, 128)
        for i in range(min(count, 256)):
            sig, off, size = struct.unpack_from(">4sII", icc, 132 + 12 * i)
            if sig != b"desc" or off + size > len(icc) or size < 12:
                continue
            body = icc[off : off + size]
            if body[:4] == b"desc":
                (n,) = struct.unpack_from(">I", body, 8)
                return body[12 : 12 + n].split(b"\x00")[0].decode("latin-1").strip() or None
            if body[:4] == b"mluc":
                records, rec_size = struct.unpack_from(">II", body, 8)
                if records and rec_size >= 12:
                    length, offset = struct.unpack_from(">II", body, 16 + 4)
                    text = body[offset : offset + length].decode("utf-16-be", "replace")
                    return text.split("\x00")[0].strip() or None
            return None
    except struct.error:
        return None
    return None


def colour_space(icc: bytes) -> str:
    """The profile's data colour space ('RGB', 'GRAY', 'CMYK', ...)."""
    return icc[16:20].decode("latin-1", "replace").strip() if len(icc) >= 20 else ""


def is_standard(icc: bytes) -> bool:
    """True for a well-known RGB working-space profile that may stay in the output.

    The name alone is not enough (any profile can call itself "sRGB"): the profile must
    also be built like the real ones, holding colorimetric tags only (no calibration, video
    card gamma or device model tags) and no bytes that no tag points at."""
    return (
        len(icc) <= _MAX_STANDARD_SIZE
        and colour_space(icc) == "RGB"
        and describe(icc) in STANDARD_PROFILES
        and _only_colorimetry(icc)
    )


def _only_colorimetry(icc: bytes) -> bool:
    try:
        (declared,) = struct.unpack_from(">I", icc, 0)
        (count,) = struct.unpack_from(">I", icc, 128)
        if declared != len(icc) or count > 64:
            return False
        spans = [(0, 132 + 12 * count)]
        for i in range(count):
            sig, off, size = struct.unpack_from(">4sII", icc, 132 + 12 * i)
            if sig not in _COLORIMETRIC or off + size > len(icc):
                return False
            if sig in _TEXT_TAGS and size > 4096:
                return False
            spans.append((off, off + size))
    except struct.error:
        return False
    end = 0
    for start, stop in sorted(spans):
        if start - end > 3:  # tags are 4-byte aligned: a wider gap hides data
            return False
        end = max(end, stop)
    return len(icc) - end <= 3


def to_srgb(im: Image.Image, icc: bytes) -> tuple[Image.Image, bool]:
    """Convert ``im`` from the colour space ``icc`` describes to sRGB.

    Returns the converted image and whether a real colour conversion took place (False when
    LittleCMS rejects the profile: the pixels are then interpreted as sRGB, which is what
    every viewer does once the profile is gone).
    """
    alpha = None
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        alpha = im.getchannel("A")
    space = colour_space(icc)
    source_mode = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}.get(space)
    if source_mode is None:
        return _fallback(im, alpha), False
    base = im.convert(source_mode) if im.mode != source_mode else im
    from PIL import ImageCms

    try:
        out = ImageCms.applyTransform(base, _transform(icc, source_mode))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return _fallback(im, alpha), False
    if out is None:  # applyTransform returns None only when inPlace=True
        return _fallback(im, alpha), False
    if source_mode == "L" and alpha is None:
        out = out.convert("L")
    if alpha is not None:
        out = out.convert("RGBA")
        out.putalpha(alpha)
    return out, True


@functools.lru_cache(maxsize=16)
def _transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    """A LittleCMS transform from ``icc`` to sRGB, built once per profile: building one can
    take 100 ms for a LUT profile, and a batch usually shares a handful of profiles.
    NOCACHE makes the shared transform safe to apply from several threads."""
    from PIL import ImageCms

    return ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(icc)),
        ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")),
        mode,
        "RGB",
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
        flags=ImageCms.Flags.NOCACHE,
    )


def _fallback(im: Image.Image, alpha: Image.Image | None) -> Image.Image:
    out = im.convert("RGB") if im.mode not in ("RGB", "L") else im
    if alpha is not None:
        out = out.convert("RGBA")
        out.putalpha(alpha)
    return out
