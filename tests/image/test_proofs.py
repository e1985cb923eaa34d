"""Structure only, proved: every byte a lossless strip keeps is structure that veilpix rebuilt
or compressed image data whose extent the codec proves. Each test hides a payload in a place a
strip used to keep (a text with a GPS position and a name, or a whole EXIF block) and checks
that the output does not carry it, still decodes, and says what was removed."""

from __future__ import annotations

import contextlib
import io
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import factories as F
import veilpix
from factories import (
    encode,
    exif_tiff,
    noise,
    picture,
    png_chunk,
    png_chunks,
    rgb_rows,
    rgb_tags,
    riff_chunk,
    tiff_file,
)
from veilpix.formats._jpeg import scan_jpeg
from veilpix.image import _turbojpeg

PAYLOAD = b"GPS 52.5163N 13.3777E Jane Doe, Invalidenstr. 7"
needs_turbojpeg = pytest.mark.skipif(
    not _turbojpeg.available(), reason="libturbojpeg is not installed"
)


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
    source = encode(noise(), "JPEG", quality=90, progressive=progressive)
    result = veilpix.sanitize(_before_eoi(source, hidden))
    _clean(result, PAYLOAD[:12], b"Exif\x00\x00", b"Jane Doe")
    assert result.report.lossless  # the coefficients are kept: same pixels as the source
    assert (_pixels(result.data) == _pixels(source)).all()
    assert any(n.startswith("removed: ") for n in result.report.notes), result.report.notes


@needs_turbojpeg
@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9])
def test_jpeg_a_few_hidden_bytes_are_found_too(size: int) -> None:
    """libjpeg's bit reader loads up to 7 bytes ahead: those are proved by the cut decode."""
    source = encode(noise((64, 48), seed=size), "JPEG", quality=85)
    hidden = bytes(range(0x41, 0x41 + size))
    result = veilpix.sanitize(_before_eoi(source, hidden))
    assert any(n.startswith("removed: ") for n in result.report.notes), result.report.notes
    assert not result.data[:-2].endswith(hidden)
    assert (_pixels(result.data) == _pixels(source)).all()


@needs_turbojpeg
def test_jpeg_bytes_before_a_restart_marker_are_removed() -> None:
    source = encode(noise(), "JPEG", quality=90, restart_marker_blocks=4)
    first = re.search(rb"\xff[\xd0-\xd7]", source)
    assert first is not None
    hidden = source[: first.start()] + PAYLOAD + source[first.start() :]
    result = veilpix.sanitize(hidden)
    _clean(result, PAYLOAD)
    assert (_pixels(result.data) == _pixels(source)).all()


@needs_turbojpeg
def test_jpeg_bytes_between_progressive_scans_are_removed() -> None:
    source = encode(noise(), "JPEG", quality=90, progressive=True)
    second_scan = source.index(b"\xff\xda", source.index(b"\xff\xda") + 2)
    at = source.rindex(b"\xff", 0, second_scan - 1)  # the table segment before the 2nd scan
    hidden = source[:at] + PAYLOAD + source[at:]
    result = veilpix.sanitize(hidden)
    _clean(result, PAYLOAD)
    assert scan_jpeg(result.data).extra["scans"] == 1  # re-coded as one sequential scan
    assert (_pixels(result.data) == _pixels(source)).all()


@needs_turbojpeg
def test_jpeg_clean_coded_data_is_kept_bit_for_bit() -> None:
    source = encode(noise(), "JPEG", quality=90)
    result = veilpix.sanitize(source)
    body = source[source.index(b"\xff\xda") :]
    assert result.data.endswith(body)
    assert not any(n.startswith(("removed: ", "repaired: ")) for n in result.report.notes)


@needs_turbojpeg
def test_jpeg_damaged_coded_data_is_repaired_and_said() -> None:
    source = encode(noise((128, 96)), "JPEG", quality=90, restart_marker_blocks=4)
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
    source = _before_eoi(encode(noise(), "JPEG", quality=90), PAYLOAD)
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


def _build(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(k, b) for k, b in chunks)


def _with_idat(data: bytes, *idats: bytes) -> bytes:
    """``data`` with its IDAT chunks replaced by ``idats``."""
    chunks = png_chunks(data)
    at = next(i for i, (k, _b) in enumerate(chunks) if k == b"IDAT")
    rest = [c for c in chunks if c[0] != b"IDAT"]
    return _build(rest[:at] + [(b"IDAT", x) for x in idats] + rest[at:])


def _idat(data: bytes) -> bytes:
    return b"".join(b for k, b in png_chunks(data) if k == b"IDAT")


