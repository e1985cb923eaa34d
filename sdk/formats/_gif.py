"""GIF at the block level: scan, and strip losslessly.

Kept: header, logical screen descriptor, colour tables, graphic control extensions, image
descriptors with their LZW data, and the NETSCAPE2.0 / ANIMEXTS1.0 looping extension. Dropped:
comment and plain-text extensions, every other application extension (XMP, ICC, Photoshop,
IPTC, ...), and bytes after the trailer.

The LZW data is proved, not just copied: its codes are walked to the end code (the code width
grows with the table exactly as a decoder's does), and the data sub-blocks are rebuilt to end
with the byte that holds it; sub-blocks after it are dropped. Data that codes more pixels than
its frame holds, or has no end code, is not stripped (the picture takes the pixel path).
"""

from __future__ import annotations

import re
import struct

from veilpix._errors import CorruptImage
from veilpix.formats._format import Format
from veilpix.formats._scan import (
    ICC,
    METADATA,
    STRUCTURE,
    TRAILER,
    UNKNOWN,
    Part,
    Scan,
    Unproved,
    proved_once,
)

__all__ = ["LZW_SEGMENTS", "LZW_WALK", "lzw_extent", "prove_gif", "scan_gif", "strip_gif"]

_LOOP_APPS = (b"NETSCAPE2.0", b"ANIMEXTS1.0")
LZW_WALK = 16 * 1024 * 1024  # LZW bytes walked per file (about 0.5 s); more: pixel path
_LZW_BULK = 4096  # codes read at once by the numpy walk
LZW_SEGMENTS = 20_000  # clear codes walked per file (~1.5 s); encoders clear every ~4,000 codes
_ZEROS = re.compile(rb"\x00+")


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


def lzw_extent(
    lzw: bytes,
    min_size: int,
    *,
    msb: bool = False,
    early: int = 0,
    max_segments: int = 0,
) -> tuple[int, int, int] | None:
    """(bytes up to and including the one holding the end code, pixels the codes make, the
    set of colour indices they use as a bit mask) of the GIF LZW data ``lzw``; None when it
    ends without an end code or holds a code no decoder could have in its table (damage),
    or a clear code right after a clear code (a padding channel). ``msb`` and ``early`` read
    TIFF's variant (codes packed from the high bit, the width growing one code early); TIFF
    data that stops without an end code ends with its last whole code. Short data is walked
    code by code, longer data a table segment at a time with numpy (the same answer).
    ``max_segments`` (default ``LZW_SEGMENTS``) bounds the clear codes walked: more also
    gives None (the pixel path decodes such data in C)."""
    limit = max_segments or LZW_SEGMENTS
    if len(lzw) > 2048:
        return _lzw_extent_np(lzw, min_size, msb=msb, early=early, max_segments=limit)
    return _lzw_extent_codes(lzw, min_size, msb=msb, early=early, max_segments=limit)


def _lzw_extent_codes(
    lzw: bytes, min_size: int, *, msb: bool = False, early: int = 0, max_segments: int
) -> tuple[int, int, int] | None:
    """``lzw_extent``, one code at a time (as a decoder reads them)."""
    if not 2 <= min_size <= 11:
        return None
    clear = 1 << min_size
    end = clear + 1
    lengths = [1] * clear + [0] * (4096 - clear)
    size = min_size + 1
    mask = (1 << size) - 1
    next_code = end + 1
    prev = -1
    pixels = seen = 0
    bit = 0
    last = len(lzw) * 8
    padded = lzw + b"\x00\x00"
    while bit + size <= last:
        at = bit >> 3
        if msb:
            word = padded[at] << 16 | padded[at + 1] << 8 | padded[at + 2]
            code = word >> (24 - (bit & 7) - size) & mask
        else:
            code = (padded[at] | padded[at + 1] << 8 | padded[at + 2] << 16) >> (bit & 7) & mask
        bit += size
        if code == clear:
            if prev < 0 and next_code == end + 1 and bit > size:
                return None  # clear after clear codes nothing: a channel, and slow to walk
            max_segments -= 1
            if max_segments < 0:
                return None
            size, next_code, prev = min_size + 1, end + 1, -1
            mask = (1 << size) - 1
            continue
        if code == end:
            return (bit + 7) >> 3, pixels, seen
        if prev < 0:
            if code > clear:
                return None
            pixels += 1
            seen |= 1 << code
            prev = code
            continue
        if code < next_code:
            pixels += lengths[code]
            if code < clear:  # every index a decoder outputs came in as such a literal
                seen |= 1 << code
        elif code == next_code and next_code < 4096:
            pixels += lengths[prev] + 1
        else:
            return None
        if next_code < 4096:
            lengths[next_code] = lengths[prev] + 1
            next_code += 1
            if next_code + early == 1 << size and size < 12:
                size += 1
                mask = (1 << size) - 1
        prev = code
    return (len(lzw), pixels, seen) if msb else None


