"""Raw images inside other bytes: where one starts, what it is, and where it ends.

A signature found at any offset (:func:`_raw_candidates`, C-speed ``bytes.find`` only) is
confirmed by the structure that follows (:func:`_image_at`), so random data almost never
counts; the image's extent comes from walking its own structure (:func:`_image_end`).
Images veilpix cannot sanitize (PSD, ICO, JPEG XL, ...) are named by :func:`other_image`.
"""

from __future__ import annotations

import re
from typing import Literal

from veilpix.finder._signatures import (
    _ASCII_SIGNATURES,
    _BMP_HEADERS,
    _JPEG_MARKERS,
    _OTHER_IMAGES,
    _OTHER_MAGICS,
    _RAW_SIGNATURES,
)
from veilpix.formats._sniff import looks_like_image, media_type, sniff

_PRINTABLE = re.compile(rb"[\t\n\r\x20-\x7e]*")


def _image_at(data: bytes, k: int) -> str | None:
    """The format of an image whose signature starts at ``k`` inside other bytes, or None.

    Short signatures are confirmed by the structure that follows, so random data (a
    compressed file, audio) almost never counts: a JPEG needs its first segments to chain up
    (or to run to the end of the data: a truncated image still counts), a TIFF a sane first
    directory, a BMP zero reserved bytes and a known header size."""
    head = data[k : k + 32]
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG" if _jpeg_chains(data, k) else None
    if _PRINTABLE.fullmatch(data, k, k + 24) is not None:
        return None  # all text: a word in prose ("the file starts with GIF89a"), no image
    if head[:4] == b"RIFF":
        return "WEBP" if head[8:12] == b"WEBP" and head[12:15] == b"VP8" else None
    if head[:8] == b"\x89PNG\r\n\x1a\n":  # a real PNG starts with its IHDR chunk
        return "PNG" if head[8:16] == b"\x00\x00\x00\rIHDR" else None
    if head[:6] in (b"GIF87a", b"GIF89a"):  # a screen, then a block where one must be
        table = 3 << ((head[10] & 7) + 1) if len(head) > 10 and head[10] & 0x80 else 0
        block = data[k + 13 + table : k + 14 + table]
        sized = head[6:8] != b"\x00\x00" and head[8:10] != b"\x00\x00"
        return "GIF" if sized and block in (b"\x21", b"\x2c", b"\x3b") else None
    if head[:2] == b"BM":
        if len(head) < 26 or head[6:10] != b"\x00\x00\x00\x00":
            return None
        ok = int.from_bytes(head[14:18], "little") in _BMP_HEADERS
        return "BMP" if ok and 26 <= int.from_bytes(head[2:6], "little") <= len(data) - k else None
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        order: Literal["little", "big"] = "little" if head[:2] == b"II" else "big"
        ifd = int.from_bytes(head[4:8], order)
        count = int.from_bytes(data[k + ifd : k + ifd + 2], order)
        kind = int.from_bytes(data[k + ifd + 4 : k + ifd + 6], order)
        sane = 8 <= ifd < len(data) - k and 0 < count <= 1000 and 1 <= kind <= 18
        return "TIFF" if sane else None
    if head[:4] in (b"II+\x00", b"MM\x00+"):  # BigTIFF: 8-byte offsets, a fixed header
        return "TIFF" if head[4:8] in (b"\x08\x00\x00\x00", b"\x00\x08\x00\x00") else None
    return sniff(data[k : k + 64]) if looks_like_image(head) else None


def other_image(data: bytes, k: int) -> str | None:
    """What image veilpix cannot sanitize starts at ``k``, confirmed beyond its magic (short
    magics such as ICO's ``00 00 01 00`` also start prose decoded as base64, or a 0/1 mask),
    or None. A bare JPEG XL codestream (``ff 0a``, two bytes) is not looked for."""
    head = data[k : k + 40]
    if not head.startswith(_OTHER_MAGICS):
        return None
    for magic, what in _OTHER_IMAGES.items():
        if not head.startswith(magic):
            continue
        if magic == b"8BPS":  # version 1 or 2, six reserved zero bytes, 1-56 channels
            ok = head[4:6] in (b"\x00\x01", b"\x00\x02") and head[6:12] == bytes(6)
            ok = ok and 1 <= int.from_bytes(head[12:14], "big") <= 56
        elif magic == b"\x00\x00\x01\x00":  # 1-255 entries; the first one's image inside
            count = int.from_bytes(head[4:6], "little")
            size = int.from_bytes(head[14:18], "little")
            offset = int.from_bytes(head[18:22], "little")
            ok = 0 < count < 256 and head[9] == 0 and head[10:12] in (b"\x00\x00", b"\x01\x00")
            ok = ok and int.from_bytes(head[12:14], "little") in (0, 1, 4, 8, 16, 24, 32)
            ok = ok and 6 + 16 * count <= offset and size > 0 and k + offset + size <= len(data)
        elif magic == b"qoif":  # non-zero size, 3 or 4 channels, colour space 0 or 1
            ok = head[4:8] != bytes(4) and head[8:12] != bytes(4) and head[12] in (3, 4)
            ok = ok and head[13] in (0, 1)
        elif magic == b"\x76\x2f\x31\x01":  # version 2, then named attributes
            ok = head[4] == 2 and head[5:6].isalpha()
        elif magic == b"\xff\x4f\xff\x51":  # SIZ segment with a sane length
            ok = 41 <= int.from_bytes(head[4:6], "big") <= 49190
        else:
            ok = True
        if ok:
            return what
    return None