def _png_source(**save: object) -> bytes:
    return encode(noise((48, 32)), "PNG", **save)


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
    pixels = np.asarray(noise((13, 11)))
    rows = b""
    for x0, y0, dx, dy in (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ):
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
    chunks = png_chunks(source)
    plte = next(b for k, b in chunks if k == b"PLTE")
    used = len(plte) // 3
    padded = plte + PAYLOAD.ljust(3 * ((len(PAYLOAD) + 2) // 3), b"!")
    hidden = _build([(k, padded if k == b"PLTE" else b) for k, b in chunks])
    result = veilpix.sanitize(hidden)
    _clean(result, PAYLOAD[:6], PAYLOAD[-6:])
    assert result.report.lossless
    out_plte = next(b for k, b in png_chunks(result.data) if k == b"PLTE")
    assert len(out_plte) <= 3 * used
    assert (_pixels(result.data) == _pixels(source)).all()


def test_png_histogram_and_suggested_palette_are_dropped() -> None:
    source = _png_source()
    chunks = png_chunks(source)
    extra = [(b"PLTE", PAYLOAD[:30]), (b"hIST", PAYLOAD[:20])]
    hidden = _build(chunks[:1] + extra + chunks[1:])
    result = veilpix.sanitize(hidden)
    _clean(result, PAYLOAD[:20])
    kinds = [k for k, _b in png_chunks(result.data)]
    assert b"hIST" not in kinds and b"PLTE" not in kinds


def test_apng_bytes_after_a_frame_stream_are_removed() -> None:
    frames = [noise((32, 24), seed=i) for i in range(3)]
    source = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50)
    chunks = png_chunks(source)
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


# --------------------------------------------------------------------------- GIF


def _gif_source(frames: int = 1) -> bytes:
    seq = [noise((40, 30), seed=i).convert("P", palette=Image.Palette.ADAPTIVE) for i in range(3)]
    return encode(
        seq[0],
        "GIF",
        save_all=frames > 1,
        append_images=seq[1:frames],
        duration=60,
        interlace=False,
    )


def _gif_images(data: bytes) -> list[tuple[int, int, int]]:
    """(block start, LZW size byte offset, end) of each image block, via veilpix's scanner."""
    from veilpix.formats._gif import scan_gif

    out = []
    for part in scan_gif(data).parts:
        if part.name == "image":
            p = part.offset
            flags = data[p + 9]
            q = p + 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)
            out.append((p, q, part.offset + part.length))
    return out


def _lzw_of(data: bytes, q: int, end: int) -> bytes:
    out, p = b"", q + 1
    while data[p]:
        out += data[p + 1 : p + 1 + data[p]]
        p += 1 + data[p]
    return out


@pytest.mark.parametrize("frames", [1, 3])
def test_gif_sub_blocks_after_the_end_code_are_removed(frames: int) -> None:
    source = _gif_source(frames)
    _start, _q, end = _gif_images(source)[-1]
    hidden = source[: end - 1] + bytes((len(PAYLOAD),)) + PAYLOAD + source[end - 1 :]
    result = veilpix.sanitize(hidden)
    _clean(result, PAYLOAD)
    assert result.report.lossless
    with Image.open(io.BytesIO(result.data)) as out, Image.open(io.BytesIO(source)) as src:
        assert out.n_frames == frames
        for i in range(frames):
            out.seek(i)
            src.seek(i)
            assert (np.asarray(out.convert("RGB")) == np.asarray(src.convert("RGB"))).all()


def test_gif_sub_block_sizes_are_written_canonically() -> None:
    """Sub-block lengths are free for a writer (a channel): veilpix writes 255-byte blocks."""
    source = _gif_source()
    _start, q, end = _gif_images(source)[0]
    lzw = _lzw_of(source, q, end)
    tiny = b"".join(b"\x01" + lzw[i : i + 1] for i in range(len(lzw))) + b"\x00"
    result = veilpix.sanitize(source[: q + 1] + tiny + source[end:])
    _start, q2, _end2 = _gif_images(result.data)[0]
    assert result.data[q2 + 1] == min(255, len(lzw))
    assert (_pixels(result.data) == _pixels(source)).all()


def test_gif_codes_beyond_the_frame_take_the_pixel_path() -> None:
    """Extra pixels coded before the end code: no decoder shows them, so they could carry a
    payload; the frame is re-encoded from what a decoder shows."""
    from veilpix.formats._gif import lzw_extent

    source = _gif_source()
    _start, q, end = _gif_images(source)[0]
    min_size = source[q]
    # re-code the frame with 200 more pixels (index 1) before the end code
    with Image.open(io.BytesIO(source)) as im:
        indices = np.asarray(im).tobytes() + b"\x01" * 200
    longer = _lzw_plain(indices, min_size)
    assert lzw_extent(longer, min_size)[:2] == (len(longer), 40 * 30 + 200)  # type: ignore[index]
    blocks = b"".join(
        bytes((len(longer[i : i + 255]),)) + longer[i : i + 255] for i in range(0, len(longer), 255)
    )
    result = veilpix.sanitize(source[: q + 1] + blocks + b"\x00" + source[end:])
    assert not result.report.lossless
    assert any("more pixels than its frame" in n for n in result.report.notes)
    assert (_pixels(result.data) == _pixels(source)).all()


def _lzw_plain(indices: bytes, min_size: int) -> bytes:
    """A valid GIF LZW stream that codes each index alone, clearing before the table grows."""
    clear, end = 1 << min_size, (1 << min_size) + 1
    size = min_size + 1
    codes: list[int] = [clear]
    for i, value in enumerate(indices):
        if i and i % ((1 << size) - end - 2) == 0:
            codes.append(clear)
        codes.append(value)
    codes.append(end)
    bits = 0
    nbits = 0
    out = bytearray()
    for code in codes:
        bits |= code << nbits
        nbits += size
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        out.append(bits & 0xFF)
    return bytes(out)


# --------------------------------------------------------------------------- TIFF


@pytest.mark.parametrize(
    ("tag", "lie"),
    [
        (258, (3, 3 + 16, struct.pack("<19H", 8, 8, 8, *PAYLOAD[:16]))),  # BitsPerSample count
        (282, (2, len(PAYLOAD) + 1, PAYLOAD + b"\x00")),  # XResolution typed ASCII
        (296, (2, len(PAYLOAD) + 1, PAYLOAD + b"\x00")),  # ResolutionUnit typed ASCII
    ],
    ids=["bits-per-sample-count", "xresolution-ascii", "resolution-unit-ascii"],
)
def test_tiff_tags_are_written_at_their_canonical_type_and_count(
    tag: int, lie: tuple[int, int, bytes]
) -> None:
    rows = rgb_rows()
    tags = rgb_tags(24, 16)
    tags[tag] = lie
    result = veilpix.sanitize(tiff_file(tags, rows))
    _clean(result, PAYLOAD[:8], bytes(PAYLOAD[:8]).decode().encode("utf-16-le")[:8])
    assert result.report.lossless
    assert np.asarray(Image.open(io.BytesIO(result.data))).tobytes() == rows


