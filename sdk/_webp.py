"""WebP at the RIFF chunk level: scan, and strip losslessly.

Kept: VP8X (its EXIF/XMP flags cleared), VP8, VP8L, ALPH, ANIM, ANMF (each frame rebuilt from
its ALPH/VP8/VP8L sub-chunks only) and a standard ICCP when the policy keeps it. Dropped:
EXIF, XMP, unknown chunks (in the file and inside animation frames) and bytes after the RIFF.
"""

from __future__ import annotations

import struct

from veilpix._errors import CorruptImage
from veilpix._scan import ICC, METADATA, STRUCTURE, TRAILER, UNKNOWN, Scan, need

__all__ = ["scan_webp", "strip_webp"]

_IMAGE_CHUNKS = (b"VP8 ", b"VP8L", b"ALPH")
_FLAG_ICC, _FLAG_ALPHA, _FLAG_EXIF, _FLAG_XMP, _FLAG_ANIM = 0x20, 0x10, 0x08, 0x04, 0x02


def _chunks(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int, int]]:
    """(fourcc, chunk start, payload start, payload end) for each chunk in [start, end)."""
    out = []
    p = start
    while p + 8 <= end:
        kind = data[p : p + 4]
        (size,) = struct.unpack_from("<I", data, p + 4)
        body_end = p + 8 + size
        if body_end > end:
            raise CorruptImage(
                f"WebP is truncated or malformed: chunk {kind.decode('latin-1')!r} runs past its container"
            )
        out.append((kind, p, p + 8, body_end))
        p = body_end + (size & 1)
    if p < end and p + 8 > end and data[p:end].strip(b"\x00"):
        raise CorruptImage("WebP is malformed: partial chunk at the end of the RIFF container")
    return out


def _vp8_size(body: bytes) -> tuple[int, int]:
    if len(body) < 10 or body[3:6] != b"\x9d\x01\x2a":
        raise CorruptImage("WebP is malformed: bad VP8 frame header")
    w, h = struct.unpack_from("<HH", body, 6)
    return w & 0x3FFF, h & 0x3FFF


def _vp8l_size(body: bytes) -> tuple[int, int]:
    if len(body) < 5 or body[0] != 0x2F:
        raise CorruptImage("WebP is malformed: bad VP8L header")
    bits = int.from_bytes(body[1:5], "little")
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1


def scan_webp(data: bytes) -> Scan:
    """Walk every RIFF chunk and every animation sub-chunk."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise CorruptImage("not a WebP: bad RIFF header")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    riff_end = 8 + riff_size
    need(data, riff_end, "RIFF container", "WebP")
    scan = Scan("WEBP")
    frames = 0
    has_image = False
    lossless = False
    for kind, start, body, end in _chunks(data, 12, riff_end):
        name = kind.decode("latin-1").strip()
        payload = data[body:end]
        length = end - start + ((end - body) & 1)
        if kind == b"VP8X":
            if len(payload) < 10:
                raise CorruptImage("WebP is malformed: VP8X chunk too short")
            scan.width = int.from_bytes(payload[4:7], "little") + 1
            scan.height = int.from_bytes(payload[7:10], "little") + 1
            scan.extra["vp8x_flags"] = payload[0]
            scan.add(name, start, length, STRUCTURE)
        elif kind in _IMAGE_CHUNKS:
            has_image = kind != b"ALPH" or has_image
            if kind == b"VP8 " and not scan.width:
                scan.width, scan.height = _vp8_size(payload)
            elif kind == b"VP8L":
                lossless = True
                if not scan.width:
                    scan.width, scan.height = _vp8l_size(payload)
            scan.add(name, start, length, STRUCTURE)
        elif kind == b"ANIM":
            if len(payload) < 6:
                raise CorruptImage("WebP is malformed: animation header too short")
            scan.extra["loop"] = struct.unpack_from("<H", payload, 4)[0]
            scan.add(name, start, length, STRUCTURE)
        elif kind == b"ANMF":
            frames += 1
            if len(payload) < 16:
                raise CorruptImage("WebP is malformed: animation frame header too short")
            sub = _chunks(data, body + 16, end)
            dropped = [k for k, *_ in sub if k not in _IMAGE_CHUNKS]
            if not any(k in (b"VP8 ", b"VP8L") for k, *_ in sub):
                raise CorruptImage("WebP is malformed: animation frame without image data")
            lossless = lossless or any(k == b"VP8L" for k, *_ in sub)
            has_image = True
            scan.add(name, start, length, STRUCTURE)
            for k in dropped:
                scan.add(f"ANMF/{k.decode('latin-1').strip()}", start, 0, UNKNOWN, "inside a frame")
        elif kind == b"ICCP":
            scan.icc = payload
            scan.add(name, start, length, ICC)
        elif kind == b"EXIF":
            scan.add_exif(payload)
            scan.add(name, start, length, METADATA)
        elif kind == b"XMP ":
            scan.xmp.append(payload)
            scan.add(name, start, length, METADATA)
        else:
            if kind == b"C2PA":
                scan.c2pa.append(f"WebP C2PA chunk ({end - body} bytes)")
            scan.add(name, start, length, UNKNOWN, "unknown chunk")
    if not has_image:
        raise CorruptImage("WebP is malformed: no image data")
    if riff_end < len(data):
        scan.add("after RIFF", riff_end, len(data) - riff_end, TRAILER)
    scan.frames = max(frames, 1)
    scan.extra.update(lossless=lossless, animated=frames > 0, riff_end=riff_end)
    return scan


def _wrap(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def strip_webp(data: bytes, scan: Scan, *, icc: bytes | None) -> bytes:
    """The WebP with image chunks only (plus ``icc`` right after VP8X)."""
    out = bytearray()
    for kind, _start, body, end in _chunks(data, 12, scan.extra["riff_end"]):
        if kind == b"VP8X":
            # rebuilt at its exact 10 bytes: known flags, zero reserved bits, the canvas size
            flags = data[body] & (_FLAG_ALPHA | _FLAG_ANIM)
            if icc is not None:
                flags |= _FLAG_ICC
            out += _wrap(kind, bytes((flags, 0, 0, 0)) + data[body + 4 : body + 10])
            if icc is not None:
                out += _wrap(b"ICCP", icc)
        elif kind == b"ANIM":
            out += _wrap(kind, data[body : body + 6])  # background colour and loop count
        elif kind in _IMAGE_CHUNKS:
            out += _wrap(kind, data[body:end])
        elif kind == b"ANMF":
            frame = bytearray(data[body : body + 16])
            for sub, _s, sb, se in _chunks(data, body + 16, end):
                if sub in _IMAGE_CHUNKS:
                    frame += _wrap(sub, data[sb:se])
            out += _wrap(kind, bytes(frame))
    return b"RIFF" + struct.pack("<I", len(out) + 4) + b"WEBP" + bytes(out)
