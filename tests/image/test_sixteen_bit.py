"""The 16-bit path: veilpix's own PNG codec and its 16-bit TIFF reader and writer.

The PNG and TIFF files here are written by small encoders in this file (each filter type and
layout chosen on purpose, so the decoder meets every case), by OpenCV where it is installed
(an independent peer; it is a dev-only dependency) and come from ../shared/corpus where
present. Pillow is the second reader: it decodes 16-bit colour at 8 bits, so the high bytes
must match.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import factories
import veilpix
from veilpix.formats._png import scan_png
from veilpix.formats._tiff import prove_tiff, rewrite_tiff, scan_tiff
from veilpix.image import _png16, _tiff16
from veilpix.image._pixels import deep_reencode

RNG = np.random.default_rng(16)
LIMIT = 100_000_000
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
ADAM7 += ((0, 1, 1, 2),)


def cv2_or_skip() -> Any:
    try:
        import cv2
    except ImportError:
        pytest.skip("OpenCV (a dev-only peer) is not installed")
    return cv2


def samples(shape: tuple[int, ...], depth: int = 16) -> np.ndarray:
    """Pixels with structure (a ramp, so the predictors matter) and noise in the low bits."""
    top = (1 << depth) - 1
    h, w = shape[:2]
    ramp = (np.add.outer(np.arange(h) * 97, np.arange(w) * 61) % (top + 1)).astype(np.int64)
    ramp = ramp.reshape(h, w, *([1] * (len(shape) - 2)))
    noise = RNG.integers(0, 1 << (depth // 2), shape)
    return np.asarray((ramp + noise) % (top + 1), dtype=np.uint16 if depth == 16 else np.uint8)


# -- a PNG encoder for the tests: every filter type, per row, by hand ----------------------------


def _predict(kind: int, row: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """The prediction of filter ``kind`` for ``row`` (int arrays of byte values)."""
    a = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
    b = prev
    c = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
    if kind == 0:
        return np.zeros_like(row)
    if kind == 1:
        return a
    if kind == 2:
        return b
    if kind == 3:
        return (a + b) // 2
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filtered(pixels: np.ndarray, kinds: Any, depth: int) -> bytes:
    h, _, ch = pixels.shape
    raw = pixels.astype(">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(h, -1)
    bpp = ch * depth // 8
    out = bytearray()
    prev = np.zeros(raw.shape[1], np.int64)
    for y in range(h):
        kind = kinds if isinstance(kinds, int) else int(kinds[y % len(kinds)])
        row = raw[y].astype(np.int64)
        out.append(kind)
        out += ((row - _predict(kind, row, prev, bpp)) % 256).astype(np.uint8).tobytes()
        prev = row
    return bytes(out)


def png_file(
    pixels: np.ndarray,
    ctype: int,
    *,
    kinds: Any = None,
    interlace: bool = False,
    before: list[tuple[bytes, bytes]] | None = None,
    stream: bytes | None = None,
    idat_pieces: int = 3,
    ihdr: bytes | None = None,
) -> bytes:
    """A PNG of ``pixels`` (H x W x C); ``kinds``: one filter type for all rows, a sequence
    cycled over the rows, or None for a random type per row."""
    h, w = pixels.shape[:2]
    depth = 16 if pixels.dtype == np.uint16 else 8
    if kinds is None:
        kinds = RNG.integers(0, 5, max(1, h))
    if stream is None:
        if interlace:
            parts = []
            for x0, y0, dx, dy in ADAM7:
                sub = pixels[y0::dy, x0::dx]
                if sub.size:
                    parts.append(_filtered(sub, kinds, depth))
            rows = b"".join(parts)
        else:
            rows = _filtered(pixels, kinds, depth)
        stream = zlib.compress(rows, 9)
    head = ihdr or struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, int(interlace))
    step = max(1, -(-len(stream) // idat_pieces))
    chunks = [factories.png_chunk(b"IHDR", head)]
    chunks += [factories.png_chunk(k, b) for k, b in before or []]
    chunks += [
        factories.png_chunk(b"IDAT", stream[i : i + step]) for i in range(0, len(stream), step)
    ]
    chunks.append(factories.png_chunk(b"IEND", b""))
    return _png16.SIGNATURE + b"".join(chunks)


def chunk_types(data: bytes) -> list[bytes]:
    return [kind for kind, _ in factories.png_chunks(data)]


def pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im)


# -- PNG: decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", [0, 2, 4, 6])
@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("size", [(1, 1), (1, 37), (29, 1), (2, 2), (23, 37), (64, 61)])
def test_every_filter_per_row_round_trips(ctype: int, depth: int, size: tuple[int, int]) -> None:
    pixels = samples((*size, CHANNELS[ctype]), depth)
    decoded = _png16.decode_png(png_file(pixels, ctype), max_pixels=LIMIT)
    assert decoded.pixels.dtype == pixels.dtype
    assert np.array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize("kinds", [0, 1, 2, 3, 4, (3, 4), (4, 2), (1, 4, 0), (2, 2, 3, 1, 1)])
def test_each_filter_type_and_mixtures(kinds: Any) -> None:
    pixels = samples((48, 53, 3))
    decoded = _png16.decode_png(png_file(pixels, 2, kinds=kinds), max_pixels=LIMIT)
    assert np.array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize("kinds", [(0, 2), (2, 2, 1), (1, 2, 2, 2, 0, 2)])
def test_many_short_runs_of_up_rows_in_a_tall_narrow_image(kinds: Any) -> None:
    # one run of Up rows after another, across the decoder's blocks of rows: decoded in one
    # sweep (a loop per run made a 1 x 4,000,000 file take 15 s)
    pixels = samples((30_000, 1, 3))
    pattern = (list(kinds) * 30_000)[:30_000]
    decoded = _png16.decode_png(png_file(pixels, 2, kinds=pattern), max_pixels=LIMIT)
    assert np.array_equal(decoded.pixels, pixels)


def test_average_and_paeth_rows_between_others() -> None:
    """The wavefront starts below rows decoded directly and hands over to them after."""
    pixels = samples((40, 30, 4))
    kinds = [1, 2, 0] + [4] * 10 + [2, 3, 1] + [0] * 20 + [2] * 4 + [1]
    decoded = _png16.decode_png(png_file(pixels, 6, kinds=kinds), max_pixels=LIMIT)
    assert np.array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize("size", [(1, 1), (3, 9), (9, 3), (8, 8), (23, 37)])
def test_interlaced(size: tuple[int, int]) -> None:
    pixels = samples((*size, 4))
    data = png_file(pixels, 6, interlace=True)
    assert np.array_equal(_png16.decode_png(data, max_pixels=LIMIT).pixels, pixels)
    assert np.array_equal(pillow(data), (pixels >> 8).astype(np.uint8))


@pytest.mark.parametrize("ctype", [2, 4, 6])
def test_high_bytes_match_pillow(ctype: int) -> None:
    pixels = samples((31, 45, CHANNELS[ctype]))
    data = png_file(pixels, ctype)
    ours = _png16.decode_png(data, max_pixels=LIMIT).pixels
    theirs = pillow(data)
    if ctype == 4:  # Pillow reads 16-bit grey + alpha as RGBA
        theirs = theirs[..., [0, 3]]
    assert np.array_equal((ours >> 8).astype(np.uint8), theirs)


def test_eight_bit_matches_pillow() -> None:
    for ctype in (0, 2, 4, 6):
        pixels = samples((17, 19, CHANNELS[ctype]), 8)
        data = png_file(pixels, ctype)
        ours = _png16.decode_png(data, max_pixels=LIMIT).pixels
        assert np.array_equal(ours.reshape(pillow(data).shape), pillow(data))


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_opencv_files_decode(level: int) -> None:
    """OpenCV's writer (libpng: adaptive filters at most levels) as an independent source."""
    cv2 = cv2_or_skip()
    for channels in (3, 4):
        pixels = samples((57, 83, channels))
        ok, buf = cv2.imencode(
            ".png", pixels[..., [2, 1, 0, 3][:channels]], [cv2.IMWRITE_PNG_COMPRESSION, level]
        )
        assert ok
        ours = _png16.decode_png(buf.tobytes(), max_pixels=LIMIT).pixels
        assert np.array_equal(ours, pixels)


