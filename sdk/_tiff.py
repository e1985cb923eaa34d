"""TIFF at the tag level: scan, and rewrite losslessly.

The rewrite builds a new classic TIFF in the input's byte order with, for every full-size
page, only the tags a decoder needs (dimensions, sample layout, compression, strips or tiles,
photometric, colour map, resolution, ...) and the compressed image data copied bit for bit.
Dropped: every descriptive tag (make, model, software, dates, artist, copyright, description,
host computer, document/page names), EXIF, GPS and Interop IFDs, XMP, IPTC, Photoshop
resources, GeoTIFF tags, reduced-resolution pages and SubIFDs (thumbnails, previews), and
private tags. JPEG-compressed TIFF is not rewritten in place (its strips are JPEG streams that
can carry their own APPn segments, and exiftool reports a single such strip as a "preview"):
it goes through the pixel path and comes out losslessly deflate-compressed.
"""

from __future__ import annotations

import itertools
import struct

from veilpix._errors import CorruptImage
from veilpix._scan import ICC, IMAGE, METADATA, Scan
from veilpix._tiffio import Entry, TiffReader

__all__ = ["STRUCTURAL_TAGS", "lossless_ok", "rewrite_tiff", "scan_tiff"]

STRUCTURAL_TAGS = frozenset(
    {
        254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281,
        282, 283, 284, 290, 291, 292, 293, 296, 297, 301, 317, 318, 319, 320, 321, 322, 323,
        324, 325, 332, 334, 336, 338, 339, 340, 341, 342, 347, 529, 530, 531, 532,
    }
)  # fmt: skip
_ORIENTATION = 274
_ICC_TAG = 34675
_GEO = {33550, 33922, 34264, 34735, 34736, 34737}
_NAMES = {
    269: "DocumentName", 270: "ImageDescription", 271: "Make", 272: "Model", 285: "PageName",
    305: "Software", 306: "DateTime", 315: "Artist", 316: "HostComputer", 330: "SubIFDs",
    700: "XMP", 32781: "ImageID", 33432: "Copyright", 33723: "IPTC", 34377: "Photoshop",
    34665: "ExifIFD", 34853: "GPSIFD", 37724: "ImageSourceData", 40965: "InteropIFD",
    42016: "ImageUniqueID", 50341: "PrintIM", 274: "Orientation", 34675: "ICC profile",
}  # fmt: skip
# Compressions whose strips are opaque pixel data: none, CCITT, LZW, deflate, PackBits.
_COPYABLE = {1, 2, 3, 4, 5, 8, 32773, 32946}
_MAX_STRIPS = 1 << 20
_UNSIGNED = {3, 4, 16}  # SHORT, LONG, LONG8


def _tag_name(tag: int) -> str:
    if tag in _GEO:
        return f"GeoTIFF {tag}"
    return _NAMES.get(tag, f"tag {tag}")