def _lzw_extent_np(
    lzw: bytes, min_size: int, *, msb: bool = False, early: int = 0, max_segments: int
) -> tuple[int, int, int] | None:
    """``lzw_extent`` a segment (the codes between two clear codes) at a time: between
    clears the width of the k-th code depends on k alone, so the codes are read in bulk;
    an entry's length is one more than its predecessor code's, found by pointer doubling."""
    import numpy as np

    if not 2 <= min_size <= 11:
        return None
    clear = 1 << min_size
    end = clear + 1
    data = np.frombuffer(lzw + b"\x00\x00\x00", dtype=np.uint8).astype(np.int32)
    last = len(lzw) * 8
    pixels = 0
    seen = np.zeros(clear, dtype=bool)
    bit = segments = 0
    first_segment = True
    while True:
        parts = []
        k0, pos, stop = 0, bit, -1
        while True:  # the codes of one segment, _LZW_BULK at a time
            ks = np.arange(k0, k0 + _LZW_BULK, dtype=np.int64)
            table = np.minimum(end + np.maximum(ks, 1), 4096)  # next_code as code k is read
            width = np.minimum(12, np.maximum(min_size + 1, np.floor(np.log2(table + early)) + 1))
            width = width.astype(np.int64)
            offs = pos + np.concatenate(([0], np.cumsum(width)[:-1]))
            fit = int(np.count_nonzero(offs + width <= last))
            width, offs = width[:fit], offs[:fit]
            at = offs >> 3
            if msb:
                word = (data[at] << 16) | (data[at + 1] << 8) | data[at + 2]
                codes = (word >> (24 - (offs & 7) - width)) & ((1 << width) - 1)
            else:
                word = data[at] | (data[at + 1] << 8) | (data[at + 2] << 16)
                codes = (word >> (offs & 7)) & ((1 << width) - 1)
            hits = np.flatnonzero((codes == clear) | (codes == end))
            if hits.size:
                i = int(hits[0])
                parts.append(codes[:i])
                stop, bit = int(codes[i]), int(offs[i] + width[i])
                break
            parts.append(codes)
            if fit < _LZW_BULK:
                break  # out of data (stop stays -1)
            pos, k0 = int(offs[-1] + width[-1]), k0 + _LZW_BULK
        codes = np.concatenate(parts).astype(np.int64)
        n = len(codes)
        if stop == clear and n == 0 and not first_segment:
            return None  # clear after clear codes nothing: a channel, and slow to walk
        if n:
            limit = np.minimum(end + np.arange(n, dtype=np.int64), 4095)
            limit[0] = clear - 1  # the first code after a clear is a literal
            if (codes > limit).any():
                return None
            lengths = np.ones(4096, dtype=np.int64)
            m = min(n - 1, 4095 - end)  # entries end+1 .. end+m, each from the code before
            if m > 0:
                prev = codes[:m]
                parent = np.concatenate(([0], np.where(prev > end, prev - end, 0)))
                hops = (parent > 0).astype(np.int64)
                while parent.any():  # pointer doubling: at most 12 rounds (4096 entries)
                    hops = hops + hops[parent]
                    parent = parent[parent]
                lengths[end + 1 : end + 1 + m] = hops[1:] + 2
            literal = codes < clear
            pixels += int(np.count_nonzero(literal)) + int(lengths[codes[~literal]].sum())
            seen[codes[literal]] = True
        if stop == clear:
            first_segment = False
            segments += 1
            if segments > max_segments:
                return None  # clear codes every few codes: not walked (the pixel path is)
            continue
        if stop == -1 and not msb:
            return None  # no end code
        mask = int.from_bytes(np.packbits(seen, bitorder="little").tobytes(), "little")
        return ((bit + 7) >> 3 if stop == end else len(lzw)), pixels, mask