def test_shared_corpus_sixteen_bit_png(shared: Path) -> None:
    """basn2c16.png (PngSuite, 16-bit RGB): high bytes as Pillow reads them, and every bit
    as OpenCV reads it where installed."""
    path = shared / "corpus" / "mdx__basn2c16.png"
    if not path.is_file():
        pytest.skip("mdx__basn2c16.png is not in the shared corpus")
    data = path.read_bytes()
    ours = _png16.decode_png(data, max_pixels=LIMIT).pixels
    assert ours.shape == (32, 32, 3)
    assert np.array_equal((ours >> 8).astype(np.uint8), pillow(data))
    try:
        import cv2
    except ImportError:
        return
    theirs = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert np.array_equal(ours, theirs)


def test_display_chunks_are_kept_and_the_rest_dropped() -> None:
    pixels = samples((5, 7, 3))
    before = [
        (b"gAMA", struct.pack(">I", 100000)),
        (b"sBIT", b"\x0c\x0c\x0c"),
        (b"tRNS", b"\x00\x01\x00\x02\x00\x03"),
        (b"tEXt", b"Author\x00" + factories.SECRET.encode()),
        (b"eXIf", factories.exif_tiff()),
        (b"tIME", b"\x07\xe8\x05\x06\x07\x08\x09"),
        (b"cHRM", b"\x00" * 31),  # the wrong size: dropped
        (b"gAMA", struct.pack(">I", 45455)),  # a second copy: dropped
        (b"prIv", b"private"),
    ]
    decoded = _png16.decode_png(png_file(pixels, 2, before=before), max_pixels=LIMIT)
    assert [k for k, _ in decoded.chunks] == [b"gAMA", b"sBIT", b"tRNS"]
    assert dict(decoded.chunks)[b"gAMA"] == struct.pack(">I", 100000)
    out = _png16.encode_png(decoded.pixels, 2, decoded.chunks)
    assert chunk_types(out) == [b"IHDR", b"gAMA", b"sBIT", b"tRNS", b"IDAT", b"IEND"]
    assert factories.SECRET.encode() not in out


def test_display_chunks_after_the_image_data_are_dropped() -> None:
    data = png_file(samples((4, 4, 3)), 2, idat_pieces=1)
    at = data.index(b"IEND") - 4
    data = data[:at] + factories.png_chunk(b"gAMA", struct.pack(">I", 100000)) + data[at:]
    assert _png16.decode_png(data, max_pixels=LIMIT).chunks == ()