@pytest.mark.parametrize("compression", [8, 5], ids=["deflate", "lzw"])
def test_tiff_bytes_after_a_compressed_strip_are_removed(compression: int) -> None:
    rows = rgb_rows()
    plain = encode(
        Image.frombytes("RGB", (24, 16), rows),
        "TIFF",
        compression="tiff_adobe_deflate" if compression == 8 else "tiff_lzw",
    )
    with Image.open(io.BytesIO(plain)) as im:
        offsets, counts = im.tag_v2[273], im.tag_v2[279]
    strip = b"".join(plain[o : o + c] for o, c in zip(offsets, counts, strict=True))
    tags = rgb_tags(24, 16, compression)
    result = veilpix.sanitize(tiff_file(tags, strip + PAYLOAD))
    _clean(result, PAYLOAD)
    assert result.report.lossless
    assert np.asarray(Image.open(io.BytesIO(result.data))).tobytes() == rows


def test_tiff_a_strip_coding_more_than_its_rows_takes_the_pixel_path() -> None:
    rows = rgb_rows()
    tags = rgb_tags(24, 16, 8)
    result = veilpix.sanitize(tiff_file(tags, zlib.compress(rows + PAYLOAD)))
    _clean(result, PAYLOAD)
    assert not result.report.lossless
    assert np.asarray(Image.open(io.BytesIO(result.data))).tobytes() == rows


def test_dng_is_refused_not_replaced_by_its_preview() -> None:
    tags = rgb_tags(8, 8)
    tags[254] = (4, 1, struct.pack("<I", 1))  # IFD0: a reduced-resolution preview
    tags[50706] = (1, 4, bytes((1, 4, 0, 0)))  # DNGVersion
    with pytest.raises(veilpix.UnsupportedImage, match="DNG"):
        veilpix.sanitize(tiff_file(tags, bytes(8 * 8 * 3)))


def test_a_preview_in_ifd0_with_the_image_in_a_subifd_is_refused() -> None:
    tags = rgb_tags(8, 8)
    tags[254] = (4, 1, struct.pack("<I", 1))
    tags[330] = (4, 1, struct.pack("<I", 8))  # SubIFDs (pointing anywhere: never followed)
    with pytest.raises(veilpix.UnsupportedImage, match="SubIFD"):
        veilpix.sanitize(tiff_file(tags, bytes(8 * 8 * 3)))


# --------------------------------------------------------------------------- WebP