def _sub_blocks(payload: bytes) -> bytes:
    """``payload`` as data sub-blocks (255 bytes each, then the rest) with the terminator."""
    out = bytearray()
    for i in range(0, len(payload), 255):
        piece = payload[i : i + 255]
        out += bytes((len(piece),)) + piece
    return bytes(out + b"\x00")


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
    canvas = (scan.width, scan.height)  # the screen grown to fit every frame, as Pillow does
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
            canvas = (max(canvas[0], left + fw), max(canvas[1], top + fh))
            scan.extra.pop("gce", None)  # this image's graphic control, if any, is used
            transparent = scan.extra.pop("gce_transparent", -1)
            _image(scan, data, start=p, lzw_at=q, end=end, area=fw * fh, transparent=transparent)
            p = end
            continue
        if b == 0x00:
            # a zero where a block starts (a block terminator written twice): Pillow skips
            # it and shows the frames after it; dropped, and the walk goes on
            end = _ZEROS.match(data, p).end()  # type: ignore[union-attr]
            scan.add("padding", p, end - p, UNKNOWN, "zero bytes between blocks")
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
                flags = fields[0] & 0x1F  # the reserved bits zero
                index = fields[3] if flags & 1 else 0  # an index only when it is used
                gce = b"\x21\xf9\x04" + bytes((flags,)) + fields[1:3] + bytes((index,)) + b"\x00"
                same = data[p:end] == gce
                _superseded(scan, "gce")  # only the last one before an image counts
                scan.extra["gce"] = len(scan.parts)
                scan.extra["gce_transparent"] = index if flags & 1 else -1
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
    _superseded(scan, "gce")  # a graphic control no image follows
    if not frames:
        raise CorruptImage("GIF is malformed: no image in the file")
    if p < n and (not ended or data[p:].strip(b"\x00")):
        scan.add("after trailer", p, n - p, TRAILER)
    if canvas != (scan.width, scan.height):
        _grow_screen(scan, data, canvas)
        largest = canvas
    scan.frames = frames
    scan.extra.update(
        has_trailer=ended,
        largest_frame=largest,
        total_pixels=frames * largest[0] * largest[1],
    )
    return scan


def _grow_screen(scan: Scan, data: bytes, canvas: tuple[int, int]) -> None:
    """Frames reach outside the logical screen: Pillow grows its canvas to fit them, browsers
    clip them, so the same file shows two pictures. The rebuilt header declares the grown
    screen (every decoder then shows every frame whole, as Pillow did with the input) and the
    scan reports the size decoders will show."""
    if max(canvas) > 0xFFFF:
        raise CorruptImage(
            f"GIF frames reach {canvas[0]}x{canvas[1]}, past the largest screen a GIF can declare"
        )
    head = scan.parts[0]
    header = bytearray(data[head.offset : head.offset + head.length])
    struct.pack_into("<HH", header, 6, *canvas)
    detail = f"logical screen {scan.width}x{scan.height} grown to {canvas[0]}x{canvas[1]}"
    scan.parts[0] = Part(head.name, head.offset, head.length, STRUCTURE, detail, bytes(header))
    scan.width, scan.height = canvas


def _superseded(scan: Scan, key: str) -> None:
    """The part ``extra[key]`` points at is not used (another one replaced it): dropped."""
    k = scan.extra.pop(key, None)
    if k is not None:
        old = scan.parts[k]
        scan.parts[k] = Part(old.name, old.offset, old.length, UNKNOWN, "superseded or unused")


def _image(
    scan: Scan, data: bytes, *, start: int, lzw_at: int, end: int, area: int, transparent: int
) -> None:
    """An image block; its LZW data is walked later, by ``_walk``, only when it is stripped
    or checked (``inspect`` does not need it). ``transparent``: the colour index its graphic
    control makes transparent (-1: none)."""
    scan.extra.setdefault("images", []).append((len(scan.parts), lzw_at, area, transparent))
    scan.add("image", start, end - start, STRUCTURE)


