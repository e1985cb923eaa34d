"""A small PNG codec for what Pillow cannot hold: 16-bit colour and 16-bit grey with alpha.

Pillow reads a 16-bit RGB, RGBA or grey+alpha PNG as 8-bit. The 16-bit path of the pipeline
(``veilpix.image._pixels.deep_reencode``) decodes such a PNG here, turns it with numpy and
writes it back with its bit depth intact. Bit depths 8 and 16 of colour types 0, 2, 4 and 6
are read; palettes and depths below 8 are refused (Pillow reads those whole, so they never
come here).

Decode. Every chunk's length and CRC are checked; IHDR comes first, the IDAT chunks form one
run, IEND ends the image; an unknown critical chunk is refused. Of the ancillary chunks only
those that say how the pixels are to be shown are kept, at their exact size and at most once
(tRNS, gAMA, cHRM, sRGB, sBIT, cICP, mDCv, cLLi: the colour and display chunks the lossless
strip keeps too); text, EXIF, time stamps and every other chunk are dropped. The colour
profile (iCCP) is the pipeline's business: it takes this path only when the profile is absent
or a standard one it attaches again itself. The image data is inflated piece by piece into a
buffer of exactly the size IHDR declares (rows plus their filter bytes): data that inflates
past that size is refused after one byte too many, so a decompression bomb costs no more
memory than the picture it claims to be, and the pixel count is held to the policy's limit
before anything is allocated. Rows are un-filtered with numpy: None, Sub and Up directly over
whole blocks of rows (Sub and Up are running sums, modulo 256); Average and Paeth depend on the
pixel to the left, so from the first to the last row that uses them the rows are decoded along
anti-diagonals (a wavefront: every pixel on a diagonal depends only on the two diagonals
before it), a vector step per diagonal, W + H steps in all (a shape that would need more than
MAX_STEPS is refused rather than decoded for minutes). An interlaced (Adam7) image is decoded
pass by pass and the passes put in place. A 12 MP 16-bit RGB photograph whose rows are all
Paeth decodes in about a second on one core (bench/blur.py measures it).

Encode. IHDR, the kept display chunks, IDAT, IEND, nothing else. Each row gets None, Sub or
Up, whichever makes its bytes smallest by libpng's measure, and zlib runs either run-length
coding at level 1 (photographs: the low bytes of 16-bit samples are noise that string matching
cannot shorten; run-length is faster there and no larger) or string matching at level 6
(drawings, gradients, screenshots), whichever codes the first rows smaller.

numpy is imported at the top: only the 16-bit path imports this module, lazily.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np  # noqa: TID253 - the 16-bit path imports this module only when it runs
import numpy.typing as npt  # noqa: TID253 - as above

from veilpix._errors import CorruptImage, ImageTooLarge, UnsupportedImage
from veilpix.formats._png import DEPTHS, SIGNATURE, adam7_passes, chunk

__all__ = ["MAX_STEPS", "Png", "decode_png", "encode_png", "native", "zlib_settings"]

_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # (palette images never take this path)
# display chunks kept, with their size (None: depends on the colour type)
_DISPLAY: dict[bytes, int | None] = {
    b"tRNS": None,
    b"gAMA": 4,
    b"cHRM": 32,
    b"sRGB": 1,
    b"sBIT": None,
    b"cICP": 4,
    b"mDCv": 24,
    b"cLLi": 8,
}
_PIECE = 8 << 20  # inflated bytes per zlib call
_FEED = 1 << 20  # compressed bytes per zlib call
_BLOCK = 4 << 20  # row bytes un-filtered or filtered per block of rows (bounds temporaries)
_SAMPLE = 1 << 20  # filtered bytes compressed both ways to choose zlib's strategy
_DIAGONALS = 32  # diagonals fetched and stored at a time by the wavefront
# Average / Paeth rows are decoded one anti-diagonal per step (W + H steps); a shape that needs
# more steps than this (a strip of a picture millions of pixels long) is refused, not decoded
# for minutes.
MAX_STEPS = 400_000


@dataclass(frozen=True)
class Png:
    """A decoded PNG: pixels (H x W x C, uint8 or uint16 in the machine's byte order; may be
    a view with padding between rows), its colour type, and the display chunks kept (type,
    body) in the order they came."""

    pixels: npt.NDArray[Any]
    colour_type: int
    chunks: tuple[tuple[bytes, bytes], ...] = ()


# -- decode --------------------------------------------------------------------------------


def decode_png(data: bytes, *, max_pixels: int) -> Png:
    """Decode ``data`` (see the module docstring); CorruptImage, UnsupportedImage or
    ImageTooLarge when it cannot be done exactly."""
    if not data.startswith(SIGNATURE):
        raise CorruptImage("not a PNG: bad signature")
    view = memoryview(data)
    p, n = 8, len(data)
    header: tuple[int, int, int, int, int] | None = None
    idat: list[memoryview] = []
    kept: dict[bytes, bytes] = {}
    idat_done = ended = False
    while p < n:
        if p + 12 > n:
            raise CorruptImage(f"PNG is truncated: a chunk header at byte {p} is cut short")
        length, kind = struct.unpack_from(">I4s", data, p)
        if length > 0x7FFFFFFF or not kind.isalpha():
            raise CorruptImage(f"PNG is malformed: bad chunk header at byte {p}")
        end = p + 12 + length
        if end > n:
            raise CorruptImage(f"PNG is truncated inside its {kind.decode('latin-1')} chunk")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[p + 4 : end - 4]) != crc:
            raise CorruptImage(f"PNG {kind.decode('latin-1')} chunk at byte {p} fails its CRC")
        body = view[p + 8 : end - 4]
        if header is None:
            if kind != b"IHDR" or length != 13:
                raise CorruptImage("PNG is malformed: IHDR is not the first chunk")
            header = _ihdr(bytes(body), max_pixels)
        elif kind == b"IDAT":
            if idat_done:
                raise CorruptImage("PNG is malformed: its IDAT chunks are not one run")
            idat.append(body)
        elif kind == b"IEND":
            ended = True
            break
        else:
            idat_done = bool(idat)
            if kind == b"IHDR":
                raise CorruptImage("PNG is malformed: a second IHDR")
            if kind == b"PLTE":
                if header[3] in (0, 4):
                    raise CorruptImage("PNG is malformed: a palette in a greyscale image")
            elif kind[0] < 0x61:  # upper case: critical, and unknown
                raise UnsupportedImage(
                    f"PNG holds an unknown critical chunk {kind.decode('latin-1')!r}",
                    hint="re-save the image with a common PNG writer",
                )
            elif kind in _DISPLAY and not idat and kind not in kept:
                size = _display_size(kind, header[3])
                if size is not None and length == size:
                    kept[kind] = bytes(body)
        p = end
    if header is None:
        raise CorruptImage("PNG is malformed: no IHDR")
    if not idat:
        raise CorruptImage("PNG has no image data (no IDAT chunk)")
    if not ended:
        raise CorruptImage("PNG is truncated: no IEND chunk")
    width, height, depth, ctype, interlace = header
    pixels = _pixels(
        idat,
        width=width,
        height=height,
        depth=depth,
        channels=_CHANNELS[ctype],
        interlace=interlace,
    )
    return Png(pixels, ctype, tuple(kept.items()))


def _ihdr(body: bytes, max_pixels: int) -> tuple[int, int, int, int, int]:
    width, height, depth, ctype, method, filtering, interlace = struct.unpack(">IIBBBBB", body)
    if not 0 < width < 1 << 31 or not 0 < height < 1 << 31:
        raise CorruptImage(f"PNG IHDR declares an impossible size {width}x{height}")
    if depth not in DEPTHS.get(ctype, ()) or method or filtering or interlace > 1:
        raise CorruptImage(
            f"PNG IHDR declares bit depth {depth}, colour type {ctype}, methods "
            f"{method}/{filtering}/{interlace}: not a valid combination"
        )
    if ctype == 3 or depth < 8:
        raise UnsupportedImage(
            f"the 16-bit PNG path reads 8- and 16-bit grey and colour, not colour type {ctype} "
            f"at bit depth {depth}"
        )
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,}",
            hint="raise Policy(max_input_pixels=...) if the image is expected",
        )
    return width, height, depth, ctype, interlace


def _display_size(kind: bytes, ctype: int) -> int | None:
    if kind == b"sBIT":
        return _CHANNELS[ctype]
    if kind == b"tRNS":
        return {0: 2, 2: 6}.get(ctype)  # images with alpha have no tRNS
    return _DISPLAY[kind]


def _pixels(
    idat: list[memoryview], *, width: int, height: int, depth: int, channels: int, interlace: int
) -> npt.NDArray[Any]:
    bpp = channels * depth // 8
    passes = adam7_passes(width, height, interlace)
    expected = sum(h * (1 + w * bpp) for *_, w, h in passes)
    raw = _inflate(idat, expected)
    dtype = np.dtype(">u2") if depth == 16 else np.dtype(np.uint8)
    if not interlace:  # the un-filtered rows are the pixels: no copy
        rows = _unfilter(raw.reshape(height, 1 + width * bpp), bpp)
        del raw
        return native(rows.view(dtype)).reshape(height, width, channels)
    out = np.empty((height, width, channels), dtype=dtype.newbyteorder("="))
    at = 0
    for x0, y0, dx, dy, w, h in passes:
        size = h * (1 + w * bpp)
        rows = _unfilter(raw[at : at + size].reshape(h, 1 + w * bpp), bpp)
        at += size
        out[y0::dy, x0::dx] = rows.view(dtype).reshape(h, w, channels)
    return out


def native(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``a`` in the machine's byte order, swapped in place when it is not."""
    if a.dtype.isnative:
        return a
    return a.byteswap(inplace=True).view(a.dtype.newbyteorder("="))


