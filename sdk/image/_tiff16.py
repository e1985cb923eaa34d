"""16-bit TIFF pixels with Pillow and numpy: what Pillow alone cannot hold.

Pillow reads a 16-bit RGB(A) TIFF as 8-bit. To keep the low bytes, the strips (or tiles) of
the main image are handed to Pillow's own TIFF decoder (libtiff) as what they are byte for
byte: an 8-bit greyscale image, ``samples x 2`` bytes wide, with the file's compression, in a
small one-page TIFF per band of rows and per plane that holds copies of that band's strips
(so no band is large, and nothing is held twice but one band). libtiff undoes the
compression (none, LZW, deflate, PackBits) exactly as it does for any TIFF; numpy then reads
the bytes as 16-bit samples in the file's byte order and undoes the horizontal predictor
(running sums modulo 65536, restarting at every row of every strip or tile). Interleaved and
planar (one plane per sample) layouts, strips and tiles, both byte orders and BigTIFF are
read. Anything else (other compressions, floating-point or signed samples, a predictor other
than horizontal differencing, colour spaces other than RGB and grey, sample sizes that are
not all 16 bits) is refused with UnsupportedImage, and damage that libtiff reports as
CorruptImage: such an image is blocked, never sent on with its metadata.

The writer makes a little-endian classic TIFF with one page: the tags a decoder needs
(dimensions, 16 bits per sample, deflate with horizontal differencing, photometric
interpretation, strips, extra samples where the input declared them) and nothing else, each at
its canonical type and count and none at its default value (so the pipeline's TIFF rewrite and
proofs take it as it is). zlib's strategy is chosen as for PNG (veilpix.image._png16).

numpy is imported at the top: only the 16-bit path imports this module, lazily.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np  # noqa: TID253 - the 16-bit path imports this module only when it runs
import numpy.typing as npt  # noqa: TID253 - as above

from veilpix._errors import CorruptImage, ImageTooLarge, UnsupportedImage
from veilpix.formats._tiff import page_blocks, scan_tiff
from veilpix.formats._tiffio import Entry, TiffReader
from veilpix.image._pixels import decoding
from veilpix.image._png16 import native as _native
from veilpix.image._png16 import zlib_settings

__all__ = ["Tiff", "decode_tiff", "encode_tiff"]

_COMPRESSIONS = {1: "none", 5: "LZW", 8: "deflate", 32946: "deflate", 32773: "PackBits"}
_BAND = 16 << 20  # bytes of 16-bit samples per band of rows handed to Pillow
_STRIP = 1 << 20  # bytes of samples per strip written
# IFD entries: (tag, type 3 SHORT / 4 LONG, values)
_Entries = list[tuple[int, int, tuple[int, ...]]]


@dataclass(frozen=True)
class Tiff:
    """A decoded 16-bit TIFF page: pixels (H x W x C, uint16), its photometric
    interpretation (1 grey, 2 RGB) and its extra-sample kinds (one per sample past the
    colour ones: 0 unspecified, 1 premultiplied alpha, 2 alpha; none when the file declares
    none, which readers take as alpha)."""

    pixels: npt.NDArray[np.uint16]
    photometric: int
    extra: tuple[int, ...] = ()


def decode_tiff(data: bytes, *, max_pixels: int) -> Tiff:
    """The main image (first full-resolution page) of the 16-bit TIFF ``data``."""
    reader = TiffReader(data)
    pages = scan_tiff(data).extra["pages"]
    tags = _Tags(reader, pages[0][1])
    width, height = tags.one(256, 0), tags.one(257, 0)
    if width <= 0 or height <= 0:
        raise CorruptImage(f"TIFF declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,}",
            hint="raise Policy(max_input_pixels=...) if the image is expected",
        )
    spp = tags.one(277, 1)
    photometric = tags.one(262, -1)
    colours = {1: 1, 2: 3}.get(photometric)
    if colours is None or not colours <= spp <= colours + 4:
        raise UnsupportedImage(
            f"the 16-bit TIFF path reads RGB and grey images, not photometric "
            f"interpretation {photometric} with {spp} samples",
            hint="convert it to 16-bit RGB or to 8 bits per sample first",
        )
    bits = tags.all(258, (1,))
    if len(bits) not in (1, spp) or set(bits) != {16}:
        raise UnsupportedImage(f"the 16-bit TIFF path reads 16-bit samples only, not {bits}")
    formats = set(tags.all(339, (1,)))
    if formats != {1}:
        raise UnsupportedImage(
            "the 16-bit TIFF path reads unsigned integer samples only (SampleFormat 1), "
            f"not {sorted(formats)}"
        )
    compression = tags.one(259, 1)
    if compression not in _COMPRESSIONS:
        raise UnsupportedImage(
            f"the 16-bit TIFF path reads uncompressed, LZW, deflate and PackBits data, not "
            f"compression {compression}",
            hint="re-save it with LZW or deflate compression",
        )
    predictor = tags.one(317, 1)
    if predictor not in (1, 2):
        raise UnsupportedImage(f"TIFF predictor {predictor} is not read on the 16-bit path")
    planar = tags.one(284, 1)
    if planar not in (1, 2):
        raise CorruptImage(f"TIFF declares planar configuration {planar}")
    fill = tags.one(266, 1)
    if fill not in (1, 2):
        raise CorruptImage(f"TIFF declares fill order {fill}")
    layout = _Layout.of(tags, width, height, spp, planar)
    _check_apart(layout)
    planes = [
        _plane(data, layout, plane=q, compression=compression, fill=fill, order=reader.e)
        for q in range(spp if planar == 2 else 1)
    ]
    pixels = planes[0] if len(planes) == 1 else np.concatenate(planes, axis=2)
    if predictor == 2:
        _accumulate(pixels, layout.tile_width or width)
    extra = tags.all(338, ())[: spp - colours]
    if extra:  # kept as declared; a file without the tag gets none either (read alike)
        extra += (0,) * (spp - colours - len(extra))
    return Tiff(pixels, photometric, tuple(min(int(v), 2) for v in extra))


class _Tags:
    """Integer values of one IFD's entries."""

    def __init__(self, reader: TiffReader, entries: dict[int, Entry]) -> None:
        self.reader, self.entries = reader, entries

    def all(self, tag: int, default: tuple[int, ...]) -> tuple[int, ...]:
        entry = self.entries.get(tag)
        if entry is None:
            return default
        values = self.reader.ints(entry)
        if not values or len(values) != entry.count:
            raise CorruptImage(f"TIFF tag {tag} does not hold the numbers it declares")
        return values

    def one(self, tag: int, default: int) -> int:
        return self.all(tag, (default,))[0]