def _walk(data: bytes, scan: Scan) -> int:
    """Walk every frame's LZW data once, and rebuild what it proves: each image's data cut
    after its end code and written in 255-byte sub-blocks, each colour table with the
    entries no pixel (nor the transparent or background index) uses set to zero, the aspect
    byte zero. Changed parts get replacements; what cannot be proved is noted in
    ``extra["unproved"]``. Returns how many parts changed."""
    if "walked" in scan.extra:
        return int(scan.extra["walked"])
    images: list[tuple[int, int, int, int]] = scan.extra.get("images", [])
    lzw_bytes = sum(scan.parts[k].offset + scan.parts[k].length - at for k, at, *_x in images)
    changed = 0
    if lzw_bytes > LZW_WALK:
        scan.extra["unproved"] = ("LZW data over 16 MiB is re-encoded, not walked", "shape")
        images = []
    global_use = 0
    for k, lzw_at, area, transparent in images:
        part = scan.parts[k]
        end = part.offset + part.length
        lzw = _sub_block_data(data, lzw_at + 1, end)
        min_size = data[lzw_at]
        share = max(1, LZW_SEGMENTS // len(images))  # the file's clear codes, shared by frame
        extent = proved_once(
            "gif lzw",
            lzw,
            (min_size, share),
            lambda: lzw_extent(lzw, min_size, max_segments=share),  # noqa: B023
        )
        if extent is None:
            scan.extra.setdefault(
                "unproved",
                (
                    "LZW data without an end code, with a bad code or clear codes in a row",
                    "damaged",
                ),
            )
            continue
        used, pixels, seen = extent
        if transparent >= 0:  # the index this frame's graphic control names, in its table
            seen |= 1 << transparent
        if pixels > area:
            scan.extra.setdefault(
                "unproved", ("LZW data that codes more pixels than its frame", "hidden")
            )
        elif pixels < area:
            scan.extra.setdefault(
                "unproved", ("LZW data that codes fewer pixels than its frame", "damaged")
            )
        head = data[part.offset : part.offset + 10]
        if head[9] & 0x80:  # a local colour table: only this image's colours
            table = _used_colours(data[part.offset + 10 : lzw_at], seen)
        else:
            table = b""
            global_use |= seen
        rebuilt = head + table + data[lzw_at : lzw_at + 1] + _sub_blocks(lzw[:used])
        if rebuilt == data[part.offset : end]:
            continue
        changed += 1
        scan.parts[k] = Part(part.name, part.offset, part.length, STRUCTURE, replacement=rebuilt)
        if used < len(lzw):
            scan.add(
                "image data", part.offset, len(lzw) - used, UNKNOWN, "data after the LZW end code"
            )
    if images:
        header = scan.parts[0]
        old = header.bytes_in(data)
        new = bytearray(old[:12]) + b"\x00"  # aspect ratio: 0 (square pixels)
        if old[10] & 0x80:
            new += _used_colours(old[13:], global_use | 1 << old[11])  # + the background
        if bytes(new) != old:
            changed += 1
            scan.parts[0] = Part(
                header.name, 0, header.length, STRUCTURE, header.detail, bytes(new)
            )
    scan.extra["walked"] = changed
    return changed


def _used_colours(table: bytes, used: int) -> bytes:
    """A colour table with every entry not in the bit mask ``used`` set to black."""
    return b"".join(
        table[i : i + 3] if used >> (i // 3) & 1 else b"\x00\x00\x00"
        for i in range(0, len(table), 3)
    )


def prove_gif(data: bytes, scan: Scan) -> None:
    """Raise Unproved unless every frame's LZW data of the (stripped) GIF ``data`` ends at its
    end code, in full sub-blocks, coding no more pixels than its frame."""
    if _walk(data, scan):
        raise Unproved("LZW data with bytes after its end code, or in odd sub-blocks", why="hidden")
    if "unproved" in scan.extra:
        what, why = scan.extra["unproved"]
        raise Unproved(what, why=why)


def _application(scan: Scan, data: bytes, ident: bytes, *, start: int, body: int, end: int) -> None:
    label = ident.decode("latin-1", "replace")
    if ident in _LOOP_APPS:
        sub = _sub_block_data(data, body, end)
        if "loop" in scan.extra:
            scan.add(f"application {label}", start, end - start, UNKNOWN, "repeated")
            return
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
    """The GIF with structure blocks only (each image's LZW data cut after its end code and
    written in full sub-blocks), always closed with a trailer. Raises Unproved when a
    frame's LZW data cannot be proved."""
    _walk(data, scan)
    if "unproved" in scan.extra:
        what, why = scan.extra["unproved"]
        raise Unproved(what, why=why)
    out = bytearray()
    for part in scan.parts:
        if part.kind == STRUCTURE:
            out += part.bytes_in(data)
    if not scan.extra.get("has_trailer"):
        out += b"\x3b"
    return bytes(out)


FORMATS = (
    Format(
        name="GIF",
        media_type="image/gif",
        extensions=(".gif",),
        signatures=(b"GIF87a", b"GIF89a"),
        scan=scan_gif,
        strip=lambda data, scan, icc: strip_gif(data, scan),
        prove=prove_gif,
        decoders=("GIF",),
        animated=True,
        keeps_icc=False,
    ),
)
