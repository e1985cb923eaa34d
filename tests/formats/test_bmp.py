"""BMP: always rebuilt from its pixels; hostile headers (wild offsets and sizes, absurd
depths and compressions, a V5 header's linked or embedded profile) fail closed by the contract
in tests/hostilekit.py."""

from __future__ import annotations

import struct

import numpy as np

import factories as F
import veilpix
from hostilekit import check_all, hostile, pixels, put


# =========================================================================== well-formed
def test_bmp_is_rebuilt_from_pixels(assert_clean) -> None:  # type: ignore[no-untyped-def]
    data = F.bmp()
    out = veilpix.sanitize(data)
    assert out.media_type == "image/bmp"
    assert np.array_equal(pixels(out.data), pixels(data))
    assert_clean(out.data, "out.bmp")


# =========================================================================== hostile
def bmp_v5(*, cs_type: bytes, profile_at: int, profile_size: int, profile: bytes = b"") -> bytes:
    """F.bmp() rewritten with a BITMAPV5HEADER carrying a linked or embedded profile."""
    base = F.bmp()
    raster = base[54:]
    header = bytearray(base[14:54] + bytes(84))
    struct.pack_into("<I", header, 0, 124)
    header[56:60] = cs_type[::-1]
    struct.pack_into("<II", header, 112, profile_at, profile_size)
    off_bits = 14 + 124
    body = bytes(header) + raster + profile
    return b"BM" + struct.pack("<IHHI", 14 + len(body), 0, 0, off_bits) + body


@hostile
def test_bmp_bogus_headers() -> None:
    data = F.bmp()

    def at(offset: int, fmt: str, value: int) -> bytes:
        return put(data, offset, value, fmt)

    cases = [
        ("DIB header 124, file 30 bytes", data[:14] + struct.pack("<I", 124) + data[18:30]),
        ("pixel offset past the end", at(10, "<I", 0xFFFFFFF0)),
        ("pixel offset 0", at(10, "<I", 0)),
        ("file size 0", at(2, "<I", 0)),
        ("file size huge", at(2, "<I", 0xFFFFFFFF)),
        ("width 0", at(18, "<i", 0)),
        ("height 0", at(22, "<i", 0)),
        ("negative width", at(18, "<i", -64)),
        ("planes 0", at(26, "<H", 0)),
        ("bits per pixel 0", at(28, "<H", 0)),
        ("bits per pixel 64", at(28, "<H", 64)),
        ("bits per pixel 7", at(28, "<H", 7)),
        ("compression 99", at(30, "<I", 99)),
        ("RLE8 on 24-bit", at(30, "<I", 1)),
        ("bitfields without masks", at(30, "<I", 3)),
        ("colours used 2^32-1", at(46, "<I", 0xFFFFFFFF)),
        ("pixel data cut", data[:100]),
        (
            "core header 12 with zero size",
            data[:14] + struct.pack("<IHHHH", 12, 0, 0, 1, 24) + data[26:],
        ),
        (
            "V5 embedded profile out of range",
            bmp_v5(cs_type=b"MBED", profile_at=0xFFFFFFF0, profile_size=0xFFFFFFFF),
        ),
        (
            "V5 linked profile path",
            bmp_v5(
                cs_type=b"LINK",
                profile_at=124 + 64 * 48 * 3,
                profile_size=40,
                profile=b"C:\\Users\\Jane Doe\\profile.icc".ljust(40, b"\x00"),
            ),
        ),
    ]
    check_all(cases)