# -- PNG: encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", [0, 2, 4, 6])
@pytest.mark.parametrize("size", [(1, 1), (1, 40), (40, 1), (33, 47)])
def test_encoder_round_trips_and_writes_structure_only(ctype: int, size: tuple[int, int]) -> None:
    for depth in (8, 16):
        pixels = samples((*size, CHANNELS[ctype]), depth)
        out = _png16.encode_png(pixels, ctype)
        assert chunk_types(out)[0] == b"IHDR" and chunk_types(out)[-2:] == [b"IDAT", b"IEND"]
        assert set(chunk_types(out)) == {b"IHDR", b"IDAT", b"IEND"}
        assert np.array_equal(_png16.decode_png(out, max_pixels=LIMIT).pixels, pixels)
        scan = scan_png(out)
        assert (scan.width, scan.height) == (size[1], size[0])
        assert not scan.dirty_parts(icc_ok=False)
        theirs = pillow(out)
        if depth == 16 and ctype == 0:  # Pillow reads 16-bit grey whole
            assert np.array_equal(theirs, pixels[..., 0])
            continue
        if depth == 16 and ctype == 4:  # and 16-bit grey + alpha as RGBA
            theirs = theirs[..., [0, 3]]
        expect = (pixels >> 8).astype(np.uint8) if depth == 16 else pixels
        assert np.array_equal(theirs.reshape(expect.shape), expect)


def test_encoder_output_decodes_in_opencv() -> None:
    cv2 = cv2_or_skip()
    for channels, ctype in ((3, 2), (4, 6)):
        pixels = samples((61, 70, channels))
        back = cv2.imdecode(np.frombuffer(_png16.encode_png(pixels, ctype), np.uint8), -1)
        assert np.array_equal(back[..., [2, 1, 0, 3][:channels]], pixels)


def test_encoder_picks_string_matching_for_drawings() -> None:
    """A flat drawing compresses far better with string matching; noise with run lengths."""
    flat = np.zeros((200, 300, 3), np.uint16)
    flat[50:150, 60:240] = (60000, 1000, 30000)
    assert len(_png16.encode_png(flat, 2)) < 2000
    assert (
        _png16.zlib_settings(RNG.integers(0, 256, 50000, dtype=np.uint8).tobytes())[1] == zlib.Z_RLE
    )
    assert _png16.zlib_settings(bytes(range(256)) * 200)[1] == zlib.Z_DEFAULT_STRATEGY


# -- PNG: hostile input ----------------------------------------------------------------------


