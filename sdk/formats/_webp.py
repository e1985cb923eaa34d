"""WebP at the RIFF chunk level: scan (for ``inspect`` and for checking veilpix's output).

WebP is never stripped losslessly: neither bitstream says where it ends. A VP8 frame header
gives the size of its first partition only, the last token partition runs to the end of the
chunk, every partition can carry bytes its boolean decoder never reads, and a VP8L stream
ends wherever its entropy codes end; libwebp decodes such files without a word (and even
with the last byte cut). So a picture veilpix cannot prove is re-encoded from its pixels
(lossless WebP pixel for pixel). The scan flags what a clean file cannot hold: metadata
chunks, unknown chunks (in the file and inside animation frames), a second image bitstream
in a still image or a frame, and bytes after the RIFF container.
"""

from __future__ import annotations

import struct

from veilpix._errors import CorruptImage
from veilpix.formats._format import Format
from veilpix.formats._scan import ICC, METADATA, STRUCTURE, TRAILER, UNKNOWN, Scan, need

__all__ = ["scan_webp"]

_IMAGE_CHUNKS = (b"VP8 ", b"VP8L", b"ALPH")


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
        elif kind in _IMAGE_CHUNKS and kind != b"ALPH" and has_image:
            scan.add(name, start, length, UNKNOWN, "a second image bitstream")
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
            streams = sum(k in (b"VP8 ", b"VP8L") for k, *_ in sub)
            if not streams:
                raise CorruptImage("WebP is malformed: animation frame without image data")
            if streams > 1:
                dropped.append(b"a second image bitstream")
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


FORMATS = (
    Format(
        name="WEBP",
        media_type="image/webp",
        extensions=(".webp",),
        signatures=(b"RIFF",),
        accept=lambda data: data[8:12] == b"WEBP",
        scan=scan_webp,
        strip_refused="a WebP bitstream's end cannot be proved (libwebp ignores bytes after it)",
        decoders=("WEBP",),
        exif_orientation=True,
        animated=True,
    ),
)