@dataclass(frozen=True)
class _Layout:
    """Where the main image's compressed blocks are: strips (tile_width 0) or tiles."""

    offsets: tuple[int, ...]
    counts: tuple[int, ...]
    width: int
    height: int
    samples: int  # samples per pixel in one plane
    rows: int  # rows per strip or tile
    tile_width: int
    across: int  # blocks per row of blocks
    down: int  # rows of blocks per plane

    @classmethod
    def of(cls, tags: _Tags, width: int, height: int, spp: int, planar: int) -> _Layout:
        tiled = 322 in tags.entries or 324 in tags.entries
        if tiled:
            tile_width, rows = tags.one(322, 0), tags.one(323, 0)
            if tile_width <= 0 or rows <= 0:
                raise CorruptImage(f"TIFF declares tiles of {tile_width}x{rows}")
            across = -(-width // tile_width)
        else:
            rows = min(height, tags.one(278, height) or height)
            tile_width, across = 0, 1
        # read, and checked against the file's size, as for every TIFF page
        spans = page_blocks(tags.reader, tags.entries)[2]
        offsets = tuple(o for o, _ in spans)
        counts = tuple(c for _, c in spans)
        down = -(-height // rows)
        planes = spp if planar == 2 else 1
        if len(offsets) != across * down * planes or len(counts) != len(offsets):
            raise CorruptImage(
                f"TIFF declares {len(offsets)} {'tiles' if tiled else 'strips'} and "
                f"{len(counts)} byte counts; the image needs {across * down * planes}"
            )
        return cls(
            offsets=offsets,
            counts=counts,
            width=width,
            height=height,
            samples=1 if planar == 2 else spp,
            rows=rows,
            tile_width=tile_width,
            across=across,
            down=down,
        )


def _check_apart(layout: _Layout) -> None:
    """No two strips or tiles share bytes: each is copied for the decoder, so blocks that
    overlap would let a small file make it hold its own size many times over (and
    legitimate writers never share image data)."""
    end = 0
    for offset, count in sorted(zip(layout.offsets, layout.counts, strict=True)):
        if count == 0:
            continue
        if offset < end:
            raise CorruptImage("TIFF strips or tiles overlap; the image is refused")
        end = offset + count


def _plane(
    data: bytes, layout: _Layout, *, plane: int, compression: int, fill: int, order: str
) -> npt.NDArray[np.uint16]:
    """One plane (H x W x samples, native uint16), band by band of whole strips or rows of
    tiles: each band's blocks are copied into a one-page 8-bit greyscale TIFF of their own
    (so no more than a band is ever held twice) and read by Pillow."""
    from PIL import Image

    row_bytes = layout.width * layout.samples * 2
    per_band = max(1, _BAND // max(1, row_bytes * layout.rows))  # rows of blocks per band
    first = plane * layout.across * layout.down
    out = np.empty((layout.height, row_bytes), dtype=np.uint8)
    for down in range(0, layout.down, per_band):
        stop = min(layout.down, down + per_band)
        band = slice(first + down * layout.across, first + stop * layout.across)
        y0, y1 = down * layout.rows, min(layout.height, stop * layout.rows)
        spans = list(zip(layout.offsets[band], layout.counts[band], strict=True))
        page = _page(
            data,
            spans,
            layout,
            row_bytes=row_bytes,
            rows=y1 - y0,
            compression=compression,
            fill=fill,
        )
        with decoding("16-bit TIFF"), Image.open(io.BytesIO(page), formats=["TIFF"]) as im:
            if im.mode != "L" or im.size != (row_bytes, y1 - y0):
                raise CorruptImage("TIFF strips could not be read as the 16-bit samples they hold")
            im.load()
            out[y0:y1] = np.asarray(im)
    samples = _native(out.view(order + "u2"))
    return samples.reshape(layout.height, layout.width, layout.samples)


def _page(
    data: bytes,
    spans: list[tuple[int, int]],
    layout: _Layout,
    *,
    row_bytes: int,
    rows: int,
    compression: int,
    fill: int,
) -> bytes:
    """A one-page little-endian TIFF holding the blocks at ``spans`` of ``data``, byte for
    byte, as an 8-bit greyscale image ``row_bytes`` wide and ``rows`` high."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    offsets = []
    for at, count in spans:
        offsets.append(len(out))
        out += data[at : at + count]
        out += b"\x00" * (len(out) & 1)
    counts = tuple(count for _, count in spans)
    tags: _Entries = [
        (256, 4, (row_bytes,)),
        (257, 4, (rows,)),
        (258, 3, (8,)),
        (259, 3, (compression,)),
        (262, 3, (1,)),
        (266, 3, (fill,)),
        (277, 3, (1,)),
        (284, 3, (1,)),
    ]
    if layout.tile_width:
        tags += [
            (322, 4, (layout.tile_width * layout.samples * 2,)),
            (323, 4, (layout.rows,)),
            (324, 4, tuple(offsets)),
            (325, 4, counts),
        ]
    else:
        tags += [(273, 4, tuple(offsets)), (278, 4, (layout.rows,)), (279, 4, counts)]
    if len(out) >= 1 << 32:  # pragma: no cover - bands are small
        raise UnsupportedImage("a band of TIFF strips of 4 GiB or more")
    struct.pack_into("<I", out, 4, len(out))
    out += _ifd(sorted(tags), len(out))
    return bytes(out)


def _ifd(tags: _Entries, at: int) -> bytes:
    """A little-endian classic IFD (no next IFD) to be placed at ``at``, its out-of-line
    values right after it."""
    size = 2 + 12 * len(tags) + 4
    entries = bytearray(struct.pack("<H", len(tags)))
    blobs = bytearray()
    for tag, typ, values in tags:
        raw = struct.pack(f"<{len(values)}{'H' if typ == 3 else 'I'}", *values)
        if len(raw) <= 4:
            field = raw.ljust(4, b"\x00")
        else:
            field = struct.pack("<I", at + size + len(blobs))
            blobs += raw + b"\x00" * (len(raw) & 1)
        entries += struct.pack("<HHI", tag, typ, len(values)) + field
    entries += b"\x00\x00\x00\x00"
    return bytes(entries + blobs)


def _accumulate(pixels: npt.NDArray[np.uint16], run: int) -> None:
    """Undo horizontal differencing in place: running sums along each row, modulo 65536,
    restarting every ``run`` pixels (every tile)."""
    width = pixels.shape[1]
    for x0 in range(0, width, run):
        x1 = min(width, x0 + run)
        np.cumsum(pixels[:, x0:x1], axis=1, dtype=np.uint16, out=pixels[:, x0:x1])


def encode_tiff(
    pixels: npt.NDArray[np.uint16], photometric: int, extra: tuple[int, ...] = ()
) -> bytes:
    """A one-page little-endian TIFF of ``pixels`` (H x W x C, uint16), deflate-compressed
    with horizontal differencing, with only the tags a decoder needs."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, spp = pixels.shape
    colours = {1: 1, 2: 3}.get(photometric, 0)
    if pixels.dtype != np.uint16 or not colours or spp < colours:
        raise UnsupportedImage(f"cannot write {spp}-sample {pixels.dtype} pixels as TIFF")
    if extra:
        extra = tuple(extra[: spp - colours]) + (0,) * max(0, spp - colours - len(extra))
    rows = max(1, min(height, _STRIP // (width * spp * 2)))
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    offsets: list[int] = []
    counts: list[int] = []
    settings: tuple[int, int] | None = None
    for y0 in range(0, height, rows):
        block = pixels[y0 : y0 + rows].astype(np.uint16)  # a copy: differenced in place
        block[:, 1:] -= pixels[y0 : y0 + rows, :-1]
        raw = block.astype("<u2").tobytes()
        settings = settings or zlib_settings(raw)
        z = zlib.compressobj(settings[0], zlib.DEFLATED, 15, 8, settings[1])
        offsets.append(len(out))
        out += z.compress(raw)
        out += z.flush()
        counts.append(len(out) - offsets[-1])
        out += b"\x00" * (len(out) & 1)
    tags: _Entries = [
        (256, 4, (width,)),
        (257, 4, (height,)),
        (258, 3, (16,) * spp),
        (259, 3, (8,)),
        (262, 3, (photometric,)),
        (273, 4, tuple(offsets)),
        (277, 3, (spp,)),
        (278, 4, (rows,)),
        (279, 4, tuple(counts)),
        (317, 3, (2,)),
    ]
    if extra:
        tags.append((338, 3, extra))
    struct.pack_into("<I", out, 4, len(out))
    out += _ifd(tags, len(out))
    return bytes(out)