def _fails(data: bytes, error: type[Exception], match: str, *, max_pixels: int = LIMIT) -> None:
    """``data`` must raise ``error`` quickly, without allocating much."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match):
            _png16.decode_png(data, max_pixels=max_pixels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak:,} bytes allocated"
    assert time.perf_counter() - start < 5


def good_png() -> bytes:
    return png_file(samples((16, 16, 3)), 2, idat_pieces=1)


def test_bad_crc() -> None:
    data = bytearray(good_png())
    data[data.index(b"IDAT") + 10] ^= 0x40
    _fails(bytes(data), veilpix.CorruptImage, "CRC")


def test_truncated_image_data() -> None:
    pixels = samples((16, 16, 3))
    stream = zlib.compress(_filtered(pixels, 4, 16))
    _fails(
        png_file(pixels, 2, stream=stream[: len(stream) // 2]), veilpix.CorruptImage, "cut short"
    )
    data = good_png()
    _fails(data[: len(data) - 30], veilpix.CorruptImage, "truncated")


def test_decompression_bomb_stops_after_one_byte_too_many() -> None:
    """An IDAT that inflates to 256 MiB under an IHDR of 64 x 64."""
    z = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    stream = b"".join(z.compress(zeros) for _ in range(256)) + z.flush()
    data = png_file(samples((64, 64, 3)), 2, stream=stream)
    _fails(data, veilpix.CorruptImage, "inflates to more than")


def test_huge_declared_size_is_refused_before_allocating() -> None:
    head = struct.pack(">IIBBBBB", 100_000, 100_000, 16, 2, 0, 0, 0)
    data = png_file(samples((2, 2, 3)), 2, ihdr=head)
    _fails(data, veilpix.ImageTooLarge, "over the limit")
    with pytest.raises(veilpix.ImageTooLarge):  # the pipeline's own limit comes first there
        deep_reencode(data, "PNG", 1, policy=veilpix.Policy(), size=(100_000, 100_000))


def test_huge_declared_size_within_the_limit_fails_on_its_data() -> None:
    head = struct.pack(">IIBBBBB", 20_000, 20_000, 16, 6, 0, 0, 0)  # 3.2 GB of rows declared
    data = png_file(samples((2, 2, 4)), 6, ihdr=head)
    with pytest.raises((veilpix.CorruptImage, veilpix.ImageTooLarge)):
        deep_reencode(data, "PNG", 1)


def test_bad_filter_type() -> None:
    pixels = samples((8, 8, 3))
    rows = bytearray(_filtered(pixels, 1, 16))
    rows[3 * (1 + 8 * 6)] = 5
    _fails(
        png_file(pixels, 2, stream=zlib.compress(bytes(rows))),
        veilpix.CorruptImage,
        "row 3 has filter type 5",
    )


@pytest.mark.parametrize(
    ("depth", "ctype", "error", "match"),
    [
        (4, 2, veilpix.CorruptImage, "not a valid combination"),
        (1, 6, veilpix.CorruptImage, "not a valid combination"),
        (3, 0, veilpix.CorruptImage, "not a valid combination"),
        (16, 5, veilpix.CorruptImage, "not a valid combination"),
        (16, 3, veilpix.CorruptImage, "not a valid combination"),
        (8, 3, veilpix.UnsupportedImage, "colour type 3"),
        (4, 0, veilpix.UnsupportedImage, "bit depth 4"),
    ],
)
def test_bit_depth_and_colour_type_combinations(
    depth: int, ctype: int, error: type[Exception], match: str
) -> None:
    head = struct.pack(">IIBBBBB", 4, 4, depth, ctype, 0, 0, 0)
    _fails(png_file(samples((4, 4, 3)), 2, ihdr=head), error, match)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ("methods", "not a valid combination"),
        ("empty", "impossible size"),
        ("ihdr-later", "IHDR is not the first"),
        ("no-idat", "no image data"),
        ("split-idat", "not one run"),
        ("critical", "unknown critical chunk"),
        ("signature", "bad signature"),
        ("extra-rows", "inflates to more than"),
        ("not-zlib", "not a valid zlib stream"),
        ("grey-palette", "palette in a greyscale"),
    ],
)
def test_malformed_structure(change: str, match: str) -> None:
    pixels = samples((6, 6, 3))
    rows = _filtered(pixels, 2, 16)
    data: bytes
    error: type[Exception] = veilpix.CorruptImage
    if change == "methods":
        data = png_file(pixels, 2, ihdr=struct.pack(">IIBBBBB", 6, 6, 16, 2, 1, 0, 0))
    elif change == "empty":
        data = png_file(pixels, 2, ihdr=struct.pack(">IIBBBBB", 0, 6, 16, 2, 0, 0, 0))
    elif change == "ihdr-later":
        good = good_png()
        data = good[:8] + factories.png_chunk(b"gAMA", bytes(4)) + good[8:]
    elif change == "no-idat":
        data = png_file(pixels, 2, stream=b"")
    elif change == "split-idat":
        data = png_file(pixels, 2, idat_pieces=2)
        at = data.rindex(b"IDAT") - 4
        data = data[:at] + factories.png_chunk(b"tEXt", b"a\x00b") + data[at:]
    elif change == "critical":
        data = png_file(pixels, 2, before=[(b"ABCD", b"")])
        error = veilpix.UnsupportedImage
    elif change == "signature":
        data = b"\x89PNG\r\n\x1a\x0b" + good_png()[8:]
    elif change == "extra-rows":
        data = png_file(pixels, 2, stream=zlib.compress(rows + rows[:10]))
    elif change == "not-zlib":
        data = png_file(pixels, 2, stream=b"\x78\x9c" + bytes(range(200)))
    else:
        head = struct.pack(">IIBBBBB", 6, 6, 16, 0, 0, 0, 0)
        data = png_file(pixels[..., :1], 0, ihdr=head, before=[(b"PLTE", bytes(6))])
    _fails(data, error, match)


def test_sequential_steps_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Average/Paeth rows need W + H vector steps: a shape that needs too many is refused."""
    monkeypatch.setattr(_png16, "MAX_STEPS", 50)
    data = png_file(samples((30, 30, 3)), 2, kinds=4)
    _fails(data, veilpix.ImageTooLarge, "sequential steps")
    assert _png16.decode_png(png_file(samples((30, 30, 3)), 2, kinds=2), max_pixels=LIMIT)


# -- a TIFF writer for the tests -------------------------------------------------------------


def lzw(data: bytes) -> bytes:
    """TIFF LZW as libtiff writes it: MSB first, 9 to 12-bit codes, a clear code when the
    table fills."""
    out = bytearray()
    acc = bits = 0
    width = 9

    def put(code: int) -> None:
        nonlocal acc, bits
        acc = (acc << width) | code
        bits += width
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
        acc &= (1 << bits) - 1

    table = {bytes([i]): i for i in range(256)}
    put(256)
    word = b""
    for value in data:
        longer = word + bytes([value])
        if longer in table:
            word = longer
            continue
        put(table[word])
        table[longer] = len(table) + 2  # codes 256 and 257 are clear and end
        following = len(table) + 2
        if following == 4094:  # full: a clear code, at the width of the full table
            put(256)
            table = {bytes([i]): i for i in range(256)}
            width = 9
        elif following > (1 << width) - 1:
            width += 1
        word = bytes([value])
    if word:
        put(table[word])
    put(257)
    if bits:
        out.append((acc << (8 - bits)) & 0xFF)
    return bytes(out)