def scan_tiff(data: bytes) -> Scan:
    """Walk every IFD of the page chain and classify every tag."""
    reader = TiffReader(data)
    scan = Scan("TIFF")
    pages = []
    for index, (offset, entries) in enumerate(reader.chain(strict=True)):
        sub = reader.ints(entries[254])[0] if 254 in entries and reader.ints(entries[254]) else 0
        reduced = bool(sub & 1) and index > 0
        if reduced:
            scan.thumbnails.append((f"reduced-resolution page {index}", 0))
            scan.add(f"IFD {index} (reduced resolution)", offset, 0, IMAGE)
            continue
        pages.append((offset, entries))
        for tag, entry in entries.items():
            if tag in STRUCTURAL_TAGS:
                continue
            name = _tag_name(tag)
            if tag == _ORIENTATION:
                value = reader.ints(entry)
                scan.extra.setdefault("orientations", {})[len(pages) - 1] = value[0] if value else 1
                scan.add(f"IFD {index} Orientation", offset, 0, METADATA)
            elif tag == _ICC_TAG:
                if len(pages) == 1:
                    scan.icc = reader.raw(entry) or None
                scan.add(f"IFD {index} ICC profile", offset, entry.size, ICC)
            elif tag == 700:
                scan.xmp.append(reader.raw(entry))
                scan.add(f"IFD {index} XMP", offset, entry.size, METADATA)
            elif tag == 33723:
                scan.iptc.append(reader.raw(entry))
                scan.add(f"IFD {index} IPTC", offset, entry.size, METADATA)
            elif tag == 34377:
                scan.irb.append(reader.raw(entry))
                scan.add(f"IFD {index} Photoshop", offset, entry.size, METADATA)
            elif tag == 330:
                scan.thumbnails.append((f"SubIFD images on page {index}", 0))
                scan.add(f"IFD {index} SubIFDs", offset, 0, IMAGE)
            else:
                scan.add(f"IFD {index} {name}", offset, entry.size, METADATA)
        if any(t in _GEO for t in entries):
            scan.extra["geotiff"] = True
    if not pages:
        raise CorruptImage("TIFF has no image pages")
    first = pages[0][1]
    sizes = [_page_size(reader, entries) for _offset, entries in pages]
    scan.width, scan.height = sizes[0]
    scan.extra["bit_depth"] = max(reader.ints(first[258]) or (1,)) if 258 in first else 1
    scan.extra["samples"] = (reader.ints(first[277]) or (1,))[0] if 277 in first else 1
    scan.frames = len(pages)
    scan.extra["largest_frame"] = max(sizes, key=lambda wh: wh[0] * wh[1])
    scan.extra["total_pixels"] = sum(w * h for w, h in sizes)
    scan.exif.append(data)  # the file is a TIFF structure: IFD0 tags read as EXIF
    scan.extra.update(pages=pages, bigtiff=reader.big)
    return scan


def _page_size(reader: TiffReader, entries: dict[int, Entry]) -> tuple[int, int]:
    width = reader.ints(entries[256]) if 256 in entries else ()
    height = reader.ints(entries[257]) if 257 in entries else ()
    if not width or not height:
        raise CorruptImage("TIFF is malformed: a page has no width or height")
    return width[0], height[0]


def lossless_ok(data: bytes, scan: Scan) -> bool:
    """Can the pages be rewritten without decoding? Classic TIFF, known compressions, and
    strips or tiles that do not overlap (so the output can never outgrow the input)."""
    if scan.extra.get("bigtiff"):
        return False
    reader = TiffReader(data)
    spans: list[tuple[int, int]] = []
    for _offset, entries in scan.extra["pages"]:
        if _compression(reader, entries) not in _COPYABLE:
            return False
        spans.extend(_blocks(reader, entries)[2])
    spans.sort()
    return all(a[0] + a[1] <= b[0] for a, b in itertools.pairwise(spans))


def _blocks(
    reader: TiffReader, entries: dict[int, Entry]
) -> tuple[int, int, list[tuple[int, int]]]:
    """(offsets tag, counts tag, [(offset, length), ...]) of a page's strips or tiles."""
    if 324 in entries and 325 in entries:
        off_tag, cnt_tag = 324, 325
    elif 273 in entries and 279 in entries:
        off_tag, cnt_tag = 273, 279
    else:
        raise CorruptImage("TIFF is malformed: a page has no strip or tile offsets")
    if not {entries[off_tag].type, entries[cnt_tag].type} <= _UNSIGNED:
        raise CorruptImage("TIFF is malformed: strip/tile offsets must be unsigned integers")
    offsets = reader.ints(entries[off_tag])
    counts = reader.ints(entries[cnt_tag])
    if not offsets or len(offsets) != len(counts) or len(offsets) > _MAX_STRIPS:
        raise CorruptImage("TIFF is malformed: strip/tile offsets and byte counts disagree")
    for off, cnt in zip(offsets, counts, strict=True):
        if off + cnt > len(reader.data):
            raise CorruptImage("TIFF is truncated: image data runs past the end of the file")
    return off_tag, cnt_tag, list(zip(offsets, counts, strict=True))


def _first(reader: TiffReader, entries: dict[int, Entry], tag: int, default: int) -> int:
    values = reader.ints(entries[tag]) if tag in entries else ()
    return values[0] if values else default


