"""PNG and APNG at the chunk level: scan, and strip losslessly.

Kept: the critical chunks, the colour and display chunks a decoder uses (tRNS, gAMA, cHRM,
sRGB, sBIT, bKGD, pHYs, cICP, mDCv, cLLi), the animation chunks (acTL, fcTL, fdAT) and a
standard ICC profile rewritten under a neutral name. Dropped: text (tEXt, zTXt, iTXt, incl.
XMP and ImageMagick "Raw profile" EXIF/IPTC), eXIf, tIME, caBX (C2PA), the palette histogram
(hIST), a suggested palette in a truecolour image, private and unknown chunks, and anything
after IEND.

The image data is proved, not just copied: each compressed stream (the IDAT run, each APNG
frame's fdAT run) must be one zlib stream that inflates to exactly the rows of its image, with
a valid filter type on every row, and ends where its chunks end. Bytes after the end of the
stream (inside the last chunk, or in further chunks) are dropped and the stream is written as
one chunk; a stream that inflates to more than its rows or does not inflate is not stripped
(the picture takes the pixel path). The streams are inflated piece by piece, never whole. A
palette keeps only the colours the pixels use: entries no pixel uses are zeroed and the
palette ends at the last used one.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from typing import Any

from veilpix._errors import CorruptImage
from veilpix.formats._format import Format
from veilpix.formats._scan import (
    ICC,
    METADATA,
    STRUCTURE,
    TRAILER,
    UNKNOWN,
    Scan,
    Unproved,
    need,
    proved_once,
)

__all__ = [
    "ADAM7",
    "DEPTHS",
    "SIGNATURE",
    "adam7_passes",
    "chunk",
    "iccp_chunk",
    "inflate_capped",
    "inflate_exact",
    "prove_png",
    "scan_png",
    "strip_png",
]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEEP = frozenset(
    {
        b"IHDR",
        b"PLTE",
        b"IDAT",
        b"IEND",
        b"tRNS",
        b"gAMA",
        b"cHRM",
        b"sRGB",
        b"sBIT",
        b"bKGD",
        b"pHYs",
        b"acTL",
        b"fcTL",
        b"fdAT",
        b"cICP",
        b"mDCv",
        b"cLLi",
    }
)
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


def chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk: length, type, body and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def iccp_chunk(icc: bytes) -> bytes:
    """An iCCP chunk for ``icc`` under a neutral profile name."""
    return chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc))


_FIXED = {
    b"IHDR": 13,
    b"gAMA": 4,
    b"cHRM": 32,
    b"sRGB": 1,
    b"pHYs": 9,
    b"acTL": 8,
    b"fcTL": 26,
    b"cICP": 4,
    b"mDCv": 24,
    b"cLLi": 8,
    b"IEND": 0,
}
_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# chunks a PNG holds at most once: later copies are not kept (their values are free)
_ONCE = frozenset(
    {
        b"IHDR",
        b"PLTE",
        b"tRNS",
        b"gAMA",
        b"cHRM",
        b"sRGB",
        b"sBIT",
        b"bKGD",
        b"pHYs",
        b"acTL",
        b"cICP",
        b"mDCv",
        b"cLLi",
        b"iCCP",
        b"IEND",
    }
)


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
    seen_kinds: set[bytes] = set()
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
            w, h, depth, ctype, method, filtering, interlace = struct.unpack(">IIBBBBB", body)
            if (
                not w
                or not h
                or depth not in DEPTHS.get(ctype, ())
                or method
                or filtering
                or interlace > 1
            ):
                raise CorruptImage(
                    f"PNG is malformed: IHDR declares {w}x{h}, bit depth {depth}, colour type "
                    f"{ctype}, methods {method}/{filtering}/{interlace}"
                )
            scan.width, scan.height = w, h
            scan.extra.update(bit_depth=depth, color_type=ctype, interlace=interlace)
        elif kind in _ONCE and kind in seen_kinds:
            scan.add(name, p, end - p, UNKNOWN, "repeated chunk")
            p = end
            continue
        seen_kinds.add(kind)
        if kind in KEEP:
            (crc,) = struct.unpack_from(">I", data, end - 4)
            if zlib.crc32(kind + body) != crc:
                raise CorruptImage(f"PNG is damaged: CRC mismatch in {name} chunk")
            size = _expected_size(kind, scan.extra, length)
            if kind == b"PLTE":
                if length % 3 or length > 768:
                    raise CorruptImage("PNG is malformed: bad palette length")
                scan.extra["palette"] = length // 3
                if scan.extra.get("color_type") != 3:
                    scan.add(name, p, end - p, METADATA, "suggested palette (advisory)")
                    p = end
                    continue
            if kind == b"fcTL" and length >= 26:
                fw, fh, fx, fy = struct.unpack(">IIII", body[4:20])
                if not fw or not fh or fx + fw > scan.width or fy + fh > scan.height:
                    scan.extra.setdefault("unproved", "an APNG frame outside the canvas")
                scan.extra["fctl"] = scan.extra.get("fctl", 0) + 1
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
                    replacement=chunk(kind, body[:size]),
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
        elif kind == b"hIST":
            scan.add(name, p, end - p, METADATA, "palette histogram (advisory)")
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
        if scan.extra["apng_frames"] != scan.extra.get("fctl", 0):
            scan.extra.setdefault("unproved", "an APNG frame count that is not its frames'")
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


# Adam7: x0, y0, dx, dy of each pass
ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_IN_PIECE = 256 * 1024  # compressed bytes fed at a time
_OUT_PIECE = 1 << 20  # inflated bytes taken at a time: memory stays flat whatever the image


def _rows(info: dict[str, Any], size: tuple[int, int]) -> list[tuple[int, int]]:
    """(bytes per row with its filter byte, rows) for each pass of an image of ``size``."""
    samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(int(info.get("color_type", 0)), 1)
    bpp = int(info.get("bit_depth", 8)) * samples
    width, height = size
    passes = adam7_passes(width, height, int(bool(info.get("interlace"))))
    return [(1 + (w * bpp + 7) // 8, h) for *_, w, h in passes]


def adam7_passes(
    width: int, height: int, interlace: int
) -> list[tuple[int, int, int, int, int, int]]:
    """(x0, y0, dx, dy, width, height) of each non-empty pass of an image: one pass when it
    is not interlaced, else Adam7's."""
    if not interlace:
        return [(0, 0, 1, 1, width, height)]
    out = []
    for x0, y0, dx, dy in ADAM7:
        w = (width - x0 + dx - 1) // dx if width > x0 else 0
        h = (height - y0 + dy - 1) // dy if height > y0 else 0
        if w and h:
            out.append((x0, y0, dx, dy, w, h))
    return out