def _riff(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"WEBP" + b"".join(riff_chunk(k, b) for k, b in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, p = [], 12
    while p < len(data):
        (n,) = struct.unpack_from("<I", data, p + 4)
        out.append((data[p : p + 4], data[p + 8 : p + 8 + n]))
        p += 8 + n + (n & 1)
    return out


@pytest.mark.parametrize("lossless", [False, True], ids=["vp8", "vp8l"])
def test_webp_bytes_after_the_bitstream_are_not_carried(lossless: bool) -> None:
    source = encode(noise((48, 32)), "WEBP", lossless=lossless, quality=90)
    chunks = _riff_chunks(source)
    kind, body = chunks[-1]
    result = veilpix.sanitize(_riff([*chunks[:-1], (kind, body + PAYLOAD)]))
    _clean(result, PAYLOAD)
    if lossless:
        assert (_pixels(result.data) == _pixels(source)).all()


def test_webp_a_second_bitstream_holding_a_jpeg_is_not_carried() -> None:
    source = encode(noise((48, 32)), "WEBP", quality=90)
    jpeg = encode(picture(), "JPEG", exif=b"Exif\x00\x00" + exif_tiff())
    hidden = _riff([*_riff_chunks(source), (b"VP8 ", jpeg)])
    assert any(p.detail == "a second image bitstream" for p in veilpix.inspect(hidden).containers)
    result = veilpix.sanitize(hidden)
    _clean(result, b"Exif\x00\x00", b"\xff\xd8\xff")


# --------------------------------------------------------------------------- repairs


def _repaired(data: bytes) -> veilpix.SanitizedImage:
    result = veilpix.sanitize(data)
    assert any(n.startswith("repaired: ") for n in result.report.notes), result.report.notes
    _clean(result, PAYLOAD)
    return result


def test_repair_a_gif_whose_last_sub_blocks_run_past_the_end() -> None:
    source = _gif_source()
    _start, _q, end = _gif_images(source)[0]
    cut = source[: end - 1] + b"\xff" + PAYLOAD  # terminator replaced by a block that runs off
    with pytest.raises(veilpix.CorruptImage):
        from veilpix.formats._gif import scan_gif

        scan_gif(cut)
    result = _repaired(cut)
    assert (_pixels(result.data) == _pixels(source)).all()


def test_repair_a_jpeg_with_a_zero_length_segment() -> None:
    source = encode(noise(), "JPEG", quality=90)
    broken = source[:2] + b"\xff\xe5\x00\x00" + source[2:]
    result = _repaired(broken)
    assert result.report.format_out == "JPEG"


def test_repair_a_tiff_with_too_many_entries_in_one_ifd() -> None:
    rows = rgb_rows(8, 8)
    tags = rgb_tags(8, 8)
    for i in range(5000):  # private tags nobody reads: Pillow skips them, the scanner refuses
        tags[40000 + i] = (3, 1, struct.pack("<H", i))
    result = _repaired(tiff_file(tags, rows))
    assert np.asarray(Image.open(io.BytesIO(result.data))).tobytes() == rows


def test_a_truncated_file_is_still_refused_not_repaired() -> None:
    source = encode(noise(), "JPEG", quality=90)
    with pytest.raises(veilpix.CorruptImage):
        veilpix.sanitize(source[: len(source) // 2])


def test_a_big_colour_profile_in_a_png_is_read_not_called_damage() -> None:
    from PIL import ImageCms

    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile += bytes(1_150_000)
    profile[0:4] = struct.pack(">I", len(profile))
    source = _png_source()
    chunks = png_chunks(source)
    iccp = (b"iCCP", b"big\x00\x00" + zlib.compress(bytes(profile)))
    result = veilpix.sanitize(_build([chunks[0], iccp, *chunks[1:]]))
    _clean(result)
    assert result.report.icc.startswith("converted to sRGB"), result.report.icc


# --------------------------------------------------------------------------- HEIF messages


def test_heif_in_a_codec_the_decoder_lacks_says_so() -> None:
    pytest.importorskip("pillow_heif")
    source = F.heic()
    vvc = source.replace(b"hvc1", b"vvc1")  # every image item now claims VVC (H.266)
    with pytest.raises(veilpix.UnsupportedImage, match=r"VVC \(H\.266\).*cannot decode") as err:
        veilpix.sanitize(vvc)
    assert "damaged" not in str(err.value)


def test_a_newer_major_brand_compatible_with_heif_is_read_as_heif() -> None:
    pytest.importorskip("pillow_heif")
    source = F.heic()
    assert source[8:12] == b"heic"
    renamed = source[:8] + b"MiHE" + source[12:]  # an Apple-style major brand
    result = veilpix.sanitize(renamed)
    _clean(result)


def test_an_iso_bmff_file_that_is_no_image_is_named() -> None:
    box = struct.pack(">I", 20) + b"ftypcrx " + b"\x00\x00\x00\x01" + b"isom"
    with pytest.raises(veilpix.UnsupportedImage, match="brand 'crx '"):
        veilpix.sanitize(box + bytes(64))


# --------------------------------------------------------------------------- BigTIFF


@pytest.mark.parametrize("order", [">", "<"], ids=["big-endian", "little-endian"])
@pytest.mark.parametrize("orientation", [1, 6])
def test_bigtiff_in_either_byte_order_is_sanitized(order: str, orientation: int) -> None:
    tifffile = pytest.importorskip("tifffile")
    pixels = np.asarray(noise((40, 24)))
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        pixels,
        bigtiff=True,
        byteorder=order,
        photometric="rgb",
        compression="zlib",
        extratags=[(274, "H", 1, orientation, True), (315, "s", 0, "Jane Doe", True)],
    )
    result = veilpix.sanitize(buf.getvalue())
    _clean(result, b"Jane Doe")
    assert result.report.lossless == (orientation == 1)
    expected = pixels if orientation == 1 else np.rot90(pixels, -1)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(result.data))), expected)


# --------------------------------------------------------------------------- the re-scan


def _hiding_places() -> dict[str, tuple[str, bytes]]:
    """Each class of hiding place, as if a strip had let it through into an output."""
    jpeg = encode(noise(), "JPEG", quality=90)
    png = _png_source()
    gif = _gif_source()
    _s, _q, gif_end = _gif_images(gif)[0]
    rows = rgb_rows()
    tiff_tags = rgb_tags(24, 16)
    tiff_tags[282] = (2, len(PAYLOAD) + 1, PAYLOAD + b"\x00")
    webp = encode(noise((48, 32)), "WEBP", quality=90)
    webp_chunks = _riff_chunks(webp)
    vp8x = (b"VP8X", bytes(4) + (47).to_bytes(3, "little") + (31).to_bytes(3, "little"))
    return {
        "jpeg: bytes before EOI": ("JPEG", _before_eoi(jpeg, PAYLOAD)),
        "jpeg: a few bytes before EOI": ("JPEG", _before_eoi(jpeg, b"ID42")),
        "png: bytes after the zlib stream": ("PNG", _with_idat(png, _idat(png) + PAYLOAD)),
        "png: an IDAT after the stream": ("PNG", _with_idat(png, _idat(png), PAYLOAD)),
        "png: rows longer than the image": (
            "PNG",
            _with_idat(png, zlib.compress(zlib.decompress(_idat(png)) + PAYLOAD)),
        ),
        "gif: sub-blocks after the end code": (
            "GIF",
            gif[: gif_end - 1] + bytes((len(PAYLOAD),)) + PAYLOAD + gif[gif_end - 1 :],
        ),
        "tiff: a tag at a type it does not have": ("TIFF", tiff_file(tiff_tags, rows)),
        "tiff: bytes after a deflate strip": (
            "TIFF",
            tiff_file(rgb_tags(24, 16, 8), zlib.compress(rows) + PAYLOAD),
        ),
        "webp: a second bitstream": ("WEBP", _riff([vp8x, *webp_chunks, webp_chunks[-1]])),
    }


@pytest.mark.parametrize("name", list(_hiding_places()))
def test_the_verification_rescan_catches_each_hiding_place(name: str) -> None:
    """The proofs run on every output before it is handed out: had a strip let a hiding place
    through, the output would be refused (and the picture re-coded or re-encoded)."""
    from veilpix.formats._registry import scan_as
    from veilpix.image._lossless import verify

    fmt, out = _hiding_places()[name]
    if fmt == "JPEG" and not _turbojpeg.available():
        pytest.skip("libturbojpeg is not installed")
    scan = scan_as(out, fmt)
    with pytest.raises(veilpix.UnsafeOutput):
        verify(out, fmt, None, (scan.width, scan.height), decode=False, reencoded=False)