def packbits(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        run = 1
        while i + run < len(data) and run < 128 and data[i + run] == data[i]:
            run += 1
        if run >= 3:
            out += bytes([257 - run, data[i]])
            i += run
            continue
        j = i
        while (
            j < len(data)
            and j - i < 128
            and (j + 2 >= len(data) or not data[j] == data[j + 1] == data[j + 2])
        ):
            j += 1
        out.append(j - i - 1)
        out += data[i:j]
        i = j
    return bytes(out)


def tiff_file(
    pixels: np.ndarray,
    *,
    photometric: int = 2,
    compression: int = 1,
    predictor: int = 1,
    rows_per_strip: int = 5,
    tile: tuple[int, int] | None = None,
    planar: int = 1,
    order: str = "<",
    big: bool = False,
    extra: tuple[int, ...] | None = None,
    more: list[tuple[int, int, tuple[Any, ...]]] | None = None,
    bits: tuple[int, ...] | None = None,
) -> bytes:
    """A one-page TIFF of ``pixels`` (H x W x C, uint16) in any of the layouts a 16-bit
    file comes in. ``more``: extra entries (tag, type, values), ASCII as type 2 with bytes."""
    h, w, spp = pixels.shape
    planes = [pixels] if planar == 1 else [pixels[..., i : i + 1] for i in range(spp)]
    blocks: list[bytes] = []
    for plane in planes:
        if tile:
            tw, th = tile
            padded = np.zeros((-(-h // th) * th, -(-w // tw) * tw, plane.shape[2]), np.uint16)
            padded[:h, :w] = plane
            pieces = [
                padded[y : y + th, x : x + tw]
                for y in range(0, padded.shape[0], th)
                for x in range(0, padded.shape[1], tw)
            ]
        else:
            pieces = [plane[y : y + rows_per_strip] for y in range(0, h, rows_per_strip)]
        for piece in pieces:
            block = piece.astype(np.uint16)
            if predictor == 2:
                block[:, 1:] = piece[:, 1:] - piece[:, :-1]
            raw = block.astype(order + "u2").tobytes()
            blocks.append(
                {1: raw, 5: lzw(raw), 8: zlib.compress(raw), 32946: zlib.compress(raw)}.get(
                    compression, packbits(raw)
                )
            )
    e = order
    head = (b"II" if e == "<" else b"MM") + (
        struct.pack(e + "HHHQ", 43, 8, 0, 0) if big else struct.pack(e + "HI", 42, 0)
    )
    body = bytearray(head)
    offsets = []
    for block in blocks:
        offsets.append(len(body))
        body += block + b"\x00" * (len(block) & 1)
    long_type = 16 if big else 4
    entries: list[tuple[int, int, tuple[Any, ...]]] = [
        (256, 4, (w,)),
        (257, 4, (h,)),
        (258, 3, bits or (16,) * spp),
        (259, 3, (compression,)),
        (262, 3, (photometric,)),
        (277, 3, (spp,)),
        (284, 3, (planar,)),
        (317, 3, (predictor,)),
    ]
    if tile:
        entries += [(322, 4, (tile[0],)), (323, 4, (tile[1],))]
        entries += [(324, long_type, tuple(offsets)), (325, 4, tuple(map(len, blocks)))]
    else:
        entries += [(273, long_type, tuple(offsets)), (278, 4, (rows_per_strip,))]
        entries += [(279, 4, tuple(map(len, blocks)))]
    if extra is not None:
        entries.append((338, 3, extra))
    entries += more or []
    entries.sort()
    codes = {2: "s", 3: "H", 4: "I", 16: "Q"}
    inline = 8 if big else 4
    ifd_at = len(body)
    item = 20 if big else 12
    blob_at = ifd_at + (8 if big else 2) + item * len(entries) + (8 if big else 4)
    ifd = bytearray(struct.pack(e + ("Q" if big else "H"), len(entries)))
    blobs = bytearray()
    for tag, typ, values in entries:
        if typ == 2:
            raw, count = values[0] + b"\x00", len(values[0]) + 1
        else:
            raw, count = struct.pack(f"{e}{len(values)}{codes[typ]}", *values), len(values)
        if len(raw) <= inline:
            field = raw.ljust(inline, b"\x00")
        else:
            field = struct.pack(e + ("Q" if big else "I"), blob_at + len(blobs))
            blobs += raw + b"\x00" * (len(raw) & 1)
        ifd += struct.pack(e + ("HHQ" if big else "HHI"), tag, typ, count) + field
    ifd += bytes(8 if big else 4)
    body += ifd + blobs
    struct.pack_into(e + ("Q" if big else "I"), body, 8 if big else 4, ifd_at)
    return bytes(body)


def test_the_test_lzw_encoder_is_right() -> None:
    """The LZW helper above against libtiff (through Pillow, 8-bit grey)."""
    for size in (1, 300, 40_000):
        data = RNG.integers(0, 7, size, dtype=np.uint8).tobytes()
        grey = factories.tiff_file(
            {
                256: (4, 1, struct.pack("<I", size)),
                257: (4, 1, struct.pack("<I", 1)),
                258: (3, 1, struct.pack("<H", 8)),
                259: (3, 1, struct.pack("<H", 5)),
                262: (3, 1, struct.pack("<H", 1)),
                277: (3, 1, struct.pack("<H", 1)),
                278: (4, 1, struct.pack("<I", 1)),
            },
            lzw(data),
        )
        assert pillow(grey).tobytes() == data


# -- TIFF: decoding --------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [1, 5, 8, 32946, 32773])
@pytest.mark.parametrize("predictor", [1, 2])
@pytest.mark.parametrize("order", ["<", ">"])
def test_tiff_compressions_predictors_byte_orders(
    compression: int, predictor: int, order: str
) -> None:
    pixels = samples((13, 21, 3))
    data = tiff_file(pixels, compression=compression, predictor=predictor, order=order)
    decoded = _tiff16.decode_tiff(data, max_pixels=LIMIT)
    assert np.array_equal(decoded.pixels, pixels)
    assert decoded.photometric == 2 and decoded.extra == ()


@pytest.mark.parametrize("planar", [1, 2])
@pytest.mark.parametrize("tile", [None, (16, 16), (32, 16)])
@pytest.mark.parametrize("size", [(1, 1), (1, 40), (40, 1), (37, 45)])
def test_tiff_layouts(planar: int, tile: tuple[int, int] | None, size: tuple[int, int]) -> None:
    pixels = samples((*size, 4))
    for compression, predictor in ((8, 2), (5, 1)):
        data = tiff_file(
            pixels,
            compression=compression,
            predictor=predictor,
            tile=tile,
            planar=planar,
            rows_per_strip=7,
            extra=(2,),
        )
        decoded = _tiff16.decode_tiff(data, max_pixels=LIMIT)
        assert np.array_equal(decoded.pixels, pixels), (compression, predictor)
        assert decoded.extra == (2,)


def test_tiles_of_a_size_the_standard_does_not_allow() -> None:
    """Tiles must be multiples of 16 px; libtiff reads others, and so does this path."""
    pixels = samples((21, 19, 3))
    data = tiff_file(pixels, compression=8, predictor=2, tile=(8, 12))
    assert np.array_equal(_tiff16.decode_tiff(data, max_pixels=LIMIT).pixels, pixels)


@pytest.mark.parametrize("compression", [1, 8])
def test_fill_order_two(compression: int) -> None:
    """FillOrder 2: the bits of every byte of the strips are stored reversed."""
    pixels = samples((6, 7, 3))
    plain = tiff_file(pixels, compression=compression, rows_per_strip=6, more=[(266, 3, (2,))])
    (ifd,) = struct.unpack_from("<I", plain, 4)
    strip = bytearray(plain[8:ifd])
    table = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
    data = plain[:8] + bytes(strip).translate(table) + plain[ifd:]
    assert np.array_equal(_tiff16.decode_tiff(data, max_pixels=LIMIT).pixels, pixels)


@pytest.mark.parametrize("order", ["<", ">"])
def test_bigtiff(order: str) -> None:
    pixels = samples((9, 11, 3))
    data = tiff_file(pixels, compression=8, predictor=2, big=True, order=order)
    assert np.array_equal(_tiff16.decode_tiff(data, max_pixels=LIMIT).pixels, pixels)


def test_tiff_high_bytes_match_pillow() -> None:
    for channels, extra in ((3, None), (4, (2,)), (4, None)):
        pixels = samples((19, 23, channels))
        data = tiff_file(pixels, compression=8, predictor=2, extra=extra)
        ours = _tiff16.decode_tiff(data, max_pixels=LIMIT).pixels
        assert np.array_equal((ours >> 8).astype(np.uint8), pillow(data))


@pytest.mark.parametrize("compression", [1, 5, 8, 32773, 32946])
def test_opencv_tiffs_decode(compression: int) -> None:
    cv2 = cv2_or_skip()
    for channels in (3, 4):
        pixels = samples((45, 67, channels))
        bgr = pixels[..., [2, 1, 0, 3][:channels]]
        ok, buf = cv2.imencode(".tiff", bgr, [cv2.IMWRITE_TIFF_COMPRESSION, compression])
        assert ok
        assert np.array_equal(_tiff16.decode_tiff(buf.tobytes(), max_pixels=LIMIT).pixels, pixels)


def test_shared_corpus_sixteen_bit_tiff(shared: Path) -> None:
    path = shared / "corpus" / "pillow__tiff_16bit_RGB.tiff"
    if not path.is_file():
        pytest.skip("pillow__tiff_16bit_RGB.tiff is not in the shared corpus")
    data = path.read_bytes()
    ours = _tiff16.decode_tiff(data, max_pixels=LIMIT).pixels
    assert ours.shape == (40, 100, 3)
    assert np.array_equal((ours >> 8).astype(np.uint8), pillow(data))
    try:
        import cv2
    except ImportError:
        return
    theirs = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert np.array_equal(ours, theirs)


# -- TIFF: encoding --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (1, 40), (40, 1), (300, 500)])
def test_tiff_writer(size: tuple[int, int]) -> None:
    for channels, photometric, extra in ((3, 2, ()), (4, 2, (2,)), (4, 2, ()), (1, 1, ())):
        pixels = samples((*size, channels))
        out = _tiff16.encode_tiff(pixels, photometric, extra)
        decoded = _tiff16.decode_tiff(out, max_pixels=LIMIT)
        assert np.array_equal(decoded.pixels, pixels)
        assert decoded.extra == extra
        hi = pillow(out)
        if channels > 1:
            assert np.array_equal(hi, (pixels >> 8).astype(np.uint8))
        else:
            assert np.array_equal(hi, pixels[..., 0])  # Pillow reads 16-bit grey whole
        scan = scan_tiff(out)
        assert not scan.dirty_parts(icc_ok=False) and not scan.exif[1:]
        prove_tiff(out, scan)  # canonical tags, strips that hold exactly their rows
        icc = rewrite_tiff(out, scan, icc=b"x" * 200)
        assert np.array_equal(_tiff16.decode_tiff(icc, max_pixels=LIMIT).pixels, pixels)


def test_tiff_writer_output_decodes_in_opencv() -> None:
    cv2 = cv2_or_skip()
    pixels = samples((33, 44, 3))
    back = cv2.imdecode(np.frombuffer(_tiff16.encode_tiff(pixels, 2), np.uint8), -1)
    assert np.array_equal(back[..., ::-1], pixels)


# -- TIFF: what is refused -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"compression": 7}, veilpix.UnsupportedImage, "compression 7"),
        ({"photometric": 5}, veilpix.UnsupportedImage, "photometric interpretation 5"),
        ({"bits": (16, 16, 8)}, veilpix.UnsupportedImage, "16-bit samples only"),
        ({"more": [(339, 3, (3, 3, 3))]}, veilpix.UnsupportedImage, "SampleFormat"),
        ({"predictor": 3}, veilpix.UnsupportedImage, "predictor 3"),
        ({"planar": 3}, veilpix.CorruptImage, "planar configuration 3"),
    ],
)
def test_tiff_refusals(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    pixels = samples((8, 8, 3))
    if kwargs.get("predictor") == 3:
        data = _set_tag(tiff_file(pixels), 317, 3)
    elif "planar" in kwargs:
        data = _set_tag(tiff_file(pixels), 284, 3)
    else:
        data = tiff_file(pixels, **kwargs)
    with pytest.raises(error, match=match):
        _tiff16.decode_tiff(data, max_pixels=LIMIT)


def _set_tag(data: bytes, tag: int, value: int, *, kind: str = "H") -> bytes:
    """Set the inline SHORT (``kind="H"``) or LONG (``"I"``) value of ``tag`` in a
    little-endian classic TIFF."""
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    out = bytearray(data)
    for i in range(count):
        p = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, p)[0] == tag:
            struct.pack_into("<" + kind, out, p + 8, value)
    return bytes(out)


def test_damaged_tiff_data() -> None:
    pixels = samples((20, 20, 3))
    data = tiff_file(pixels, compression=5, rows_per_strip=20)
    cut = data[:20] + b"\xff" * 30 + data[50:]  # LZW codes that go nowhere
    with pytest.raises(veilpix.CorruptImage):
        _tiff16.decode_tiff(cut, max_pixels=LIMIT)
    data = tiff_file(pixels, compression=8, rows_per_strip=20)
    with pytest.raises(veilpix.CorruptImage):
        _tiff16.decode_tiff(data[:20] + bytes(30) + data[50:], max_pixels=LIMIT)
    short = _set_long(tiff_file(pixels, rows_per_strip=5), 278, 3)  # 7 strips needed, 4 given
    with pytest.raises(veilpix.CorruptImage, match="4 strips and 4 byte counts"):
        _tiff16.decode_tiff(short, max_pixels=LIMIT)


def test_tiff_huge_declared_size() -> None:
    data = tiff_file(samples((2, 2, 3)))
    big = _set_long(data, 256, 100_000)
    big = _set_long(big, 257, 100_000)
    with pytest.raises(veilpix.ImageTooLarge, match="over the limit"):
        _tiff16.decode_tiff(big, max_pixels=LIMIT)


def _set_long(data: bytes, tag: int, value: int) -> bytes:
    return _set_tag(data, tag, value, kind="I")


# -- the pipeline ----------------------------------------------------------------------------

TURNS = {  # the stored pixels for each orientation, from the upright ones
    1: lambda a: a,
    3: lambda a: a[::-1, ::-1],
    6: lambda a: np.rot90(a, k=1),
    8: lambda a: np.rot90(a, k=-1),
    5: lambda a: a.swapaxes(0, 1),
}


def deep_tiff(orientation: int, pixels: np.ndarray, **kwargs: Any) -> bytes:
    stored = np.ascontiguousarray(TURNS[orientation](pixels))
    more = [
        (274, 3, (orientation,)),
        (271, 2, (b"VeilCam",)),
        (315, 2, (factories.SECRET.encode(),)),
        (306, 2, (b"2024:05:06 07:08:09",)),
    ]
    return tiff_file(stored, compression=5, predictor=2, more=more, **kwargs)


def residual_clean(shared: Path, tmp_path: Path, data: bytes, name: str) -> None:
    """The shared metadata oracle (tools/residual.py) finds nothing left in ``data``."""
    script = shared / "tools" / "residual.py"
    if not script.is_file():
        pytest.skip("the shared metadata oracle is not present")
    path = tmp_path / name
    path.write_bytes(data)
    run = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, check=False
    )
    if run.returncode == 2:
        pytest.skip(f"the oracle could not run: {run.stderr.strip()[:200]}")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("orientation", [3, 5, 6, 8])
def test_pipeline_keeps_sixteen_bits_of_a_turned_png(orientation: int, assert_clean: Any) -> None:
    for alpha in (False, True):
        data, upright = factories.png16(orientation=orientation, alpha=alpha)
        out = veilpix.sanitize(data)
        assert "16-bit depth kept" in out.report.notes
        assert np.array_equal(_png16.decode_png(out.data, max_pixels=LIMIT).pixels, upright)
        assert set(chunk_types(out.data)) == {b"IHDR", b"IDAT", b"IEND"}
        assert_clean(out.data, "out.png")


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_pipeline_keeps_sixteen_bits_of_a_turned_tiff(orientation: int, assert_clean: Any) -> None:
    upright = samples((30, 44, 3))
    out = veilpix.sanitize(deep_tiff(orientation, upright))
    assert out.report.format_out == "TIFF" and "16-bit depth kept" in out.report.notes
    assert np.array_equal(_tiff16.decode_tiff(out.data, max_pixels=LIMIT).pixels, upright)
    assert factories.SECRET.encode() not in out.data and b"VeilCam" not in out.data
    assert_clean(out.data, "out.tif")


def test_pipeline_outputs_pass_the_shared_oracle(shared: Path, tmp_path: Path) -> None:
    png = veilpix.sanitize(factories.png16(orientation=6, alpha=True)[0]).data
    tif = veilpix.sanitize(deep_tiff(6, samples((20, 24, 4)), extra=(2,))).data
    residual_clean(shared, tmp_path, png, "out.png")
    residual_clean(shared, tmp_path, tif, "out.tif")


def test_pipeline_blocks_what_the_sixteen_bit_path_cannot_read() -> None:
    """A 16-bit CMYK TIFF (turned, so it cannot be stripped in place) is refused, not sent."""
    data = deep_tiff(6, samples((10, 12, 4)), photometric=5)
    with pytest.raises(veilpix.ImageError):
        veilpix.sanitize(data)


def test_pipeline_keeps_a_standard_profile_on_a_sixteen_bit_png() -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data, upright = factories.png16(orientation=6)
    at = data.index(b"IDAT") - 4
    data = (
        data[:at] + factories.png_chunk(b"iCCP", b"sRGB\x00\x00" + zlib.compress(icc)) + data[at:]
    )
    out = veilpix.sanitize(data)
    assert b"iCCP" in chunk_types(out.data)
    assert np.array_equal(_png16.decode_png(out.data, max_pixels=LIMIT).pixels, upright)


# -- without OpenCV --------------------------------------------------------------------------

_NO_CV2 = """
import sys
sys.modules["cv2"] = None  # any 'import cv2' now raises ImportError
from pathlib import Path
import numpy as np
import veilpix
from veilpix.image._faces import FaceBox

folder = Path(sys.argv[1])
for name in ("in.png", "in.tif"):
    out = veilpix.sanitize((folder / name).read_bytes())
    assert "16-bit depth kept" in out.report.notes, out.report.notes
    (folder / ("out-" + name)).write_bytes(out.data)

class Fixed:
    name = "fixed"
    def detect(self, rgb, *, scale=1.0):
        return [FaceBox(40, 30, 100, 110, 0.9)]

for mode in ("blur", "pixelate"):
    policy = veilpix.Policy(faces=mode, face_detector=Fixed(), face_rotations=False)
    out = veilpix.sanitize((folder / "face.png").read_bytes(), policy)
    assert out.report.faces_blurred == 1
    (folder / ("out-" + mode + ".png")).write_bytes(out.data)
print("ok", "cv2" in sys.modules and sys.modules["cv2"] is None)
"""


def test_everything_here_works_without_opencv(tmp_path: Path) -> None:
    (tmp_path / "in.png").write_bytes(factories.png16(orientation=6, alpha=True)[0])
    upright = samples((21, 30, 3))
    (tmp_path / "in.tif").write_bytes(deep_tiff(8, upright))
    face = RNG.integers(0, 256, (160, 140, 3), dtype=np.uint8)
    (tmp_path / "face.png").write_bytes(factories.encode(Image.fromarray(face), "PNG"))
    run = subprocess.run(
        [sys.executable, "-c", _NO_CV2, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok True"
    png = _png16.decode_png((tmp_path / "out-in.png").read_bytes(), max_pixels=LIMIT)
    assert np.array_equal(png.pixels, factories.png16(orientation=6, alpha=True)[1])
    tif = _tiff16.decode_tiff((tmp_path / "out-in.tif").read_bytes(), max_pixels=LIMIT)
    assert np.array_equal(tif.pixels, upright)
    for mode in ("blur", "pixelate"):
        out = pillow((tmp_path / f"out-{mode}.png").read_bytes()).astype(float)
        inside = (slice(50, 90), slice(55, 85))
        assert out[inside].std() < 0.5 * face[inside].std(), mode  # the noise is gone there
        assert np.array_equal(out[:10, :10], face[:10, :10])  # and untouched far away


def _shared_strips(n: int, blob: bytes) -> bytes:
    """A 1 x n 16-bit RGB TIFF whose n one-row strips all point at the same ``blob``."""
    offsets = struct.pack(f"<{n}I", *([8] * n))
    counts = struct.pack(f"<{n}I", *([len(blob)] * n))
    bits = struct.pack("<3H", 16, 16, 16)
    at_bits = 8 + len(blob)
    at_offsets, at_counts = at_bits + len(bits), at_bits + len(bits) + len(offsets)
    ifd_at = at_counts + len(counts)
    entries = [
        (256, 4, 1, struct.pack("<I", 1)),
        (257, 4, 1, struct.pack("<I", n)),
        (258, 3, 3, struct.pack("<I", at_bits)),
        (259, 3, 1, struct.pack("<HH", 1, 0)),
        (262, 3, 1, struct.pack("<HH", 2, 0)),
        (273, 4, n, struct.pack("<I", at_offsets)),
        (277, 3, 1, struct.pack("<HH", 3, 0)),
        (278, 4, 1, struct.pack("<I", 1)),
        (279, 4, n, struct.pack("<I", at_counts)),
        (284, 3, 1, struct.pack("<HH", 1, 0)),
    ]
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHI", t, ty, c) + v for t, ty, c, v in entries) + bytes(4)
    return b"II*\x00" + struct.pack("<I", ifd_at) + blob + bits + offsets + counts + ifd


def test_strips_that_overlap_are_refused_before_anything_is_copied() -> None:
    # 100 strips sharing one 1 MiB blob: copied one by one for the decoder, a 1 MB file
    # made it hold 100 MB (a review found 838 MiB from 400 strips)
    data = _shared_strips(100, bytes(1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(veilpix.CorruptImage, match="overlap"):
            _tiff16.decode_tiff(data, max_pixels=LIMIT)
        with pytest.raises(veilpix.CorruptImage):
            veilpix.sanitize(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