def _jpeg_chains(data: bytes, k: int) -> bool:
    """Is there a JPEG at ``k``: two segments after SOI that fit and chain up (audio samples
    and machine code hold ``ff d8 ff`` too, rarely followed by that), or a first segment
    that names itself (JFIF, Exif, XMP), which counts even when the data ends inside it?"""
    pos = k + 2
    first = data[pos + 1 : pos + 2]
    if first in (b"\xe0", b"\xe1") and data[pos + 4 : pos + 8] in (
        b"JFIF",
        b"JFXX",
        b"Exif",
        b"http",
    ):
        return True
    for _ in range(2):
        if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] not in _JPEG_MARKERS:
            return False
        if data[pos + 1] == 0xDA:  # scan data before any table or frame: not a JPEG
            return False
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > len(data):
            return False
        pos += 2 + length
    return pos + 2 <= len(data) and data[pos] == 0xFF and data[pos + 1] in _JPEG_MARKERS


def _image_end(data: bytes, k: int, fmt: str) -> int | None:
    """Where the image starting at ``k`` ends, by walking its own structure; None when the
    format gives no end (TIFF, HEIF, AVIF) or the structure does not hold."""
    n = len(data)
    try:
        if fmt == "PNG":
            pos = k + 8
            while pos + 12 <= n:
                size = int.from_bytes(data[pos : pos + 4], "big")
                kind = data[pos + 4 : pos + 8]
                pos += 12 + size
                if kind == b"IEND":
                    return pos if pos <= n else None
            return None
        if fmt == "WEBP":
            end = k + 8 + int.from_bytes(data[k + 4 : k + 8], "little")
            end += (end - k) & 1
            return min(end, n) if end <= n + 1 else None
        if fmt == "BMP":
            return k + int.from_bytes(data[k + 2 : k + 6], "little")
        if fmt == "GIF":
            return _gif_end(data, k)
        if fmt == "JPEG":
            return _jpeg_end(data, k)
    except IndexError:
        return None
    return None


def _gif_end(data: bytes, k: int) -> int | None:
    n = len(data)
    flags = data[k + 10]
    pos = k + 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while pos < n:
        block = data[pos]
        if block == 0x3B:
            return pos + 1
        if block == 0x21:
            pos += 2
        elif block == 0x2C:
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:
            return None
        while pos < n and data[pos]:  # data sub-blocks up to the terminator
            pos += data[pos] + 1
        pos += 1
    return None


def _jpeg_end(data: bytes, k: int) -> int | None:
    n = len(data)
    pos = k + 2
    while pos + 1 < n:
        if data[pos] != 0xFF:
            return None
        while pos + 1 < n and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos + 1]
        if marker == 0xD9:
            return pos + 2
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # entropy-coded data up to the next marker that is not RSTn
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return None
                nxt = data[pos + 1]
                if nxt == 0 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    pos += 1 if nxt == 0xFF else 2
                    continue
                break
    return None


def _raw_candidates(data: bytes) -> list[int]:
    """Offsets (after 0) where an image signature occurs, in order: C-speed finds only.
    ASCII data can hold only the signatures without high bytes, and those (but GIF's and
    RIFF's) need a NUL byte somewhere."""
    sigs: tuple[bytes, ...]
    if not data.isascii():
        sigs = _RAW_SIGNATURES
    elif b"\x00" in data:
        sigs = _ASCII_SIGNATURES
    else:
        return []  # every image file holds a NUL
    hits: list[int] = []
    for sig in sigs:
        back = 4 if sig == b"ftyp" else 0  # a box type: the file starts 4 bytes earlier
        pos = data.find(sig, 1)
        while pos >= 0:
            if pos - back >= 1:
                hits.append(pos - back)
            pos = data.find(sig, pos + 1)
    return sorted(set(hits))


def _length_prefixed(data: bytes, k: int, end: int) -> bool:
    """Does a length field right before ``k`` give the image's size (a 2- or 4-byte integer
    either way round, a protobuf varint, a msgpack bin8 header)?"""
    size = end - k
    for width in (4, 2):
        if k >= width:
            field = data[k - width : k]
            if size in (int.from_bytes(field, "big"), int.from_bytes(field, "little")):
                return True
    if k >= 2 and data[k - 2] == 0xC4 and data[k - 1] == size:
        return True
    value, shift, i = 0, 0, k - 1  # a varint ends at k - 1: read it backwards
    while i >= 0 and k - i <= 5 and (i == k - 1 or data[i] & 0x80):
        i -= 1
    for start in range(i + 1, k):
        value, shift = 0, 0
        for b in data[start:k]:
            value |= (b & 0x7F) << shift
            shift += 7
        if value == size and all(b & 0x80 for b in data[start : k - 1]) and not data[k - 1] & 0x80:
            return True
    return False


def _whole_image(data: bytes | None) -> bool:
    """Is ``data`` one image from its first byte to (about) its last, by its own structure?"""
    if not data or not looks_like_image(data):
        return False
    fmt = sniff(data)
    end = _image_end(data, 0, fmt) if _image_at(data, 0) == fmt else None
    return end is not None and end >= len(data) - 3


def _media(data: bytes) -> str | None:
    return media_type(data)
