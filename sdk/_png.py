"""PNG and APNG at the chunk level: scan, and strip losslessly.

Kept: the critical chunks, the colour and display chunks a decoder uses (tRNS, gAMA, cHRM,
sRGB, sBIT, bKGD, pHYs, hIST, cICP, mDCv, cLLi), the animation chunks (acTL, fcTL, fdAT) and
a standard ICC profile rewritten under a neutral name. Dropped: text (tEXt, zTXt, iTXt, incl.
XMP and ImageMagick "Raw profile" EXIF/IPTC), eXIf, tIME, caBX (C2PA), private and unknown
chunks, and anything after IEND.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Any

from veilpix._errors import CorruptImage
from veilpix._scan import ICC, METADATA, STRUCTURE, TRAILER, UNKNOWN, Scan, need

__all__ = ["SIGNATURE", "iccp_chunk", "inflate_capped", "scan_png", "strip_png"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEEP = frozenset(
    {
        b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT",
        b"bKGD", b"pHYs", b"hIST", b"acTL", b"fcTL", b"fdAT", b"cICP", b"mDCv", b"cLLi",
    }
)  # fmt: skip
_TEXT_CAP = 4 * 1024 * 1024
_HEX = re.compile(r"[0-9a-fA-F\s]*")  # decompressed text / profile bytes read for the report


def inflate_capped(blob: bytes, cap: int = _TEXT_CAP) -> bytes | None:
    """zlib-inflate at most ``cap`` bytes; None when the stream is damaged or larger."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(blob, cap)
    except zlib.error:
        return None
    return None if d.unconsumed_tail else out


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def iccp_chunk(icc: bytes) -> bytes:
    """An iCCP chunk for ``icc`` under a neutral profile name."""
    return _chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc))


_FIXED = {
    b"IHDR": 13, b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"pHYs": 9, b"acTL": 8, b"fcTL": 26,
    b"cICP": 4, b"mDCv": 24, b"cLLi": 8, b"IEND": 0,
}  # fmt: skip
_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def _expected_size(kind: bytes, info: dict[str, Any], length: int) -> int | None:
    """The exact size a structure chunk must have (None: malformed), ``length`` when it
    holds variable data (IDAT, fdAT, PLTE)."""
    if kind in _FIXED:
        return _FIXED[kind] if length >= _FIXED[kind] else None
    ctype: int = info.get("color_type", 0)
    palette = int(info.get("palette", 0))
    if kind == b"sBIT":
        size = 3 if ctype == 3 else _CHANNELS.get(ctype, 4)
    elif kind == b"bKGD":
        size = 1 if ctype == 3 else (2 if ctype in (0, 4) else 6)
    elif kind == b"tRNS":
        if ctype == 3:
            return min(length, palette) if palette else None
        size = 2 if ctype == 0 else (6 if ctype == 2 else 0)
        if not size:
            return None  # no tRNS for images that already have alpha
    elif kind == b"hIST":
        size = 2 * palette
        if not size:
            return None
    else:
        return length
    return size if length >= size else None


def _raw_profile(text: str) -> bytes | None:
    """Decode an ImageMagick "Raw profile type ..." value: '\\nname\\n  length\\nhex...'.

    Only the declared number of bytes is read from the leading hex digits, so junk after the
    hex (seen in the wild) does not hide the profile from the report."""
    lines = text.lstrip("\n").split("\n", 2)
    if len(lines) < 3:
        return None
    try:
        length = int(lines[1].strip())
    except ValueError:
        return None
    match = _HEX.match(lines[2])
    digits = "".join(match.group(0).split()) if match else ""
    try:
        return bytes.fromhex(digits[: 2 * length])
    except ValueError:
        return None


def _text(scan: Scan, kind: str, key: str, value: str) -> None:
    k = key.lower()
    if k in ("xml:com.adobe.xmp",) or k == "raw profile type xmp":
        blob = value.encode("utf-8") if k.startswith("xml") else _raw_profile(value)
        if blob:
            scan.xmp.append(blob)
        return
    if k in ("raw profile type exif", "raw profile type app1"):
        blob = _raw_profile(value)
        if blob:
            scan.add_exif(blob)
        return
    if k in ("raw profile type iptc", "raw profile type 8bim"):
        blob = _raw_profile(value)
        if blob:
            (scan.irb if b"8BIM" in blob[:64] else scan.iptc).append(blob)
        return
    if k in ("raw profile type icc", "raw profile type icm"):
        blob = _raw_profile(value)
        if blob and scan.icc is None:
            scan.icc = blob
        return
    scan.texts.append((f"PNG {kind}", key, value))