def test_a_preview_first_in_the_chain_is_dropped_not_kept_as_the_picture() -> None:
    """IFD0 a small preview, IFD1 the picture: the output is the picture."""
    tifffile = pytest.importorskip("tifffile")
    big = np.asarray(noise((40, 24)))
    small = big[::4, ::4].copy()
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tw:
        tw.write(small, photometric="rgb", subfiletype=1)  # reduced resolution
        tw.write(big, photometric="rgb")
    result = veilpix.sanitize(buf.getvalue())
    assert (result.report.width_out, result.report.height_out, result.report.frames_out) == (
        40,
        24,
        1,
    )
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(result.data))), big)


def test_a_tiff_of_previews_only_is_refused() -> None:
    tags = rgb_tags(8, 8)
    tags[254] = (4, 1, struct.pack("<I", 1))
    with pytest.raises(veilpix.UnsupportedImage, match="reduced-resolution preview"):
        veilpix.sanitize(tiff_file(tags, bytes(8 * 8 * 3)))


def test_quantization_table_values_are_not_copied_by_a_re_encode() -> None:
    """A writer can choose table values freely (a payload in the chroma table): the pixel
    path writes libjpeg's standard tables at the input's estimated quality."""
    text = PAYLOAD[:64].ljust(64, b".")
    luma = [max(1, min(255, v)) for v in range(2, 66)]
    source = encode(noise((61, 47)), "JPEG", qtables=[luma, list(text)], subsampling=0)
    at = source.index(b"\x01", source.index(b"\xff\xdb") + 4 + 65)  # table 1, zigzag order
    stored = source[at + 1 : at + 65]
    assert sorted(stored) == sorted(text)
    exif = b"Exif\x00\x00" + exif_tiff(orientation=3, gps=None, thumbnail=False, makernote=False)
    turned = source[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + source[2:]
    result = veilpix.sanitize(turned)  # 61x47: no lossless turn, so the pixels are re-encoded
    assert not result.report.lossless
    _clean(result, stored[:16], stored[16:32], stored[32:48], stored[48:])


def test_a_repaired_file_keeps_its_orientation_and_findings() -> None:
    source = F.jpeg(upright=picture((48, 32)), orientation=6)
    broken = source[:2] + b"\xff\xe5\x00\x00" + source[2:]  # a zero-length APP5
    result = _repaired(broken)
    assert result.report.orientation == 6
    assert (result.report.width_out, result.report.height_out) == (48, 32)
    assert result.report.gps is not None
    assert result.report.findings


@needs_turbojpeg
def test_an_arithmetic_coded_jpeg_is_re_coded_not_called_hidden_data() -> None:
    import shutil
    import subprocess

    jpegtran = shutil.which("jpegtran")
    if jpegtran is None:
        pytest.skip("jpegtran (libjpeg-turbo-progs) is not installed")
    source = encode(noise(), "JPEG", quality=90)
    arith = subprocess.run(
        [jpegtran, "-arithmetic"], input=source, capture_output=True, check=True, timeout=30
    ).stdout
    assert arith[arith.index(b"\xff\xc9") : arith.index(b"\xff\xc9") + 2] == b"\xff\xc9"
    result = veilpix.sanitize(arith)
    assert result.report.lossless
    assert any("arithmetic coding written as Huffman" in n for n in result.report.notes)
    assert not any(n.startswith("removed: ") for n in result.report.notes)
    assert (_pixels(result.data) == _pixels(source)).all()


def test_gif_clear_codes_in_a_row_are_not_copied() -> None:
    """Clear after clear codes nothing: a run of them is a channel (and slow to walk)."""
    source = _gif_source()
    _start, q, end = _gif_images(source)[0]
    min_size = source[q]
    with Image.open(io.BytesIO(source)) as im:
        indices = np.asarray(im).tobytes()
    lzw = _lzw_plain(indices, min_size)
    clear = 1 << min_size
    size = min_size + 1
    # prepend 40 extra clear codes, packed LSB-first like the rest
    bits = sum(clear << (size * i) for i in range(40))
    prefix = bits.to_bytes(40 * size // 8, "little")  # 40 * 9 bits = 45 whole bytes
    doubled = prefix + lzw
    blocks = b"".join(
        bytes((len(doubled[i : i + 255]),)) + doubled[i : i + 255]
        for i in range(0, len(doubled), 255)
    )
    result = veilpix.sanitize(source[: q + 1] + blocks + b"\x00" + source[end:])
    assert not result.report.lossless
    assert prefix not in result.data
    assert (_pixels(result.data) == _pixels(source)).all()


def _jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    out, p = [], 2
    while data[p + 1] != 0xDA:
        (n,) = struct.unpack_from(">H", data, p + 2)
        out.append((data[p + 1], data[p + 4 : p + 2 + n]))
        p += 2 + n
    return out


@needs_turbojpeg
def test_jpeg_tables_nobody_uses_and_repeated_segments_are_not_copied() -> None:
    source = encode(noise(), "JPEG", quality=90)
    unused_dqt = b"\x03" + PAYLOAD[:64].ljust(64, b"!")  # table id 3: no component uses it
    counts = bytes([0] * 15 + [len(PAYLOAD[:40])])
    unused_dht = b"\x13" + counts + PAYLOAD[:40]  # AC table 3: no scan uses it
    extra = (
        b"\xff\xdb"
        + struct.pack(">H", len(unused_dqt) + 2)
        + unused_dqt
        + b"\xff\xc4"
        + struct.pack(">H", len(unused_dht) + 2)
        + unused_dht
        + b"\xff\xdd\x00\x04\x00\x00" * 5  # DRI repeated (interval 0: none)
        + b"\xff\xcc\x00\x04\x12\x34"  # DAC in a Huffman-coded file
    )
    sof = source.index(b"\xff\xc0")
    result = veilpix.sanitize(source[:sof] + extra + source[sof:])
    _clean(result, PAYLOAD[:16], PAYLOAD[16:32], b"\x12\x34")
    assert result.report.lossless
    markers = [m for m, _b in _jpeg_segments(result.data)]
    assert markers.count(0xDB) == 1 and markers.count(0xC4) == 1 and 0xCC not in markers
    assert markers.count(0xDD) <= 1
    assert (_pixels(result.data) == _pixels(source)).all()


def test_jfif_and_adobe_markers_are_written_canonically() -> None:
    source = encode(noise(), "JPEG", quality=90, dpi=(4711, 815))
    adobe = b"Adobe\x00\x99" + b"ID" + b"42" + b"\x01"
    hidden = source[:20] + b"\xff\xee" + struct.pack(">H", len(adobe) + 2) + adobe + source[20:]
    result = veilpix.sanitize(hidden)
    segments = _jpeg_segments(result.data)
    assert dict(segments)[0xE0] == b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    assert 0xEE not in dict(segments)  # libjpeg ignores Adobe in a 3-component JFIF file
    # CMYK: one Adobe marker, the last, with the transform libjpeg acts on
    cmyk = encode(noise().convert("CMYK"), "JPEG", quality=90)
    soi = cmyk.index(b"\xff\xdb")  # after Pillow's own Adobe marker: these come last
    repeats = b"".join(
        b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00" + bytes((t,)) for t in (7, 9, 5)
    )
    out = veilpix.sanitize(cmyk[:soi] + repeats + cmyk[soi:]).data
    adobe = [b for m, b in _jpeg_segments(out) if m == 0xEE]
    assert adobe == [b"Adobe\x00\x64\x00\x00\x00\x00\x02"]  # 5: not 0, so YCCK (2)


def test_png_repeated_chunks_are_not_copied() -> None:
    source = _png_source()
    chunks = png_chunks(source)
    phys = [(b"pHYs", struct.pack(">IIB", 2835, 2835, 1))]
    repeats = [
        (b"pHYs", PAYLOAD[:9]),
        (b"gAMA", struct.pack(">I", 45455)),
        (b"gAMA", PAYLOAD[9:13]),
    ]
    second_ihdr = [(b"IHDR", chunks[0][1][:12] + b"\x01")]
    hidden = _build([chunks[0], *phys, *repeats, *chunks[1:-1], *second_ihdr, chunks[-1]])
    result = veilpix.sanitize(hidden)
    _clean(result, PAYLOAD[:9], PAYLOAD[9:13])
    kinds = [k for k, _b in png_chunks(result.data)]
    assert kinds.count(b"pHYs") == 1 and kinds.count(b"gAMA") == 1 and kinds.count(b"IHDR") == 1
    assert (_pixels(result.data) == _pixels(source)).all()


def test_png_with_an_impossible_bit_depth_is_refused() -> None:
    source = _png_source()
    chunks = png_chunks(source)
    w, h, _d, *rest = struct.unpack(">IIBBBBB", chunks[0][1])
    bad = _build([(b"IHDR", struct.pack(">IIBBBBB", w, h, 3, *rest)), *chunks[1:]])
    with pytest.raises(veilpix.CorruptImage, match="bit depth 3"):
        veilpix.sanitize(bad)


def test_apng_frames_that_do_not_add_up_are_not_stripped() -> None:
    frames = [noise((32, 24), seed=i) for i in range(3)]
    source = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50)
    chunks = png_chunks(source)
    actl = next(i for i, (k, _b) in enumerate(chunks) if k == b"acTL")
    chunks[actl] = (b"acTL", struct.pack(">II", 7, 0))  # claims 7 frames, holds 3
    try:
        result = veilpix.sanitize(_build(chunks))
    except veilpix.CorruptImage:
        return  # the decoder cannot read it either: refused, never handed out
    assert not result.report.lossless
    _pixels(result.data)


def _gif_with_tables(local: bool) -> tuple[bytes, bytes]:
    """A 4-colour picture in a GIF whose 256-entry colour table (global, or local to the
    frame) holds PAYLOAD in entries no pixel uses; returns (gif, the table as written)."""
    im = Image.new("P", (32, 16))
    im.putdata([(x // 8) % 4 for x in range(32)] * 16)
    palette = bytes([200, 10, 10, 10, 200, 10, 10, 10, 200, 250, 250, 0])
    palette += PAYLOAD.ljust(768 - len(palette), b"~")[: 768 - len(palette)]
    im.putpalette(palette)
    data = encode(im, "GIF", optimize=False, interlace=False)
    if not local:
        return data, palette
    # move the global table into the image descriptor
    flags = data[10]
    gct = data[13 : 13 + 768]
    head = data[:10] + bytes((flags & 0x70,)) + data[11:13]
    rest = data[13 + 768 :]
    at = rest.index(b"\x2c")
    desc = bytearray(rest[at : at + 10])
    desc[9] |= 0x80 | 7
    return head + rest[:at] + bytes(desc) + gct + rest[at + 10 :], palette


@pytest.mark.parametrize("local", [False, True], ids=["global", "local"])
def test_gif_colour_tables_keep_only_the_colours_used(local: bool) -> None:
    source, _palette = _gif_with_tables(local)
    assert PAYLOAD[:16] in source
    for result in (veilpix.sanitize(source), veilpix.sanitize(source, veilpix.Policy(max_side=16))):
        _clean(result, PAYLOAD[:8], PAYLOAD[-8:])
    result = veilpix.sanitize(source)
    assert result.report.lossless
    assert (_pixels(result.data) == _pixels(source)).all()


def test_gif_repeated_control_blocks_are_not_copied() -> None:
    source = _gif_source()
    at = source.index(b"\x21\xf9")
    gce = source[at : at + 8]
    spare = b"\x21\xf9\x04" + b"\xde\xad\xbe\xef" + b"\x00"
    loop2 = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x42\x42\x00"
    hidden = bytearray(source[:at] + loop2 + spare + loop2 + gce + source[at + 8 :])
    hidden[12] = 0x42  # the aspect ratio byte
    result = veilpix.sanitize(bytes(hidden))
    _clean(result, b"\xde\xad\xbe\xef")
    assert result.data[12] == 0
    assert result.data.count(b"\x21\xf9") == 1
    assert result.data.count(b"NETSCAPE2.0") == 1
    assert (_pixels(result.data) == _pixels(source)).all()


def test_tiff_tags_that_do_not_belong_to_the_page_are_not_copied() -> None:
    rows = rgb_rows()
    tags = rgb_tags(24, 16)
    colormap = PAYLOAD.ljust(3 * 256 * 2, b"#")[: 3 * 256 * 2]
    tags[320] = (3, 3 * 256, colormap)  # a colour map on an RGB page
    tags[297] = (3, 2, PAYLOAD[:4])  # PageNumber: advisory
    tags[319] = (5, 6, PAYLOAD[:48])  # PrimaryChromaticities: advisory
    result = veilpix.sanitize(tiff_file(tags, rows))
    _clean(result, PAYLOAD[:4], PAYLOAD[4:12], PAYLOAD[16:24])
    assert result.report.lossless
    assert np.asarray(Image.open(io.BytesIO(result.data))).tobytes() == rows


def test_a_palette_tiff_does_not_keep_its_colour_map() -> None:
    im = Image.new("P", (16, 8))
    im.putdata([x % 4 for x in range(16)] * 8)
    im.putpalette(bytes([250, 0, 0, 0, 250, 0, 0, 0, 250, 90, 90, 90]) + PAYLOAD * 10)
    source = encode(im, "TIFF")
    result = veilpix.sanitize(source)
    _clean(result, PAYLOAD[:8], PAYLOAD[-8:])
    assert np.array_equal(_pixels(result.data), _pixels(source))


def test_tiff_edge_tiles_do_not_carry_pixels_outside_the_picture() -> None:
    tifffile = pytest.importorskip("tifffile")
    pixels = np.asarray(noise((17, 17)))
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, photometric="rgb", tile=(16, 16))
    data = bytearray(buf.getvalue())
    with Image.open(io.BytesIO(bytes(data))) as im:
        offsets, _counts = im.tag_v2[324], im.tag_v2[325]
    # the last tile holds one visible pixel; write PAYLOAD into its invisible rest
    last = offsets[-1] + 3 * 16  # the second row of the last tile: outside the picture
    data[last : last + len(PAYLOAD)] = PAYLOAD
    result = veilpix.sanitize(bytes(data))
    _clean(result, PAYLOAD)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(result.data))), pixels)


