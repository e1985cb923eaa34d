"""TIFF at the tag level: scan, and rewrite losslessly.

The rewrite builds a new classic TIFF in the input's byte order with, for every full-size
page, only the tags a decoder needs (dimensions, sample layout, compression, strips or tiles,
photometric, colour map, resolution, ...) and the compressed image data copied bit for bit.
Dropped: every descriptive tag (make, model, software, dates, artist, copyright, description,
host computer, document/page names), EXIF, GPS and Interop IFDs, XMP, IPTC, Photoshop
resources, GeoTIFF tags, reduced-resolution pages and SubIFDs (thumbnails, previews), and
private tags. Every kept tag is written afresh at its canonical type and count (a count or
type a writer chose, e.g. ``BitsPerSample`` with extra values or ``XResolution`` typed ASCII,
is not copied); advisory tags (response curves, transfer functions, halftone hints, dot
ranges) are dropped. Strips are copied only when their extent is proved: uncompressed strips
are cut to the rows' size, deflate strips must inflate to exactly their rows and end with
their last byte; other compressions (LZW, PackBits, CCITT) take the pixel path and come out
deflate-compressed, pixel for pixel. A DNG or any file whose main image sits in a SubIFD
(a raw camera layout) is refused rather than replaced by its preview. JPEG-compressed TIFF
is not rewritten in place (its strips are JPEG streams that
can carry their own APPn segments, and exiftool reports a single such strip as a "preview"):
it goes through the pixel path and comes out losslessly deflate-compressed.
"""

from __future__ import annotations

import itertools
import struct

from veilpix._errors import CorruptImage, UnsupportedImage
from veilpix.formats._format import Format
from veilpix.formats._gif import LZW_SEGMENTS, LZW_WALK, lzw_extent
from veilpix.formats._png import inflate_exact
from veilpix.formats._scan import ICC, IMAGE, METADATA, Scan, Unproved, proved_once
from veilpix.formats._tiffio import Entry, TiffReader

__all__ = [
    "STRUCTURAL_TAGS",
    "not_lossless",
    "page_blocks",
    "prove_tiff",
    "rewrite_tiff",
    "scan_tiff",
]

STRUCTURAL_TAGS = frozenset(
    {
        254,
        255,
        256,
        257,
        258,
        259,
        262,
        263,
        264,
        265,
        266,
        273,
        277,
        278,
        279,
        280,
        281,
        282,
        283,
        284,
        290,
        291,
        292,
        293,
        296,
        297,
        301,
        317,
        318,
        319,
        320,
        321,
        322,
        323,
        324,
        325,
        332,
        334,
        336,
        338,
        339,
        340,
        341,
        342,
        347,
        529,
        530,
        531,
        532,
    }
)
# The tags a rewrite keeps: (type, count) with SHORT=3, LONG=4, RATIONAL=5; a count of
# "spp" is SamplesPerPixel, "map" 3 x 2**BitsPerSample, "extra" the extra samples.
# Advisory tags (thresholding, cell size, sample value ranges, page numbers, chromaticities)
# are not kept: a decoder does not need them and their values are free. The colour map only
# for palette pages and the ink tags only for separated (CMYK) ones.
_CANON: dict[int, tuple[int, int | str]] = {
    254: (4, 1),
    256: (4, 1),
    257: (4, 1),
    258: (3, "spp"),
    259: (3, 1),
    262: (3, 1),
    266: (3, 1),
    277: (3, 1),
    278: (4, 1),
    282: (5, 1),
    283: (5, 1),
    284: (3, 1),
    296: (3, 1),
    317: (3, 1),
    320: (3, "map"),
    322: (4, 1),
    323: (4, 1),
    332: (3, 1),
    334: (3, 1),
    338: (3, "extra"),
    339: (3, "spp"),
}
_ONLY_FOR = {320: 3, 332: 5, 334: 5}  # tag -> the photometric interpretation it belongs to
_DNG_VERSION = 50706
_ORIENTATION = 274
_ICC_TAG = 34675
_GEO = {33550, 33922, 34264, 34735, 34736, 34737}
_NAMES = {
    269: "DocumentName",
    270: "ImageDescription",
    271: "Make",
    272: "Model",
    285: "PageName",
    305: "Software",
    306: "DateTime",
    315: "Artist",
    316: "HostComputer",
    330: "SubIFDs",
    700: "XMP",
    32781: "ImageID",
    33432: "Copyright",
    33723: "IPTC",
    34377: "Photoshop",
    34665: "ExifIFD",
    34853: "GPSIFD",
    37724: "ImageSourceData",
    40965: "InteropIFD",
    42016: "ImageUniqueID",
    50341: "PrintIM",
    274: "Orientation",
    34675: "ICC profile",
}
# Compressions whose strips can be proved to hold their rows and nothing else: none, LZW
# (walked like GIF's, up to LZW_WALK bytes in all pages; beyond, the pixel path gives the
# same pixels sooner), deflate.
_COPYABLE = {1, 5, 8, 32946}
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
    chain = reader.chain(strict=True)
    if chain and _DNG_VERSION in chain[0][1]:
        raise UnsupportedImage(
            "a DNG raw camera file: veilpix cannot produce its main image (only its preview)",
            hint="develop or convert it to TIFF, JPEG or PNG first",
        )
    if chain and 330 in chain[0][1] and 254 in chain[0][1]:
        first_kind = reader.ints(chain[0][1][254])
        if first_kind and first_kind[0] & 1:
            raise UnsupportedImage(
                "the first image is a reduced-resolution preview and the main image sits in a "
                "SubIFD (a raw camera layout): veilpix would only produce the preview",
                hint="convert it to TIFF, JPEG or PNG first",
            )
    kinds = [reader.ints(e[254])[0] if 254 in e and reader.ints(e[254]) else 0 for _o, e in chain]
    if kinds and all(k & 1 for k in kinds):
        raise UnsupportedImage(
            "every image in this TIFF is marked as a reduced-resolution preview: the main "
            "image is missing (a raw camera layout?), and veilpix would only produce a preview",
            hint="convert the original to TIFF, JPEG or PNG first",
        )
    for index, (offset, entries) in enumerate(chain):
        if kinds[index] & 1:  # a preview or thumbnail page, also when it comes first
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


