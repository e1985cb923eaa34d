"""An independent metadata oracle for the tests: exiftool (libimage-exiftool-perl).

veilpix checks its own output with its own scanners; these tests check it with a tool nobody
here wrote. ``residue(paths)`` runs exiftool once over all files and returns, per file, every
tag that is not basic image structure. The allowlist is deliberately small: file type and
dimensions, JFIF version and density, the Adobe DCT flag, PNG/GIF/WebP header fields, TIFF
structure tags (for TIFF files only) and, when the kept profile is a standard one, the ICC
profile's own tags.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable

EXIFTOOL = shutil.which("exiftool")

_STRUCTURE = {
    "File": {
        "FileType",
        "FileTypeExtension",
        "MIMEType",
        "ImageWidth",
        "ImageHeight",
        "EncodingProcess",
        "BitsPerSample",
        "ColorComponents",
        "YCbCrSubSampling",
        "ExifByteOrder",
        # BMP headers are reported in the File group
        "BMPVersion",
        "Planes",
        "BitDepth",
        "Compression",
        "ImageLength",
        "PixelsPerMeterX",
        "PixelsPerMeterY",
        "NumColors",
        "NumImportantColors",
        "RedMask",
        "GreenMask",
        "BlueMask",
        "AlphaMask",
    },
    "JFIF": {"JFIFVersion", "ResolutionUnit", "XResolution", "YResolution"},
    "Adobe": {"DCTEncodeVersion", "APP14Flags0", "APP14Flags1", "ColorTransform"},
    "PNG": {
        "ImageWidth",
        "ImageHeight",
        "BitDepth",
        "ColorType",
        "Compression",
        "Filter",
        "Interlace",
        "Palette",
        "Transparency",
        "Gamma",
        "SRGBRendering",
        "BackgroundColor",
        "AnimationFrames",
        "AnimationPlays",
        "SignificantBits",
        "WhitePointX",
        "WhitePointY",
        "RedX",
        "RedY",
        "GreenX",
        "GreenY",
        "BlueX",
        "BlueY",
    },
    "PNG-pHYs": {"PixelUnits", "PixelsPerUnitX", "PixelsPerUnitY"},
    "GIF": {
        "GIFVersion",
        "ImageWidth",
        "ImageHeight",
        "HasColorMap",
        "ColorResolutionDepth",
        "BitsPerPixel",
        "BackgroundColor",
        "PixelAspectRatio",
        "AnimationIterations",
        "TransparentColor",
        "FrameCount",
        "Duration",
        "AnimationExtension",
    },
    "RIFF": {
        "WebP_Flags",
        "ImageWidth",
        "ImageHeight",
        "BackgroundColor",
        "AnimationLoopCount",
        "Duration",
        "VP8Version",
        "HorizontalScale",
        "VerticalScale",
        "AlphaPreprocessing",
        "AlphaFiltering",
        "AlphaCompression",
        "ImageCount",
    },
    "Composite": {"ImageSize", "Megapixels", "Duration"},
}
_TIFF_IFD = {
    "SubfileType",
    "ImageWidth",
    "ImageHeight",
    "BitsPerSample",
    "Compression",
    "PhotometricInterpretation",
    "FillOrder",
    "StripOffsets",
    "SamplesPerPixel",
    "RowsPerStrip",
    "StripByteCounts",
    "XResolution",
    "YResolution",
    "PlanarConfiguration",
    "ResolutionUnit",
    "PageNumber",
    "Predictor",
    "ColorMap",
    "TileWidth",
    "TileLength",
    "TileOffsets",
    "TileByteCounts",
    "ExtraSamples",
    "SampleFormat",
    "InkSet",
    "WhitePoint",
    "PrimaryChromaticities",
    "YCbCrSubSampling",
    "YCbCrPositioning",
    "ReferenceBlackWhite",
    "TransferFunction",
    "MinSampleValue",
    "MaxSampleValue",
    "T4Options",
    "T6Options",
}
STANDARD_ICC = {"sRGB IEC61966-2.1", "sRGB", "Display P3", "Adobe RGB (1998)", "sRGB built-in"}
_IGNORED = {"ExifTool", "System", "SourceFile"}


def available() -> bool:
    return EXIFTOOL is not None


def read(paths: Iterable[str]) -> dict[str, dict[str, object]]:
    """exiftool's view of each file: {'Group:Tag': value} (one exiftool process)."""
    files = list(paths)
    assert EXIFTOOL is not None, "exiftool is not installed"
    proc = subprocess.run(
        [EXIFTOOL, "-j", "-a", "-G1", "-s", "-n", "-ee", "-u", "-q", "-q", "--", *files],
        capture_output=True,
        text=True,
        check=False,
    )
    records = json.loads(proc.stdout or "[]")
    return {rec.pop("SourceFile"): rec for rec in records}


def residue(paths: Iterable[str]) -> dict[str, list[str]]:
    """Per file, the tags exiftool reports beyond basic image structure."""
    out: dict[str, list[str]] = {}
    for path, rec in read(paths).items():
        is_tiff = rec.get("File:FileType") in ("TIFF", "BTF")
        icc_ok = rec.get("ICC_Profile:ProfileDescription") in STANDARD_ICC
        bad = []
        for key in rec:
            group, _, tag = key.partition(":")
            if group in _IGNORED:
                continue
            if group.startswith("ICC") and icc_ok:
                continue
            if is_tiff and group.startswith("IFD") and group[3:].isdigit() and tag in _TIFF_IFD:
                continue
            if tag in _STRUCTURE.get(group, ()):
                continue
            bad.append(key)
        out[path] = bad
    return out