def scan_png(data: bytes) -> Scan:
    """Walk every chunk; raise CorruptImage on a bad length, CRC or order."""
    if not data.startswith(SIGNATURE):
        raise CorruptImage("not a PNG: bad signature")
    scan = Scan("PNG")
    p, n = 8, len(data)
    seen_ihdr = seen_idat = False
    iend: int | None = None
    while p < n:
        need(data, p + 8, "chunk header", "PNG")
        length, kind = struct.unpack_from(">I4s", data, p)
        if length > 0x7FFFFFFF or not kind.isalpha():
            raise CorruptImage(f"PNG is malformed: bad chunk header at byte {p}")
        end = p + 12 + length
        need(data, end, f"chunk {kind.decode('latin-1')}", "PNG")
        body = data[p + 8 : p + 8 + length]
        name = kind.decode("latin-1")
        if not seen_ihdr:
            if kind != b"IHDR" or length != 13:
                raise CorruptImage("PNG is malformed: IHDR is not the first chunk")
            seen_ihdr = True
            w, h, depth, ctype, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            scan.width, scan.height = w, h
            scan.extra.update(bit_depth=depth, color_type=ctype, interlace=interlace)
        if kind in KEEP:
            (crc,) = struct.unpack_from(">I", data, end - 4)
            if zlib.crc32(kind + body) != crc:
                raise CorruptImage(f"PNG is damaged: CRC mismatch in {name} chunk")
            size = _expected_size(kind, scan.extra, length)
            if kind == b"PLTE":
                if length % 3 or length > 768:
                    raise CorruptImage("PNG is malformed: bad palette length")
                scan.extra["palette"] = length // 3
            if size == length:
                scan.add(name, p, end - p, STRUCTURE)
            elif size is not None and size < length:
                # an oversized ancillary chunk: keep the fields, not what trails them
                scan.add(
                    name,
                    p,
                    end - p,
                    STRUCTURE,
                    "trailing bytes removed",
                    replacement=_chunk(kind, body[:size]),
                )
            else:
                scan.add(name, p, end - p, UNKNOWN, "malformed chunk")
                p = end
                continue
            if kind == b"IDAT" and not seen_idat:
                seen_idat = True
                # an APNG default image without its own fcTL is shown as an extra frame
                scan.extra["default_image"] = not scan.extra.get("fctl_before_idat")
            elif kind == b"fcTL" and not seen_idat:
                scan.extra["fctl_before_idat"] = True
            elif kind == b"acTL" and length >= 8:
                scan.extra["apng_frames"] = struct.unpack(">I", body[:4])[0]
            elif kind == b"IEND":
                iend = end
                break
        elif kind == b"iCCP":
            sep = body.find(b"\x00")
            prof = inflate_capped(body[sep + 2 :]) if sep > 0 else None
            if prof:
                scan.icc = prof
            scan.add(
                name,
                p,
                end - p,
                ICC if prof else METADATA,
                body[: max(sep, 0)][:40].decode("latin-1"),
            )
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            _text_chunk(scan, name, body)
            scan.add(name, p, end - p, METADATA)
        elif kind in (b"eXIf", b"exIf", b"zxIf"):
            blob = inflate_capped(body) if kind == b"zxIf" else body
            if blob:
                scan.add_exif(blob)
            scan.add(name, p, end - p, METADATA)
        elif kind == b"tIME" and length == 7:
            y, mo, d, hh, mm, ss = struct.unpack(">HBBBBB", body)
            scan.timestamps.append(
                ("PNG tIME", f"{y:04d}-{mo:02d}-{d:02d} {hh:02d}:{mm:02d}:{ss:02d}")
            )
            scan.add(name, p, end - p, METADATA)
        elif kind == b"caBX":
            scan.c2pa.append(f"PNG caBX chunk ({length} bytes)")
            scan.add(name, p, end - p, METADATA, "C2PA")
        else:
            scan.add(name, p, end - p, UNKNOWN, "unknown or private chunk")
        p = end
    if not seen_idat:
        raise CorruptImage("PNG is malformed: no image data (IDAT)")
    if iend is None:
        raise CorruptImage("PNG is truncated: no IEND chunk")
    if "apng_frames" in scan.extra:
        scan.frames = max(1, scan.extra["apng_frames"] + (1 if scan.extra["default_image"] else 0))
    if iend < n:
        scan.add("after IEND", iend, n - iend, TRAILER)
    return scan


def _text_chunk(scan: Scan, name: str, body: bytes) -> None:
    sep = body.find(b"\x00")
    if sep < 0:
        return
    key = body[:sep].decode("latin-1", "replace")
    rest = body[sep + 1 :]
    if name == "tEXt":
        value = rest.decode("latin-1", "replace")
    elif name == "zTXt":
        raw = inflate_capped(rest[1:])
        value = raw.decode("latin-1", "replace") if raw is not None else "(compressed text)"
    else:  # iTXt: flag, method, language\0, translated keyword\0, text
        if len(rest) < 2:
            return
        compressed = rest[0] == 1
        parts = rest[2:].split(b"\x00", 2)
        if len(parts) < 3:
            return
        raw = inflate_capped(parts[2]) if compressed else parts[2]
        value = raw.decode("utf-8", "replace") if raw is not None else "(compressed text)"
    _text(scan, name, key, value)


def strip_png(data: bytes, scan: Scan, *, icc: bytes | None) -> bytes:
    """The PNG with structure chunks only (plus ``icc`` as a fresh iCCP before PLTE/IDAT)."""
    out = bytearray(SIGNATURE)
    icc_done = icc is None
    for part in scan.parts:
        if part.kind != STRUCTURE:
            continue
        if not icc_done and part.name != "IHDR":
            out += iccp_chunk(icc or b"")
            icc_done = True
        out += part.bytes_in(data)
    return bytes(out)