_NAMES_OF_COMPRESSION = {
    2: "CCITT",
    3: "CCITT",
    4: "CCITT",
    6: "JPEG",
    7: "JPEG",
    32773: "PackBits",
}


def not_lossless(data: bytes, scan: Scan) -> str | None:
    """Why the pages cannot be rewritten without decoding (None: they can): a compression
    whose extent veilpix does not prove, a palette (its unused colours), YCbCr (subsampled
    rows), tiles reaching past the picture, too much LZW data to walk, or strips that
    overlap (the output could outgrow the input)."""
    reader = TiffReader(data)  # a BigTIFF is rewritten as a classic TIFF (inputs are < 4 GB)
    spans: list[tuple[int, int]] = []
    lzw = 0
    for _offset, entries in scan.extra["pages"]:
        compression = _compression(reader, entries)
        if compression not in _COPYABLE:
            name = _NAMES_OF_COMPRESSION.get(compression, f"compression {compression}")
            return f"{name} strips are not proved in place"
        photometric = _first(reader, entries, 262, -1)
        if photometric in (3, 6):
            return "a palette TIFF page" if photometric == 3 else "a YCbCr TIFF page"
        width, height = _page_size(reader, entries)
        tile = (_first(reader, entries, 322, 0), _first(reader, entries, 323, 0))
        if tile[0] and tile[1] and (width % tile[0] or height % tile[1]):
            return "tiles that reach past the picture"
        blocks = page_blocks(reader, entries)[2]
        if compression == 5:
            lzw += sum(n for _o, n in blocks)
            if lzw > LZW_WALK:  # over all pages together
                return "LZW data over 16 MiB"
        spans.extend(blocks)
    spans.sort()
    if all(a[0] + a[1] <= b[0] for a, b in itertools.pairwise(spans)):
        return None
    return "strips that overlap"


def page_blocks(
    reader: TiffReader, entries: dict[int, Entry]
) -> tuple[int, int, list[tuple[int, int]]]:
    """(offsets tag, counts tag, [(offset, length), ...]) of a page's strips or tiles, each
    checked to lie inside the file (CorruptImage otherwise)."""
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
    bits = bits[:samples]  # values beyond one per sample are not written back
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