def test_a_strip_that_does_not_decode_is_never_handed_out() -> None:
    """Structure every proof accepts but no decoder reads (RGB declared with one sample):
    the strip is decoded before it is handed out, by default."""
    tags = rgb_tags(24, 16)
    tags[277] = (3, 1, struct.pack("<H", 1))  # one sample per pixel, photometric still RGB
    tags[258] = (3, 1, struct.pack("<H", 8))
    data = tiff_file(tags, bytes(24 * 16))
    try:
        result = veilpix.sanitize(data)
    except veilpix.CorruptImage:
        return
    _pixels(result.data)  # if anything came out, it decodes


def test_the_two_lzw_walks_agree() -> None:
    """Long LZW data is walked a table segment at a time with numpy, short data code by code:
    both give the same extent, pixels and colours, on real streams (Pillow's GIF and TIFF
    writers), cut ones, ones with bytes after them, and noise."""
    from veilpix.formats._gif import _lzw_extent_codes, _lzw_extent_np

    rng = np.random.default_rng(7)
    cases: list[tuple[bytes, int, bool]] = []
    for i in range(24):
        w, h = (int(v) for v in rng.integers(1, 160, 2))
        pattern = [
            rng.integers(0, 256, (h, w)),
            np.zeros((h, w)),
            np.arange(w * h).reshape(h, w) // 5 % 7,
            rng.integers(0, 3, (h, w)),
        ][i % 4].astype(np.uint8)
        im = Image.fromarray(pattern, "P")
        im.putpalette(bytes(range(256)) * 3)
        gif = encode(im, "GIF", optimize=False, interlace=False)
        _s, q, end = _gif_images(gif)[0]
        lzw = _lzw_of(gif, q, end)
        noise = rng.integers(0, 256, int(rng.integers(5, 900)), dtype=np.uint8).tobytes()
        cases += [(lzw, gif[q], False), (lzw + b"xyz", gif[q], False), (lzw[:-3], gif[q], False)]
        cases.append((noise, gif[q], False))
        rgb = rng.integers(0, 256 if i % 2 else 4, (h, w, 3), dtype=np.uint8)
        tif = encode(Image.fromarray(rgb), "TIFF", compression="tiff_lzw")
        with Image.open(io.BytesIO(tif)) as t:
            strips = zip(t.tag_v2[273], t.tag_v2[279], strict=True)
            cases += [(tif[o : o + c], 8, True) for o, c in strips]
    for data, min_size, msb in cases:
        early = 1 if msb else 0
        codes = _lzw_extent_codes(data, min_size, msb=msb, early=early, max_segments=20_000)
        bulk = _lzw_extent_np(data, min_size, msb=msb, early=early, max_segments=20_000)
        assert codes == bulk, (len(data), min_size, msb)