def _bad_filter(piece: bytes, at: int, layout: list[tuple[int, int]]) -> bool:
    """Whether a row of ``layout`` that starts inside ``piece`` (at offset ``at`` of the
    inflated data) has a filter type other than 0-4."""
    import numpy as np

    view = np.frombuffer(piece, dtype=np.uint8)
    start = 0
    for row_bytes, rows in layout:
        end = start + row_bytes * rows
        lo, hi = max(start, at), min(end, at + len(piece))
        if lo < hi:
            first = start + -(-(lo - start) // row_bytes) * row_bytes
            if first < hi and (view[first - at : hi - at : row_bytes] > 4).any():
                return True
        start = end
    return False


def inflate_exact(stream: bytes, size: int) -> tuple[int, str, str]:
    """``_inflate_rows`` for data without row filters (a TIFF strip): ``size`` bytes."""
    return _inflate_rows(stream, [(size, 1)], filters=False)


def _inflate_rows(
    stream: bytes, layout: list[tuple[int, int]], *, filters: bool = True
) -> tuple[int, str, str]:
    """Inflate ``stream`` piece by piece against the rows it must hold: (bytes of the zlib
    stream, problem, kind), problem "" when the stream inflates to exactly the rows with valid
    filter types; kind "hidden" when only bytes after its end are extra, else "damaged"."""
    expected = sum(r * n for r, n in layout)
    d = zlib.decompressobj()
    produced = fed = 0
    try:
        for p in range(0, len(stream), _IN_PIECE):
            tail = stream[p : p + _IN_PIECE]
            fed = p + len(tail)
            while tail and not d.eof:
                piece = d.decompress(tail, _OUT_PIECE)
                tail = d.unconsumed_tail
                if produced + len(piece) > expected:
                    return 0, "the compressed stream inflates to more data than its rows", "damaged"
                if filters and _bad_filter(piece, produced, layout):
                    return 0, "a row of the compressed stream has an invalid filter type", "damaged"
                produced += len(piece)
            if d.eof:
                break
    except zlib.error as exc:
        return 0, f"the image data is not a valid zlib stream ({exc})", "damaged"
    if not d.eof:
        return 0, "the compressed stream is cut short", "damaged"
    if produced != expected:
        return 0, "the compressed stream holds fewer rows than the image", "damaged"
    used = fed - len(d.unused_data)  # input never fed lies after the end as well
    if used < len(stream):
        return used, "bytes after the end of the compressed image stream", "hidden"
    return used, "", ""


def _streams(data: bytes, scan: Scan) -> list[tuple[bytes, list[Any], tuple[int, int]]]:
    """(chunk type, its structure parts, frame size) for each run of IDAT / fdAT chunks."""
    size = (scan.width, scan.height)
    frame = size
    runs: list[tuple[bytes, list[Any], tuple[int, int]]] = []
    last = b""
    for part in scan.parts:
        if part.kind != STRUCTURE:
            continue
        kind = part.name.encode("latin-1")
        if kind == b"fcTL":
            body = part.bytes_in(data)[8:-4]
            frame = struct.unpack(">II", body[4:12]) if len(body) >= 12 else size
        if kind in (b"IDAT", b"fdAT"):
            if kind == last and runs:
                runs[-1][1].append(part)
            else:
                if kind == b"IDAT" and any(k == b"IDAT" for k, _p, _s in runs):
                    raise Unproved("the image data is split by other chunks", why="damaged")
                runs.append((kind, [part], size if kind == b"IDAT" else frame))
        last = kind
    return runs


def _joined(data: bytes, kind: bytes, parts: list[Any]) -> bytes:
    skip = 4 if kind == b"fdAT" else 0  # the sequence number
    return b"".join(p.bytes_in(data)[8 + skip : -4] for p in parts)


def _structure(data: bytes, scan: Scan, name: str) -> bytes:
    """The body of the kept chunk ``name`` (b"" when there is none)."""
    for part in scan.parts:
        if part.kind == STRUCTURE and part.name == name:
            return part.bytes_in(data)[8:-4]
    return b""


def _palette_use(
    streams: list[tuple[bytes, int, tuple[int, int]]], info: dict[str, Any], data: bytes, scan: Scan
) -> Any:
    """The palette indices the pixels use (a boolean array of 256), read by decoding each
    stream as a bare palette image (no compositing, no colours), plus the background
    colour's index (bKGD). Unproved when there is no palette to index."""
    import numpy as np

    if not _structure(data, scan, "PLTE"):
        raise Unproved("a palette image without a palette", why="damaged")
    used = np.zeros(256, dtype=bool)
    background = _structure(data, scan, "bKGD")
    if background:
        used[background[0]] = True
    depth, interlace = int(info.get("bit_depth", 8)), int(info.get("interlace", 0))
    for stream, n, size in streams:
        data = stream[:n]
        found = proved_once(
            "png indices",
            data,
            (size, depth, interlace),
            lambda: _indices(data, size, depth, interlace),  # noqa: B023
        )
        if isinstance(found, str):
            raise Unproved(f"the palette image does not decode ({found})", why="damaged")
        used[list(found)] = True
    return used


def _indices(stream: bytes, size: tuple[int, int], depth: int, interlace: int) -> Any:
    """The palette indices ``stream`` codes (a tuple), or what the decoder said (a str)."""
    import numpy as np
    from PIL import Image

    ihdr = struct.pack(">IIBBBBB", *size, depth, 3, 0, 0, interlace)
    bare = (
        SIGNATURE
        + chunk(b"IHDR", ihdr)
        + chunk(b"PLTE", bytes(3 << depth))
        + chunk(b"IDAT", stream)
        + chunk(b"IEND", b"")
    )
    try:
        with Image.open(io.BytesIO(bare), formats=["PNG"]) as im:
            im.load()
            return tuple(int(i) for i in np.unique(np.asarray(im)))
    except (OSError, ValueError, SyntaxError) as exc:
        return str(exc) or type(exc).__name__


def _proved_streams(data: bytes, scan: Scan) -> list[tuple[bytes, int, tuple[int, int]]]:
    """(zlib stream, bytes of it that count, frame size) for every stream, checked."""
    out = []
    for kind, parts, frame in _streams(data, scan):
        stream = _joined(data, kind, parts)
        rows = _rows(scan.extra, frame)
        used, problem, why = proved_once(
            "png rows",
            stream,
            tuple(rows),
            lambda: _inflate_rows(stream, rows),  # noqa: B023
        )
        if problem and why != "hidden":
            raise Unproved(problem, why=why)
        out.append((stream, used if problem else len(stream), frame))
    return out


def prove_png(data: bytes, scan: Scan) -> None:
    """Raise Unproved unless every compressed stream of the (stripped) PNG ``data`` inflates
    to exactly its rows and ends at its last chunk's end, and a palette holds only the
    colours the pixels use (unused entries zero, none after the last used one)."""
    if "unproved" in scan.extra:
        raise Unproved(scan.extra["unproved"], why="damaged")
    streams = _proved_streams(data, scan)
    for stream, used, _frame in streams:
        if used != len(stream):
            raise Unproved("bytes after the end of the compressed image stream", why="hidden")
    if scan.extra.get("color_type") == 3:
        used_entries = _palette_use(streams, scan.extra, data, scan)
        plte = _structure(data, scan, "PLTE")
        n = len(plte) // 3
        if (n > 0 and not used_entries[n - 1]) or any(
            plte[3 * i : 3 * i + 3] != b"\x00\x00\x00" for i in range(n) if not used_entries[i]
        ):
            raise Unproved("the palette holds colours no pixel uses", why="hidden")


def strip_png(data: bytes, scan: Scan, *, icc: bytes | None) -> bytes:
    """The PNG with structure chunks only (plus ``icc`` as a fresh iCCP before PLTE/IDAT):
    each image stream cut to its proved extent in one chunk, APNG sequence numbers renumbered,
    the palette reduced to the colours used. Raises Unproved when a stream is damaged."""
    if "unproved" in scan.extra:
        raise Unproved(scan.extra["unproved"], why="damaged")
    streams = _proved_streams(data, scan)
    hidden = sum(len(s) - used for s, used, _f in streams)
    palette: bytes | None = None
    alpha: bytes | None = None
    if scan.extra.get("color_type") == 3:
        used = _palette_use(streams, scan.extra, data, scan)
        last = max((i for i in range(256) if used[i]), default=0)
        for part in scan.parts:
            body = part.bytes_in(data)[8:-4]
            if part.kind == STRUCTURE and part.name == "PLTE":
                palette = b"".join(
                    body[3 * i : 3 * i + 3] if used[i] else b"\x00\x00\x00"
                    for i in range(min(last + 1, len(body) // 3))
                )
            elif part.kind == STRUCTURE and part.name == "tRNS":
                alpha = bytes(body[i] if used[i] else 255 for i in range(min(last + 1, len(body))))
    out = bytearray(SIGNATURE)
    icc_done = icc is None
    seq = 0
    runs = iter(streams)
    last_kind = ""
    for part in scan.parts:
        if part.kind != STRUCTURE:
            continue
        if not icc_done and part.name != "IHDR":
            out += iccp_chunk(icc or b"")
            icc_done = True
        if part.name in ("IDAT", "fdAT"):
            if part.name != last_kind:  # one chunk for the whole run
                stream, n, _frame = next(runs)
                if part.name == "IDAT":
                    out += chunk(b"IDAT", stream[:n])
                else:
                    out += chunk(b"fdAT", struct.pack(">I", seq) + stream[:n])
                    seq += 1
        elif part.name == "fcTL":
            body = part.bytes_in(data)[8:-4]
            out += chunk(b"fcTL", struct.pack(">I", seq) + body[4:])
            seq += 1
        elif part.name == "PLTE" and palette is not None:
            out += chunk(b"PLTE", palette)
        elif part.name == "tRNS" and alpha is not None:
            if alpha.strip(b"\xff"):
                out += chunk(b"tRNS", alpha.rstrip(b"\xff") or alpha[:1])
        else:
            out += part.bytes_in(data)
        last_kind = part.name
    if hidden:
        scan.add("image stream", 0, hidden, UNKNOWN, "bytes after the end of the compressed stream")
    return bytes(out)


FORMATS = (
    Format(
        name="PNG",
        media_type="image/png",
        extensions=(".png", ".apng"),
        signatures=(b"\x89PNG\r\n\x1a\n",),
        scan=scan_png,
        strip=lambda data, scan, icc: strip_png(data, scan, icc=icc),
        prove=prove_png,
        decoders=("PNG",),
        exif_orientation=True,
        animated=True,
    ),
)