def prove_tiff(data: bytes, scan: Scan) -> None:
    """Raise Unproved unless every tag of every page of the (rewritten) TIFF ``data`` is a
    kept tag at its canonical type and count, and every strip or tile holds exactly its rows
    (uncompressed: their size; compressed: a stream that codes them and ends with the
    strip)."""
    reader = TiffReader(data)
    share = _lzw_share(reader, scan)
    for _offset, entries in scan.extra["pages"]:
        canon = _canonical(reader, entries)
        off_tag, cnt_tag, blocks = page_blocks(reader, entries)
        for tag, entry in entries.items():
            if tag in (off_tag, cnt_tag, _ICC_TAG):
                continue
            typ, count, raw = canon.get(tag, (0, 0, b""))
            if (entry.type, entry.count) != (typ, count) or reader.raw(entry) != raw:
                raise Unproved(
                    f"TIFF tag {tag} is not at its canonical type and count", why="hidden"
                )
        compression = _compression(reader, entries)
        sizes = _raw_sizes(reader, entries, len(blocks))
        if sizes is None:
            raise Unproved("the strips' size cannot be worked out from the tags", why="damaged")
        for (off, cnt), size in zip(blocks, sizes, strict=True):
            used = (
                min(cnt, size)
                if compression == 1
                else _strip_extent(data[off : off + cnt], compression, size, share=share)
            )
            if used != cnt:
                raise Unproved("a strip holds bytes after its rows", why="hidden")


