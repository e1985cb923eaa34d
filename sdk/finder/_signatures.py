"""The finder's tables of image formats: signatures, brands, extensions.

What the format registry (veilpix.formats) declares is read from it: extensions, media
types, BMP header sizes, ISO-BMFF image brands. What only the finder needs stays here: the
short prefixes searched for at any offset in raw bytes (tests/formats/test_registry.py checks that
each format's signature starts with one of them, so a format added to the registry cannot
be missed), the images veilpix finds but cannot sanitize, the JPEG markers that confirm a
candidate, and the base64 spellings of signatures. The code that confirms a candidate by its
structure stays in ``_raw``.
"""

from __future__ import annotations

from veilpix.formats._bmff import IMAGE_BRANDS
from veilpix.formats._bmp import DIB_HEADER_SIZES
from veilpix.formats._registry import IMAGE_EXTENSIONS

# Signatures that may sit anywhere in raw bytes. Each candidate is confirmed by
# _image_at before it counts, and the image's extent is found by _image_end.
_RAW_SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"GIF8",  # GIF
    b"RIFF",  # WebP
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"II+\x00",  # BigTIFF, little-endian
    b"MM\x00+",  # BigTIFF, big-endian
    b"BM",  # BMP
    b"ftyp",  # HEIF, AVIF: an ISO-BMFF box type, 4 bytes into the file
    b"8BPS",  # PSD
    b"\x00\x00\x00\x0c",  # JPEG XL, JPEG 2000: the length of their signature box
    b"\xff\x4f\xff\x51",  # JPEG 2000 codestream
    b"qoif",  # QOI
)
# in ASCII data: those without bytes over 127 (and all but GIF's and RIFF's hold a NUL)
_ASCII_SIGNATURES = tuple(s for s in _RAW_SIGNATURES if s.isascii())
# what a byte string read as latin-1 and written as UTF-8 looks like ("\u00ff\u00d8\u00ff")
_UTF8_SIGNATURES = tuple(
    s.decode("latin-1").encode("utf-8")
    for s in (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"II*\x00", b"MM\x00*")
)

# Images veilpix finds but cannot sanitize: refused (confirmed beyond the magic by
# _raw.other_image)
_OTHER_IMAGES = {
    b"8BPS": "a Photoshop document (PSD)",
    b"\x00\x00\x01\x00": "an ICO icon",
    b"\x00\x00\x00\x0cJXL \r\n\x87\n": "a JPEG XL image",
    b"\xff\x4f\xff\x51": "a JPEG 2000 codestream",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n": "a JPEG 2000 image",
    b"qoif": "a QOI image",
    b"\x76\x2f\x31\x01": "an OpenEXR image",
    b"#?RADIANCE\n": "a Radiance HDR image",
}
_OTHER_MAGICS = tuple(_OTHER_IMAGES)

# The markers that may follow a JPEG's SOI (what confirms a JPEG inside other bytes)
_JPEG_MARKERS = frozenset(
    [
        *range(0xC0, 0xC4),  # SOF0-SOF3
        *range(0xC5, 0xC8),  # SOF5-SOF7
        *range(0xC9, 0xD0),  # SOF9-SOF11, DAC, SOF13-SOF15
        0xC4,  # DHT
        0xDA,  # SOS
        0xDB,  # DQT
        0xDD,  # DRI
        0xFE,  # COM
        *range(0xE0, 0xF0),  # APP0-APP15
    ]
)

# From the format registry: the DIB header sizes of a BMP, the ISO-BMFF brands of images
# (any other brand is audio or video), and the file names that end like an image's (a git patch of an
# image file; the guard's file fields)
_BMP_HEADERS = DIB_HEADER_SIZES
_IMAGE_BRANDS = IMAGE_BRANDS
IMAGE_SUFFIXES = tuple(sorted(IMAGE_EXTENSIONS))

# How the base64 of each image format starts, at the three alignments of its first byte
_B64_STARTS = ("/9j/", "_9j_", "iVBORw0KGgo", "R0lGODlh", "R0lGODdh", "UklGR", "SUkqA", "TU0AK")

# The extensions kept in neutral file names (``file.pdf``): common file types, images too
_COMMON_EXTENSIONS = frozenset(
    [
        ".pdf",
        ".txt",
        ".csv",
        ".tsv",
        ".json",
        ".jsonl",
        ".xml",
        ".html",
        ".htm",
        ".md",
        ".rtf",
        ".doc",
        ".docx",
        ".xls",
        ".xlsx",
        ".ppt",
        ".pptx",
        ".odt",
        ".ods",
        ".odp",
        ".zip",
        ".gz",
        ".tar",
        ".mp3",
        ".wav",
        ".ogg",
        ".oga",
        ".flac",
        ".m4a",
        ".aac",
        ".opus",
        ".webm",
        ".mp4",
        ".m4v",
        ".mov",
        ".avi",
        ".mkv",
        ".mpeg",
        ".mpg",
        ".srt",
        ".vtt",
        ".jpg",
        ".jpeg",
        ".png",
        ".gif",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".avif",
        ".svg",
        ".ico",
        ".psd",
        ".dng",
        ".raw",
        ".cr2",
        ".nef",
        ".arw",
        ".bin",
    ]
)