def test_an_lzw_stream_of_clear_codes_is_bounded() -> None:
    """Clear, one literal, clear, ...: 200,000 tiny table segments are not walked to the end
    (each costs the bulk walk a fixed overhead); the stream takes the pixel path instead."""
    from veilpix.formats._gif import lzw_extent

    codes = [256, 5] * 200_000 + [257]
    acc = nbits = 0
    out = bytearray()
    for c in codes:
        acc |= c << nbits
        nbits += 9
        while nbits >= 8:
            out.append(acc & 255)
            acc >>= 8
            nbits -= 8
    assert lzw_extent(bytes(out), 8) is None  # after 20,000 segments, not 200,000


def test_jpeg_repeated_jfif_markers_and_a_restart_interval_that_never_restarts() -> None:
    source = encode(noise(), "JPEG", quality=90)
    jfifs = b"".join(
        b"\xff\xe0\x00\x10JFIF\x00\x01\x02\x00" + struct.pack(">HH", 2 * i + 3, 2) + b"\x00\x00"
        for i in range(8)
    )
    dri = b"\xff\xdd\x00\x04" + struct.pack(">H", 4711)  # more MCUs than the picture has
    sof = source.index(b"\xff\xc0")
    result = veilpix.sanitize(source[:2] + jfifs + source[2:sof] + dri + source[sof:])
    markers = [m for m, _b in _jpeg_segments(result.data)]
    assert markers.count(0xE0) == 1 and 0xDD not in markers
    assert (_pixels(result.data) == _pixels(source)).all()