def _lzw_share(reader: TiffReader, scan: Scan) -> int:
    """The clear codes each strip may walk: the file's budget shared by every strip."""
    strips = sum(len(page_blocks(reader, entries)[2]) for _o, entries in scan.extra["pages"])
    return max(1, LZW_SEGMENTS // max(1, strips))


def _strip_extent(strip: bytes, compression: int, size: int, *, share: int = 0) -> int:
    """Bytes of a compressed ``strip`` that code its ``size`` bytes of rows (what follows is
    dropped); Unproved when it codes more or fewer, or is not a valid stream."""
    if compression == 5:
        found = proved_once(
            "tiff lzw",
            strip,
            (share,),
            lambda: lzw_extent(strip, 8, msb=True, early=1, max_segments=share),
        )
        if found is None or found[1] != size:
            raise Unproved("an LZW strip does not code exactly its rows", why="damaged")
        return found[0]
    used, problem, why = proved_once("inflate", strip, (size,), lambda: inflate_exact(strip, size))
    if problem and why != "hidden":
        raise Unproved(f"a deflate strip: {problem}", why=why)
    return used


def _canonical(
    reader: TiffReader, entries: dict[int, Entry], *, orientation: bool = False
) -> dict[int, tuple[int, int, bytes]]:
    """The kept tags of a page at their canonical type and count: tag -> (type, count, value
    bytes). A value that cannot be read as the numbers its tag holds is dropped.
    ``orientation``: keep the Orientation tag too (a copy made only for a decoder)."""
    e = reader.e
    spp = _first(reader, entries, 277, 1)
    bits = _first(reader, entries, 258, 1)
    colour = {2: 3, 6: 3, 5: 4, 8: 3}.get(_first(reader, entries, 262, 1), 1)
    counts = {"spp": spp, "map": 3 << bits if bits <= 16 else 0, "extra": spp - colour}
    out: dict[int, tuple[int, int, bytes]] = {}
    kept = {**_CANON, _ORIENTATION: (3, 1)} if orientation else _CANON
    photometric = _first(reader, entries, 262, -1)
    for tag, (typ, rule) in kept.items():
        if tag not in entries or _ONLY_FOR.get(tag, photometric) != photometric:
            continue
        entry = entries[tag]
        if not reader.in_bounds(entry):
            raise CorruptImage(f"TIFF is truncated: the value of tag {tag} is outside the file")
        count = counts[rule] if isinstance(rule, str) else rule
        raw = reader.value(entry)
        items = raw if isinstance(raw, tuple) else (raw,)
        if typ == 5:  # rationals: from (num, den) pairs, or whole numbers
            pairs = [x if isinstance(x, tuple) else (x, 1) for x in items]
            flat = [v for pair in pairs[:count] for v in pair]
            if len(pairs) < count or not all(isinstance(v, int) and v >= 0 for v in flat):
                continue
            out[tag] = (5, count, struct.pack(f"{e}{2 * count}I", *flat))
            continue
        ints = reader.ints(entry)
        if count <= 0 or not ints or entry.type not in _UNSIGNED:
            continue
        if len(ints) < count:
            if len(ints) != 1:
                continue
            ints = ints * count  # one value given for every sample
        top = 0xFFFF if typ == 3 else 0xFFFFFFFF
        values = _meaningful(tag, ints[:count], entries, reader)
        if values is None or any(v > top for v in values):
            continue
        out[tag] = (typ, count, _pack_value(e, typ, values))
    return out


def _meaningful(
    tag: int, values: tuple[int, ...], entries: dict[int, Entry], reader: TiffReader
) -> tuple[int, ...] | None:
    """``values`` as a decoder reads them, None when the tag says nothing a decoder uses
    (its default, or a value outside its range): a free value is not written."""
    (first,) = values[:1] or (0,)
    if tag == 254:  # NewSubfileType: the page and transparency-mask bits only
        return (first & 6,) if first & 6 else None
    if tag == 278:  # RowsPerStrip: at most the page's height
        return (min(first, _page_size(reader, entries)[1]),)
    if tag == 317:  # Predictor: horizontal (2) or floating point (3), with LZW or deflate
        return values if first in (2, 3) and _compression(reader, entries) != 1 else None
    if tag in (266, 284):  # FillOrder, PlanarConfiguration: only when not the default 1
        return values if first == 2 else None
    if tag == 296:  # ResolutionUnit: none, inch or centimetre
        return values if first in (1, 2, 3) else None
    if tag == 339:  # SampleFormat: unsigned (the default), signed, float
        return (
            values if all(v in (1, 2, 3) for v in values) and any(v != 1 for v in values) else None
        )
    return values


def _pack_value(e: str, typ: int, values: tuple[int, ...]) -> bytes:
    code = {3: "H", 4: "I"}[typ]
    return struct.pack(f"{e}{len(values)}{code}", *values)


def rewrite_tiff(data: bytes, scan: Scan, *, icc: bytes | None, orientation: bool = False) -> bytes:
    """A new classic TIFF with structural tags and image data only (plus ``icc``; plus each
    page's Orientation tag when ``orientation``, for a copy given to the decoder)."""
    reader = TiffReader(data)
    e = reader.e
    share = _lzw_share(reader, scan)
    out = bytearray(data[:2] + struct.pack(e + "HI", 42, 0))
    prev_link = 4  # where the offset of the next IFD is written
    for offset_pair in scan.extra["pages"]:
        entries: dict[int, Entry] = offset_pair[1]
        off_tag, cnt_tag, blocks = page_blocks(reader, entries)
        compression = _compression(reader, entries)
        sizes = _raw_sizes(reader, entries, len(blocks))
        if sizes is None:
            raise Unproved("the strips' size cannot be worked out from the tags", why="damaged")
        new_offsets = []
        new_counts = []
        for i, (off, cnt) in enumerate(blocks):
            if compression == 1:  # a known size: bytes declared beyond it are not copied
                block = data[off : off + min(cnt, sizes[i])]
            else:  # the stream must hold exactly the rows; bytes after it go
                used = _strip_extent(data[off : off + cnt], compression, sizes[i], share=share)
                block = data[off : off + used]
            if len(out) & 1:
                out += b"\x00"
            new_offsets.append(len(out))
            new_counts.append(len(block))
            out += block
        values = _canonical(reader, entries, orientation=orientation)
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


def _strip_tiff(data: bytes, scan: Scan, icc: bytes | None) -> bytes:
    """The lossless rewrite, when every page can be rewritten exactly."""
    reason = not_lossless(data, scan)
    if reason is not None:
        raise Unproved(reason, why="shape")
    return rewrite_tiff(data, scan, icc=icc)


FORMATS = (
    Format(
        name="TIFF",
        media_type="image/tiff",
        extensions=(".tif", ".tiff"),
        signatures=(b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
        scan=scan_tiff,
        strip=_strip_tiff,
        prove=prove_tiff,
        decode_to_prove=True,
        decoders=("TIFF",),
        exif_orientation=True,
    ),
)
