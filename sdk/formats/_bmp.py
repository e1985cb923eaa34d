"""BMP inspection. BMP is always re-encoded from its pixels (a plain BITMAPINFOHEADER file),
so this only reads the header: size, and the colour profile a V5 header may embed or link."""

from __future__ import annotations

import struct

from veilpix._errors import CorruptImage
from veilpix.formats._format import Format
from veilpix.formats._scan import ICC, METADATA, STRUCTURE, TRAILER, Scan, need

__all__ = ["scan_bmp"]

_PROFILE_LINKED = b"LINK"[::-1]  # bV5CSType is stored little-endian: 'KNIL'
_PROFILE_EMBEDDED = b"MBED"[::-1]


def scan_bmp(data: bytes) -> Scan:
    if data[:2] != b"BM" or len(data) < 26:
        raise CorruptImage("not a BMP: bad header")
    scan = Scan("BMP")
    file_size, _res, pixels_at, header = struct.unpack_from("<IIII", data, 2)
    need(data, 14 + header, "DIB header", "BMP")
    if header == 12:
        w, h = struct.unpack_from("<HH", data, 18)
    elif header >= 40:
        w, h = struct.unpack_from("<ii", data, 18)
    else:
        raise CorruptImage(f"BMP has an unknown header size {header}")
    scan.width, scan.height = abs(w), abs(h)
    scan.add("headers", 0, 14 + header, STRUCTURE)
    if header >= 124:
        cs_type = data[14 + 56 : 14 + 60]
        off, size = struct.unpack_from("<II", data, 14 + 112)
        start = 14 + off
        if cs_type == _PROFILE_EMBEDDED and size and start + size <= len(data):
            scan.icc = data[start : start + size]
            scan.add("embedded ICC profile", start, size, ICC)
        elif cs_type == _PROFILE_LINKED and size and start + size <= len(data):
            path = data[start : start + size].split(b"\x00")[0].decode("latin-1", "replace")
            scan.texts.append(("BMP linked profile", "profile path", path))
            scan.add("linked profile path", start, size, METADATA, path[:40])
    if pixels_at > len(data):
        raise CorruptImage("BMP is truncated: pixel data starts past the end of the file")
    if 14 <= file_size < len(data) and data[file_size:].strip(b"\x00"):
        scan.add("after image", file_size, len(data) - file_size, TRAILER)
    return scan


# The DIB header sizes Windows defines (BITMAPCOREHEADER ... BITMAPV5HEADER)
DIB_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)


def _bmp_header(data: bytes) -> bool:
    """A BITMAPFILEHEADER followed by a DIB header of a size Windows defines."""
    return len(data) >= 26 and int.from_bytes(data[14:18], "little") in DIB_HEADER_SIZES


FORMATS = (
    Format(
        name="BMP",
        media_type="image/bmp",
        extensions=(".bmp", ".dib"),
        signatures=(b"BM",),
        accept=_bmp_header,
        scan=scan_bmp,
        decoders=("BMP",),
    ),
)