def _raw_sizes(reader: TiffReader, entries: dict[int, Entry], blocks: int) -> list[int] | None:
    """Exact byte size of each uncompressed strip or tile (None when it cannot be known)."""
    width, height = _page_size(reader, entries)
    bits = reader.ints(entries[258]) if 258 in entries else (1,)
    samples = _first(reader, entries, 277, 1)
    planar = _first(reader, entries, 284, 1) == 2
    if not bits or len(bits) not in (1, samples):
        return None
    per_pixel = bits[0] if planar else (sum(bits) if len(bits) == samples else bits[0] * samples)
    if 322 in entries and 323 in entries:
        tile_w, tile_h = _first(reader, entries, 322, 0), _first(reader, entries, 323, 0)
        if tile_w <= 0 or tile_h <= 0:
            return None
        return [((tile_w * per_pixel + 7) // 8) * tile_h] * blocks
    rows = _first(reader, entries, 278, height) or height
    row_bytes = (width * per_pixel + 7) // 8
    per_plane = (height + rows - 1) // rows
    out = []
    for i in range(blocks):
        strip = i % per_plane if planar else i
        out.append(max(0, min(rows, height - strip * rows)) * row_bytes)
    return out


def _compression(reader: TiffReader, entries: dict[int, Entry]) -> int:
    value = reader.ints(entries[259]) if 259 in entries else ()
    return value[0] if value else 1


def _pack_value(e: str, typ: int, values: tuple[int, ...]) -> bytes:
    code = {3: "H", 4: "I"}[typ]
    return struct.pack(f"{e}{len(values)}{code}", *values)


def rewrite_tiff(data: bytes, scan: Scan, *, icc: bytes | None) -> bytes:
    """A new classic TIFF with structural tags and image data only (plus ``icc``)."""
    reader = TiffReader(data)
    e = reader.e
    out = bytearray(data[:2] + struct.pack(e + "HI", 42, 0))
    prev_link = 4  # where the offset of the next IFD is written
    for offset_pair in scan.extra["pages"]:
        entries: dict[int, Entry] = offset_pair[1]
        off_tag, cnt_tag, blocks = _blocks(reader, entries)
        sizes = (
            _raw_sizes(reader, entries, len(blocks)) if _compression(reader, entries) == 1 else None
        )
        new_offsets = []
        new_counts = []
        for i, (off, cnt) in enumerate(blocks):
            # uncompressed data has a known size: bytes declared beyond it are not copied
            block = data[off : off + (min(cnt, sizes[i]) if sizes else cnt)]
            if len(out) & 1:
                out += b"\x00"
            new_offsets.append(len(out))
            new_counts.append(len(block))
            out += block
        values: dict[int, tuple[int, int, bytes]] = {}  # tag -> (type, count, value bytes)
        for tag, entry in entries.items():
            if tag in STRUCTURAL_TAGS and tag not in (off_tag, cnt_tag):
                if not reader.in_bounds(entry):
                    raise CorruptImage(
                        f"TIFF is truncated: the value of tag {tag} is outside the file"
                    )
                values[tag] = (entry.type, entry.count, reader.raw(entry))
        values[off_tag] = (4, len(new_offsets), _pack_value(e, 4, tuple(new_offsets)))
        values[cnt_tag] = (4, len(new_counts), _pack_value(e, 4, tuple(new_counts)))
        if icc is not None and offset_pair is scan.extra["pages"][0]:
            values[_ICC_TAG] = (7, len(icc), icc)
        # out-of-line values, then the IFD itself
        placed: dict[int, int] = {}
        for tag, (_typ, _count, raw) in sorted(values.items()):
            if len(raw) > 4:
                if len(out) & 1:
                    out += b"\x00"
                placed[tag] = len(out)
                out += raw
        if len(out) & 1:
            out += b"\x00"
        ifd_at = len(out)
        struct.pack_into(e + "I", out, prev_link, ifd_at)
        out += struct.pack(e + "H", len(values))
        for tag, (typ, count, raw) in sorted(values.items()):
            field = struct.pack(e + "I", placed[tag]) if tag in placed else raw.ljust(4, b"\x00")
            out += struct.pack(e + "HHI", tag, typ, count) + field
        prev_link = len(out)
        out += b"\x00\x00\x00\x00"
    return bytes(out)
