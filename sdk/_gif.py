"""GIF at the block level: scan, and strip losslessly.

Kept: header, logical screen descriptor, colour tables, graphic control extensions, image
descriptors with their LZW data, and the NETSCAPE2.0 / ANIMEXTS1.0 looping extension. Dropped:
comment and plain-text extensions, every other application extension (XMP, ICC, Photoshop,
IPTC, ...), and bytes after the trailer.
"""

from __future__ import annotations

import struct

from veilpix._errors import CorruptImage
from veilpix._scan import ICC, METADATA, STRUCTURE, TRAILER, UNKNOWN, Scan

__all__ = ["scan_gif", "strip_gif"]

_LOOP_APPS = (b"NETSCAPE2.0", b"ANIMEXTS1.0")


def _skip_sub_blocks(data: bytes, p: int) -> int:
    """Offset just past the zero-length terminator of the sub-blocks starting at ``p``."""
    n = len(data)
    while True:
        if p >= n:
            raise CorruptImage("GIF is truncated: data sub-blocks run past the end of the file")
        size = data[p]
        p += 1
        if size == 0:
            return p
        p += size


def _sub_block_data(data: bytes, p: int, end: int) -> bytes:
    out = bytearray()
    while p < end:
        size = data[p]
        if size == 0:
            break
        out += data[p + 1 : p + 1 + size]
        p += 1 + size
    return bytes(out)


def scan_gif(data: bytes) -> Scan:
    """Walk every block of the GIF."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        raise CorruptImage("not a GIF: bad header")
    scan = Scan("GIF")
    scan.width, scan.height, flags = struct.unpack_from("<HHB", data, 6)
    p = 13 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)
    if p > len(data):
        raise CorruptImage("GIF is truncated inside the global colour table")
    scan.add("header", 0, p, STRUCTURE)
    n = len(data)
    frames = 0
    ended = False
    largest = (scan.width, scan.height)
    while p < n:
        b = data[p]
        if b == 0x3B:
            scan.add("trailer", p, 1, STRUCTURE)
            p += 1
            ended = True
            break
        if b == 0x2C:
            if p + 10 > n:
                raise CorruptImage("GIF is truncated inside an image descriptor")
            left, top, fw, fh, f = struct.unpack_from("<HHHHB", data, p + 1)
            q = p + 10 + ((3 << ((f & 7) + 1)) if f & 0x80 else 0)
            end = _skip_sub_blocks(data, q + 1)
            frames += 1
            # a frame may reach outside the logical screen; decoders then grow the canvas
            extent = (max(scan.width, left + fw), max(scan.height, top + fh))
            if extent[0] * extent[1] > largest[0] * largest[1]:
                largest = extent
            scan.add("image", p, end - p, STRUCTURE)
            p = end
            continue
        if b != 0x21:
            if frames:
                break  # garbage after the last complete frame: dropped as a trailer
            raise CorruptImage(f"GIF is malformed: unexpected byte 0x{b:02X} at offset {p}")
        if p + 2 >= n:
            raise CorruptImage("GIF is truncated inside an extension")
        label = data[p + 1]
        if label == 0xF9:
            end = _skip_sub_blocks(data, p + 2)
            fields = _sub_block_data(data, p + 2, end)
            if len(fields) >= 4:  # rebuilt at its exact size: 4 bytes of timing and flags
                gce = b"\x21\xf9\x04" + fields[:4] + b"\x00"
                same = data[p:end] == gce
                scan.add(
                    "graphic control", p, end - p, STRUCTURE, replacement=None if same else gce
                )
            else:
                scan.add("graphic control", p, end - p, UNKNOWN, "malformed")
        elif label == 0xFF:
            size = data[p + 2]
            ident = data[p + 3 : p + 3 + size]
            end = _skip_sub_blocks(data, p + 3 + size)
            _application(scan, data, ident, start=p, body=p + 3 + size, end=end)
        elif label == 0xFE:
            end = _skip_sub_blocks(data, p + 2)
            text = _sub_block_data(data, p + 2, end).decode("latin-1", "replace")
            scan.comments.append(("GIF comment", text))
            scan.add("comment", p, end - p, METADATA, text[:40])
        elif label == 0x01:
            end = _skip_sub_blocks(data, p + 2 + 1 + data[p + 2])
            text = _sub_block_data(data, p + 3 + data[p + 2], end).decode("latin-1", "replace")
            scan.texts.append(("GIF plain text", "text", text))
            scan.add("plain text", p, end - p, METADATA)
        else:
            end = _skip_sub_blocks(data, p + 2)
            scan.add(f"extension 0x{label:02X}", p, end - p, UNKNOWN)
        p = end
    if not frames:
        raise CorruptImage("GIF is malformed: no image in the file")
    if p < n and (not ended or data[p:].strip(b"\x00")):
        scan.add("after trailer", p, n - p, TRAILER)
    scan.frames = frames
    scan.extra.update(
        has_trailer=ended,
        largest_frame=largest,
        total_pixels=frames * largest[0] * largest[1],
    )
    return scan


def _application(scan: Scan, data: bytes, ident: bytes, *, start: int, body: int, end: int) -> None:
    label = ident.decode("latin-1", "replace")
    if ident in _LOOP_APPS:
        sub = _sub_block_data(data, body, end)
        if len(sub) >= 3 and sub[0] == 1:
            loop = sub[1:3]
            scan.extra["loop"] = struct.unpack("<H", loop)[0]
            rebuilt = b"\x21\xff\x0b" + ident + b"\x03\x01" + loop + b"\x00"
            same = data[start:end] == rebuilt
            scan.add(
                f"application {label}",
                start,
                end - start,
                STRUCTURE,
                replacement=None if same else rebuilt,
            )
        else:
            scan.add(f"application {label}", start, end - start, UNKNOWN, "malformed")
        return
    if ident.startswith(b"XMP Data"):
        raw = data[body:end]
        stop = raw.find(b"<?xpacket end")
        close = raw.find(b"?>", stop) if stop >= 0 else -1
        scan.xmp.append(raw[: close + 2] if close >= 0 else raw)
        scan.add("application XMP", start, end - start, METADATA)
        return
    if ident.startswith(b"ICCRGBG1"):
        scan.icc = _sub_block_data(data, body, end)
        scan.add("application ICC", start, end - start, ICC)
        return
    if ident.startswith(b"MGK8BIM"):
        scan.irb.append(_sub_block_data(data, body, end))
    elif ident.startswith(b"MGKIPTC"):
        scan.iptc.append(_sub_block_data(data, body, end))
    elif ident.startswith(b"C2PA"):
        scan.c2pa.append(f"GIF C2PA application extension ({end - start} bytes)")
    scan.add(f"application {label}", start, end - start, METADATA)


def strip_gif(data: bytes, scan: Scan) -> bytes:
    """The GIF with structure blocks only, always closed with a trailer."""
    out = bytearray()
    for part in scan.parts:
        if part.kind == STRUCTURE:
            out += part.bytes_in(data)
    if not scan.extra.get("has_trailer"):
        out += b"\x3b"
    return bytes(out)