def test_gif_transparent_indices_count_only_for_their_own_frame() -> None:
    """Each frame's graphic control names an index nobody draws: those entries are not kept
    (only the frame that uses a transparent index keeps it, in the table it reads)."""
    im = Image.new("P", (8, 8))
    im.putdata([i % 2 for i in range(64)])
    palette = bytes([255, 0, 0, 0, 0, 255]) + PAYLOAD.ljust(762, b"~")[:762]
    im.putpalette(palette)
    one = encode(im, "GIF", optimize=False, interlace=False)
    _s, _q, end = _gif_images(one)[0]
    desc = one[one.index(b"\x2c", 13 + 768) : end]
    frames = b"".join(
        b"\x21\xf9\x04" + bytes((0x01 | 0xE0, 5, 0, 200 + i)) + b"\x00" + desc for i in range(10)
    )  # transparency flag set, reserved bits set, index 200+i (drawn by nobody)
    source = one[: 13 + 768] + frames + b"\x3b"
    result = veilpix.sanitize(source)
    _clean(result, PAYLOAD[:6], PAYLOAD[24:30])
    for at in range(len(result.data)):
        if result.data[at : at + 3] == b"\x21\xf9\x04":
            assert result.data[at + 3] & 0xE0 == 0  # reserved bits cleared
    assert (_pixels(result.data) == _pixels(source)).all()


def test_png_palette_keeps_the_background_colour_and_survives_a_missing_palette() -> None:
    im = picture((40, 30)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    source = encode(im, "PNG")
    chunks = png_chunks(source)
    plte = next(b for k, b in chunks if k == b"PLTE")
    padded = plte + bytes(range(3 * 8))  # entries 4..11: unused
    with_bkgd = [(k, padded if k == b"PLTE" else b) for k, b in chunks]
    at = next(i for i, (k, _b) in enumerate(with_bkgd) if k == b"IDAT")
    with_bkgd.insert(at, (b"bKGD", b"\x09"))  # the background: entry 9
    out = veilpix.sanitize(_build(with_bkgd)).data
    out_plte = next(b for k, b in png_chunks(out) if k == b"PLTE")
    assert len(out_plte) == 30 and out_plte[27:30] == padded[27:30]  # 10 entries, 9 kept
    no_plte = [(k, b) for k, b in chunks if k != b"PLTE"]
    with contextlib.suppress(veilpix.VeilpixError):  # no palette to index: never a crash
        _pixels(veilpix.sanitize(_build(no_plte)).data)


def test_tiff_fields_that_say_nothing_are_not_copied() -> None:
    rows = rgb_rows()
    tags = rgb_tags(24, 16)
    tags[278] = (4, 1, struct.pack("<I", 4_000_000))  # RowsPerStrip far past the height
    tags[254] = (4, 1, struct.pack("<I", 0xABCD0000))  # NewSubfileType: undefined bits
    tags[255] = (3, 1, struct.pack("<H", 3))  # SubfileType: obsolete
    tags[317] = (3, 1, struct.pack("<H", 2))  # Predictor on an uncompressed page
    tags[296] = (3, 1, struct.pack("<H", 0x4242))  # ResolutionUnit out of range
    result = veilpix.sanitize(tiff_file(tags, rows))
    assert result.report.lossless
    with Image.open(io.BytesIO(result.data)) as out:
        got = dict(out.tag_v2)
        assert np.asarray(out).tobytes() == rows
    assert got[278] == 16
    assert not {254, 255, 317, 296} & set(got)
