"""Structure only, proved: every byte a lossless strip keeps is structure that veilpix rebuilt
or compressed image data whose extent the codec proves. Each test hides a payload in a place a
strip used to keep (a text with a GPS position and a name, or a whole EXIF block) and checks
that the output does not carry it, still decodes, and says what was removed."""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import veilpix
from factories import encode, exif_tiff, picture, png_chunk
from veilpix import _turbojpeg
from veilpix._jpeg import scan_jpeg

PAYLOAD = b"GPS 52.5163N 13.3777E Jane Doe, Invalidenstr. 7"
needs_turbojpeg = pytest.mark.skipif(
    not _turbojpeg.available(), reason="libturbojpeg is not installed"
)


def _noise(size: tuple[int, int] = (96, 64), seed: int = 3) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _stuffed(blob: bytes) -> bytes:
    """``blob`` as it can sit inside entropy-coded data: every 0xFF followed by a 0x00."""
    return blob.replace(b"\xff", b"\xff\x00")


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im.convert("RGB"))


def _clean(result: veilpix.SanitizedImage, *payloads: bytes) -> None:
    """The output decodes fully, holds none of ``payloads`` and inspects clean."""
    for payload in payloads:
        assert payload not in result.data
    _pixels(result.data)
    assert not veilpix.inspect(result.data).findings


def _before_eoi(jpeg: bytes, hidden: bytes) -> bytes:
    end = jpeg.rindex(b"\xff\xd9")
    return jpeg[:end] + hidden + jpeg[end:]


# --------------------------------------------------------------------------- JPEG


@needs_turbojpeg
@pytest.mark.parametrize(
    "hidden",
    [PAYLOAD, _stuffed(b"Exif\x00\x00" + exif_tiff())],
    ids=["text", "exif-block"],
)
@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_jpeg_bytes_after_the_coded_data_are_removed(hidden: bytes, progressive: bool) -> None:
    source = encode(_noise(), "JPEG", quality=90, progressive=progressive)
    result = veilpix.sanitize(_before_eoi(source, hidden))
    _clean(result, PAYLOAD[:12], b"Exif\x00\x00", b"Jane Doe")
    assert result.report.lossless  # the coefficients are kept: same pixels as the source
    assert (_pixels(result.data) == _pixels(source)).all()
    assert any(n.startswith("removed: ") for n in result.report.notes), result.report.notes


@needs_turbojpeg
@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9])
def test_jpeg_a_few_hidden_bytes_are_found_too(size: int) -> None:
    """libjpeg's bit reader loads up to 7 bytes ahead: those are proved by the cut decode."""
    source = encode(_noise((64, 48), seed=size), "JPEG", quality=85)
    hidden = bytes(range(0x41, 0x41 + size))
    result = veilpix.sanitize(_before_eoi(source, hidden))
    assert any(n.startswith("removed: ") for n in result.report.notes), result.report.notes
    assert not result.data[:-2].endswith(hidden)
    assert (_pixels(result.data) == _pixels(source)).all()


@needs_turbojpeg
def test_jpeg_bytes_before_a_restart_marker_are_removed() -> None:
    source = encode(_noise(), "JPEG", quality=90, restart_marker_blocks=4)
    first = re.search(rb"\xff[\xd0-\xd7]", source)
    assert first is not None
    hidden = source[: first.start()] + PAYLOAD + source[first.start() :]
    result = veilpix.sanitize(hidden)
    _clean(result, PAYLOAD)
    assert (_pixels(result.data) == _pixels(source)).all()


@needs_turbojpeg
def test_jpeg_bytes_between_progressive_scans_are_removed() -> None:
    source = encode(_noise(), "JPEG", quality=90, progressive=True)
    second_scan = source.index(b"\xff\xda", source.index(b"\xff\xda") + 2)
    at = source.rindex(b"\xff", 0, second_scan - 1)  # the table segment before the 2nd scan
    hidden = source[:at] + PAYLOAD + source[at:]
    result = veilpix.sanitize(hidden)
    _clean(result, PAYLOAD)
    assert scan_jpeg(result.data).extra["scans"] == 1  # re-coded as one sequential scan
    assert (_pixels(result.data) == _pixels(source)).all()