def _inflate(parts: Sequence[memoryview], expected: int) -> npt.NDArray[np.uint8]:
    """The image data inflated into exactly ``expected`` bytes; CorruptImage when it holds
    fewer, or more (found after one byte too many), or is not a zlib stream. Fed a slice at
    a time and drawn a piece at a time, so neither side is ever held twice."""
    out = np.empty(expected, dtype=np.uint8)
    d = zlib.decompressobj()
    pos = 0
    slices = (part[at : at + _FEED] for part in parts for at in range(0, len(part), _FEED))
    try:
        for piece_in in slices:
            tail: bytes | memoryview = piece_in
            while tail and not d.eof:
                piece = d.decompress(tail, min(_PIECE, expected + 1 - pos))
                tail = d.unconsumed_tail
                if pos + len(piece) > expected:
                    raise CorruptImage(
                        f"PNG image data inflates to more than the {expected:,} bytes of rows "
                        "its header declares"
                    )
                out[pos : pos + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
                pos += len(piece)
            if d.eof:
                break
    except zlib.error as exc:
        raise CorruptImage(f"PNG image data is not a valid zlib stream ({exc})") from exc
    if pos < expected:
        raise CorruptImage(
            f"PNG image data is cut short: it inflates to {pos:,} of {expected:,} bytes of rows"
        )
    return out


def _unfilter(rows: npt.NDArray[np.uint8], bpp: int) -> npt.NDArray[np.uint8]:
    """The rows (h x (1 + row bytes), filter type first) un-filtered: h x row bytes."""
    kinds = rows[:, 0]
    bad = np.flatnonzero(kinds > 4)
    if bad.size:
        y = int(bad[0])
        raise CorruptImage(f"PNG row {y} has filter type {int(kinds[y])} (only 0-4 exist)")
    h, rb = rows.shape[0], rows.shape[1] - 1
    seq = np.flatnonzero(kinds >= 3)
    if not seq.size:
        out = np.empty((h, rb), dtype=np.uint8)
        _direct(rows, out, 0, h, bpp)
        return out
    first, last = int(seq[0]), int(seq[-1]) + 1
    if rb // bpp + (last - first) > MAX_STEPS:
        raise ImageTooLarge(
            f"PNG rows of {rb // bpp:,} pixels over {last - first:,} rows with Average/Paeth "
            f"filters: more than {MAX_STEPS:,} sequential steps to decode",
            hint="re-save it as TIFF or with the Sub or Up filter",
        )
    # rows padded by _DIAGONALS pixels (and a padding row before the first): see _wavefront
    padded = np.empty((h + 1, rb + _DIAGONALS * bpp), dtype=np.uint8)[1:]
    out = padded[:, :rb]
    _direct(rows, out, 0, first, bpp)
    _wavefront(rows, padded, first, last, bpp)
    _direct(rows, out, last, h, bpp)
    return out


def _direct(
    rows: npt.NDArray[np.uint8], out: npt.NDArray[np.uint8], lo: int, hi: int, bpp: int
) -> None:
    """Rows ``lo:hi`` that use only None, Sub and Up, block by block of rows."""
    rb = out.shape[1]
    step = max(1, _BLOCK // max(1, rb))
    for a in range(lo, hi, step):
        b = min(hi, a + step)
        kinds = rows[a:b, 0]
        f = rows[a:b, 1:]
        plain = np.flatnonzero(kinds == 0)
        if plain.size:
            out[a + plain] = f[plain]
        sub = np.flatnonzero(kinds == 1)
        if sub.size:
            sums = np.cumsum(f[sub].reshape(sub.size, -1, bpp), axis=1, dtype=np.uint8)
            out[a + sub] = sums.reshape(sub.size, rb)
        up = kinds == 2
        if up.any():
            _up_rows(f, up, out, a, b)


def _up_rows(
    f: npt.NDArray[np.uint8], up: npt.NDArray[np.bool_], out: npt.NDArray[np.uint8], a: int, b: int
) -> None:
    """Rows ``a:b`` that use Up (``up``), the others already in ``out``: with the row above
    the block in front and each reconstructed row standing in for its filtered bytes, a
    running sum down the block gives every Up row at once as the sum at it minus the sum
    just before the last row that is not Up (all mod 256). No loop over runs of Up rows: a
    tall, narrow image alternating filters has millions of them."""
    n = b - a
    g = np.empty((n + 1, f.shape[1]), dtype=np.uint8)
    g[0] = out[a - 1] if a > 0 else 0
    g[1:] = np.where(up[:, None], f, out[a:b])
    sums = np.cumsum(g, axis=0, dtype=np.uint8)
    anchor = np.concatenate(([True], ~up))  # rows of g whose value is a reconstructed row
    last = np.maximum.accumulate(np.where(anchor, np.arange(n + 1), 0))
    rows = np.flatnonzero(up) + 1
    before = last[rows] - 1  # the running sum just before that row (-1: none, i.e. 0)
    base = sums[np.maximum(before, 0)]
    base[before < 0] = 0
    out[a + rows - 1] = sums[rows] - base


def _predict(
    kind: int,
    near: tuple[npt.NDArray[np.int16], npt.NDArray[np.int16], npt.NDArray[np.int16]],
    out: npt.NDArray[np.int16],
    scratch: tuple[npt.NDArray[Any], ...],
) -> None:
    """The predictor of filter ``kind`` (1-4) from ``near`` (a, b, c) into ``out``;
    ``scratch``: three int16 and two bool arrays of the same shape."""
    a, b, c = near
    s1, s2, s3, m1, m2 = scratch
    if kind == 1:
        np.copyto(out, a)
    elif kind == 2:
        np.copyto(out, b)
    elif kind == 3:  # Average: the mean of a and b, rounded down
        np.add(a, b, out=out)
        np.right_shift(out, 1, out=out)
    else:  # Paeth: whichever of a, b, c is nearest a + b - c (ties: a, then b)
        np.subtract(b, c, out=s1)
        np.subtract(a, c, out=s2)
        np.add(s1, s2, out=s3)
        np.abs(s3, out=s3)  # |p - c|
        np.abs(s1, out=s1)  # |p - a|
        np.abs(s2, out=s2)  # |p - b|
        np.less_equal(s1, s2, out=m1)
        np.less_equal(s1, s3, out=m2)
        np.logical_and(m1, m2, out=m1)  # a
        np.less_equal(s2, s3, out=m2)  # else b, else c
        np.subtract(b, c, out=s1)
        np.multiply(s1, m2, out=s1)
        np.add(s1, c, out=out)
        np.subtract(a, out, out=s1)
        np.multiply(s1, m1, out=s1)
        np.add(out, s1, out=out)


def _wavefront(
    rows: npt.NDArray[np.uint8], padded: npt.NDArray[np.uint8], lo: int, hi: int, bpp: int
) -> None:
    """Rows ``lo:hi`` (any filter types) into ``padded`` (h x (row bytes + padding)), one
    anti-diagonal of pixels per step.

    Pixel (y, x) needs a = (y, x-1), b = (y-1, x) and c = (y-1, x-1): all on the two
    anti-diagonals before its own (t = x + y), so each step un-filters one whole diagonal.
    Diagonals are fetched _DIAGONALS at a time through a skewed view of the rows ([t, y] is
    pixel (y, t - y); whole pixels as one item each), which reads each row a few pixels at a
    time (a per-diagonal gather would touch a cache line in every row for every pixel), and
    stored back the same way: the cells of a block that lie off the picture (x < 0 or
    x >= W) land in the padding after a row, which is what the padding is for. a, b and c
    come from three rolling buffers holding diagonals t, t - 1 and t - 2 as int16, indexed by
    j = y + 1 (j = 0: the row above the band). Memory: a few diagonals; steps: W + rows - 1."""
    from numpy.lib.stride_tricks import as_strided

    n = hi - lo
    rb = padded.shape[1] - _DIAGONALS * bpp
    width = rb // bpp
    steps = width + n - 1
    pixel = np.dtype((np.void, bpp))
    src = rows[lo:hi, 1:].view(pixel)
    dst = padded[lo:hi].view(pixel)
    # skewed views: [t, y] is pixel (y, t - y) of the band, in the filtered rows and the output
    f_skew = as_strided(src, (steps, n), (bpp, src.strides[0] - bpp), writeable=False)
    o_skew = as_strided(dst, (steps, n), (bpp, dst.strides[0] - bpp))
    prior = (
        padded[lo - 1, :rb].reshape(width, bpp).astype(np.int16)
        if lo > 0
        else np.zeros((width, bpp), np.int16)
    )
    kinds = rows[lo:hi, 0]
    present = sorted({int(k) for k in np.unique(kinds)} - {0})
    # several filter types: each row's predictor is picked by 0/1 weights (arithmetic, not
    # masked copies: those branch on every byte and mispredict on real data)
    weights = {}
    if len(present) > 1 or 0 in kinds:
        weights = {
            k: np.repeat((kinds == k)[:, None], bpp, axis=1).astype(np.int16) for k in present
        }
    d0, d1, d2 = (np.zeros((n + 2, bpp), np.int16) for _ in range(3))
    s1, s2, s3, s4, s5 = (np.empty((n, bpp), np.int16) for _ in range(5))
    m1, m2 = np.empty((n, bpp), bool), np.empty((n, bpp), bool)
    block = np.empty((_DIAGONALS, n, bpp), np.uint8)
    items = block.view(pixel)[..., 0]
    d1[0] = prior[0]
    for first in range(0, steps, _DIAGONALS):
        k = min(_DIAGONALS, steps - first)
        ya, yb = max(0, first - width + 1), min(n - 1, first + k - 1)
        items[:k, : yb - ya + 1] = f_skew[first : first + k, ya : yb + 1]
        for t in range(first, first + k):
            y0, y1 = max(0, t - width + 1), min(n - 1, t)
            count = y1 - y0 + 1
            a, b, c = d1[y0 + 1 : y1 + 2], d1[y0 : y1 + 1], d2[y0 : y1 + 1]
            pred = s5[:count]
            scratch = (s1[:count], s2[:count], s3[:count], m1[:count], m2[:count])
            if not weights:
                _predict(present[0], (a, b, c), pred, scratch)
            else:
                pred[...] = 0
                for kind in present:
                    part = s4[:count]
                    _predict(kind, (a, b, c), part, scratch)
                    np.multiply(part, weights[kind][y0 : y1 + 1], out=part)
                    np.add(pred, part, out=pred)
            cells = block[t - first, y0 - ya : y1 - ya + 1]
            res = d0[y0 + 1 : y1 + 2]
            np.add(cells, pred, out=res)
            np.bitwise_and(res, 255, out=res)
            np.copyto(cells, res, casting="unsafe")
            # the row above at x = t + 1, and x = -1 of row t + 1: read as b, c and a
            d0[0] = prior[t + 1] if t + 1 < width else 0
            if t + 2 <= n:
                d0[t + 2] = 0
            d0, d1, d2 = d2, d0, d1
        o_skew[first : first + k, ya : yb + 1] = items[:k, : yb - ya + 1]


# -- encode --------------------------------------------------------------------------------


def encode_png(
    pixels: npt.NDArray[Any], colour_type: int, chunks: Sequence[tuple[bytes, bytes]] = ()
) -> bytes:
    """A PNG of ``pixels`` (H x W x C, uint8 or uint16) with IHDR, ``chunks`` (display
    chunks from ``decode_png``), IDAT and IEND only.

    Rows are filtered with None, Sub or Up, per row the one with the smallest output by
    libpng's measure (the bytes read as signed values, made positive, summed). zlib then runs
    either run-length only at level 1 (photographs: their low bytes are noise that string
    matching cannot shorten, and RLE is both faster and smaller there) or string matching at
    level 6 (drawings, screenshots, gradients), whichever codes the first rows smaller."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    if _CHANNELS.get(colour_type) != channels or pixels.dtype not in (np.uint8, np.uint16):
        raise UnsupportedImage(
            f"cannot write {channels}-channel {pixels.dtype} pixels as PNG colour type "
            f"{colour_type}"
        )
    depth = 16 if pixels.dtype == np.uint16 else 8
    bpp = channels * depth // 8
    out = bytearray(SIGNATURE)
    out += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0))
    for kind, body in chunks:
        if kind in _DISPLAY:
            out += chunk(kind, body)
    start = len(out)
    out += b"\x00\x00\x00\x00IDAT"  # the length is set when the data is complete
    crc = zlib.crc32(b"IDAT")
    step = max(1, _BLOCK // (1 + width * bpp))
    z = None
    for a in range(0, height, step):
        b = min(height, a + step)
        # this block's rows and the one above, big-endian (a block at a time: no full copy)
        rows = np.ascontiguousarray(
            pixels[max(0, a - 1) : b], dtype=">u2" if depth == 16 else np.uint8
        )
        block = _filter_rows(rows.view(np.uint8).reshape(len(rows), width * bpp), bpp, first=a == 0)
        if z is None:
            level, strategy = zlib_settings(block[:_SAMPLE])
            z = zlib.compressobj(level, zlib.DEFLATED, 15, 8, strategy)
        for piece in (z.compress(block), z.flush() if b == height else b""):
            crc = zlib.crc32(piece, crc)
            out += piece
    struct.pack_into(">I", out, start, len(out) - start - 8)
    out += struct.pack(">I", crc)
    out += chunk(b"IEND", b"")
    return bytes(out)


def zlib_settings(sample: bytes) -> tuple[int, int]:
    """(level, strategy) for filtered image data that starts with ``sample``: run-length
    only at level 1 where that codes the sample no larger than string matching at level 6
    (photographs, whose low bytes are noise), else string matching at level 6."""
    rle = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    lz = zlib.compressobj(6)
    if len(rle.compress(sample) + rle.flush()) <= len(lz.compress(sample) + lz.flush()):
        return 1, zlib.Z_RLE
    return 6, zlib.Z_DEFAULT_STRATEGY


def _filter_rows(raw: npt.NDArray[np.uint8], bpp: int, *, first: bool) -> bytes:
    """The rows of ``raw`` (rows x row bytes) filtered, each with its filter type first;
    the first row of ``raw`` is only the row above the block unless ``first``."""
    if first:
        cur = raw
        prev = np.zeros_like(cur)
        prev[1:] = cur[:-1]
    else:
        cur, prev = raw[1:], raw[:-1]
    sub = cur.copy()
    sub[:, bpp:] -= cur[:, :-bpp]
    up = cur - prev
    cands = (cur, sub, up)
    scores = np.stack([np.abs(c.view(np.int8), dtype=np.int16).sum(axis=1) for c in cands])
    best = scores.argmin(axis=0)
    framed = np.empty((len(cur), 1 + raw.shape[1]), dtype=np.uint8)
    framed[:, 0] = best
    for kind, cand in enumerate(cands):
        rows = best == kind
        framed[rows, 1:] = cand[rows]
    return framed.tobytes()