@needs_turbojpeg
def test_jpeg_clean_coded_data_is_kept_bit_for_bit() -> None:
    source = encode(_noise(), "JPEG", quality=90)
    result = veilpix.sanitize(source)
    body = source[source.index(b"\xff\xda") :]
    assert result.data.endswith(body)
    assert not any(n.startswith(("removed: ", "repaired: ")) for n in result.report.notes)


@needs_turbojpeg
def test_jpeg_damaged_coded_data_is_repaired_and_said() -> None:
    source = encode(_noise((128, 96)), "JPEG", quality=90, restart_marker_blocks=4)
    rst = re.search(rb"\xff\xd1", source)  # the second restart marker
    assert rst is not None
    damaged = source[: rst.start()] + b"\xff\xd5" + source[rst.end() :]  # out of sequence
    result = veilpix.sanitize(damaged)
    _pixels(result.data)
    assert any(n.startswith("repaired: ") for n in result.report.notes), result.report.notes
    assert (
        _turbojpeg.entropy_proof(
            result.data,
            (128, 96),
            3,
            coded_end=scan_jpeg(result.data).extra["coded_end"],
        )
        is None
    )


def test_jpeg_without_libturbojpeg_is_re_encoded_not_copied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the library the coded data cannot be proved: the pixels are re-encoded."""
    monkeypatch.setattr(_turbojpeg, "_load", lambda: None)
    source = _before_eoi(encode(_noise(), "JPEG", quality=90), PAYLOAD)
    result = veilpix.sanitize(source)
    _clean(result, PAYLOAD)
    assert not result.report.lossless
    assert any("libjpeg-turbo" in n for n in result.report.notes), result.report.notes


@needs_turbojpeg
def test_jpeg_proof_of_veilpix_outputs() -> None:
    """Every lossless JPEG output passes the proof on its own (the verification re-scan)."""
    for progressive in (False, True):
        source = encode(picture((80, 48)), "JPEG", quality=80, progressive=progressive)
        out = veilpix.sanitize(source).data
        scan = scan_jpeg(out)
        assert scan.extra["scans"] == 1
        assert _turbojpeg.entropy_proof(out, (80, 48), 3, coded_end=scan.extra["coded_end"]) is None
        struct.unpack(">H", out[-2:])  # ends in EOI
        assert out.endswith(b"\xff\xd9")


# --------------------------------------------------------------------------- PNG


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, p = [], 8
    while p < len(data):
        (n,) = struct.unpack_from(">I", data, p)
        out.append((data[p + 4 : p + 8], data[p + 8 : p + 8 + n]))
        p += 12 + n
    return out


def _build(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(k, b) for k, b in chunks)


def _with_idat(data: bytes, *idats: bytes) -> bytes:
    """``data`` with its IDAT chunks replaced by ``idats``."""
    chunks = _chunks(data)
    at = next(i for i, (k, _b) in enumerate(chunks) if k == b"IDAT")
    rest = [c for c in chunks if c[0] != b"IDAT"]
    return _build(rest[:at] + [(b"IDAT", x) for x in idats] + rest[at:])


def _idat(data: bytes) -> bytes:
    return b"".join(b for k, b in _chunks(data) if k == b"IDAT")


def _png_source(**save: object) -> bytes:
    return encode(_noise((48, 32)), "PNG", **save)


@pytest.mark.parametrize("interlace", [False, True], ids=["plain", "interlaced"])
def test_png_bytes_after_the_zlib_stream_are_removed(interlace: bool) -> None:
    source = _png_source(optimize=False) if not interlace else _adam7()
    hidden = _with_idat(source, _idat(source) + PAYLOAD)
    result = veilpix.sanitize(hidden)
    _clean(result, PAYLOAD)
    assert result.report.lossless
    assert (_pixels(result.data) == _pixels(source)).all()
    assert any("after the end of the compressed stream" in r.detail for r in result.report.removed)


def _adam7() -> bytes:
    """An interlaced PNG (Pillow cannot write one): the rows of each Adam7 pass, unfiltered."""
    pixels = np.asarray(_noise((13, 11)))
    rows = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                           (1, 0, 2, 2), (0, 1, 1, 2)):  # fmt: skip
        part = pixels[y0::dy, x0::dx]
        if part.size:
            rows += b"".join(b"\x00" + row.tobytes() for row in part)
    ihdr = struct.pack(">IIBBBBB", 13, 11, 8, 2, 0, 0, 1)
    return _build([(b"IHDR", ihdr), (b"IDAT", zlib.compress(rows)), (b"IEND", b"")])


def test_png_an_idat_after_the_end_of_the_stream_is_removed() -> None:
    source = _png_source()
    result = veilpix.sanitize(_with_idat(source, _idat(source), PAYLOAD))
    _clean(result, PAYLOAD)
    assert result.report.lossless
    assert (_pixels(result.data) == _pixels(source)).all()


def test_png_a_stream_longer_than_its_rows_takes_the_pixel_path() -> None:
    source = _png_source()
    rows = zlib.decompress(_idat(source)) + b"\x00" + PAYLOAD
    result = veilpix.sanitize(_with_idat(source, zlib.compress(rows)))
    _clean(result, PAYLOAD)
    assert not result.report.lossless
    assert (_pixels(result.data) == _pixels(source)).all()
    assert any("more data than its rows" in n for n in result.report.notes), result.report.notes


def test_png_a_jpeg_in_the_first_idat_is_never_handed_out() -> None:
    jpeg = encode(picture(), "JPEG", exif=b"Exif\x00\x00" + exif_tiff())
    source = _png_source()
    with pytest.raises(veilpix.CorruptImage):
        veilpix.sanitize(_with_idat(source, jpeg, _idat(source)))


def test_png_palette_keeps_only_the_colours_used() -> None:
    im = picture((40, 30)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    source = encode(im, "PNG")
    chunks = _chunks(source)
    plte = next(b for k, b in chunks if k == b"PLTE")
    used = len(plte) // 3
    padded = plte + PAYLOAD.ljust(3 * ((len(PAYLOAD) + 2) // 3), b"!")
    hidden = _build([(k, padded if k == b"PLTE" else b) for k, b in chunks])
    result = veilpix.sanitize(hidden)
    _clean(result, PAYLOAD[:6], PAYLOAD[-6:])
    assert result.report.lossless
    out_plte = next(b for k, b in _chunks(result.data) if k == b"PLTE")
    assert len(out_plte) <= 3 * used
    assert (_pixels(result.data) == _pixels(source)).all()


def test_png_histogram_and_suggested_palette_are_dropped() -> None:
    source = _png_source()
    chunks = _chunks(source)
    extra = [(b"PLTE", PAYLOAD[:30]), (b"hIST", PAYLOAD[:20])]
    hidden = _build(chunks[:1] + extra + chunks[1:])
    result = veilpix.sanitize(hidden)
    _clean(result, PAYLOAD[:20])
    kinds = [k for k, _b in _chunks(result.data)]
    assert b"hIST" not in kinds and b"PLTE" not in kinds


def test_apng_bytes_after_a_frame_stream_are_removed() -> None:
    frames = [_noise((32, 24), seed=i) for i in range(3)]
    source = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50)
    chunks = _chunks(source)
    last_fdat = max(i for i, (k, _b) in enumerate(chunks) if k == b"fdAT")
    chunks[last_fdat] = (b"fdAT", chunks[last_fdat][1] + PAYLOAD)
    result = veilpix.sanitize(_build(chunks))
    _clean(result, PAYLOAD)
    assert result.report.lossless
    with Image.open(io.BytesIO(result.data)) as out, Image.open(io.BytesIO(source)) as src:
        assert out.n_frames == src.n_frames == 3
        for i in range(3):
            out.seek(i)
            src.seek(i)
            assert (np.asarray(out.convert("RGB")) == np.asarray(src.convert("RGB"))).all()
