"""Every EXIF orientation (1-8), in every container that carries one, comes out upright."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

import factories as F
import veilpix
from veilpix.image import _turbojpeg

UPRIGHT = F.picture((64, 48))
TRANSFORMS = [None, *Image.Transpose]


def _diff(a: Image.Image, b: Image.Image) -> float:
    if a.size != b.size:
        return float("inf")
    x = np.asarray(a.convert("RGB"), dtype=np.int16)
    y = np.asarray(b.convert("RGB"), dtype=np.int16)
    return float(np.abs(x - y).mean())


def assert_upright(data: bytes, tolerance: float) -> None:
    with Image.open(io.BytesIO(data)) as im:
        got = im.convert("RGB")
    as_is = _diff(got, UPRIGHT)
    assert as_is < tolerance, f"output differs from the upright picture by {as_is:.1f}"
    for op in Image.Transpose:  # no other flip/rotation may match better
        assert _diff(got.transpose(op), UPRIGHT) > as_is


MAKERS: dict[str, tuple[Callable[[int], bytes], float]] = {
    "jpeg-exif": (lambda o: F.jpeg(upright=UPRIGHT, orientation=o, quality=95), 6.0),
    "png-exif": (lambda o: F.png(im=UPRIGHT, orientation=o), 0.01),
    "png-xmp": (lambda o: F.png(im=UPRIGHT, exif=False, xmp_gps=False, xmp_orientation=o), 0.01),
    "webp-exif": (lambda o: F.webp(im=UPRIGHT, orientation=o, lossless=True), 0.01),
    "tiff-tag": (lambda o: F.tiff(orientation=o, pages=1), 0.01),
}


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("maker", sorted(MAKERS))
def test_orientation_is_applied_to_the_pixels(maker: str, orientation: int) -> None:
    make, tolerance = MAKERS[maker]
    data = make(orientation)
    out = veilpix.sanitize(data)
    assert out.report.orientation == orientation
    turned_losslessly = maker == "jpeg-exif" and _turbojpeg.available()
    stripped = orientation == 1 and not maker.startswith("webp")  # WebP is always re-encoded
    assert out.report.lossless == (stripped or turned_losslessly)
    assert (out.report.width_out, out.report.height_out) == UPRIGHT.size
    assert_upright(out.data, tolerance)
    assert veilpix.inspect(out.data).orientation == 1


def test_exif_orientation_wins_over_xmp() -> None:
    # Pillow's rule: EXIF first, XMP tiff:Orientation only when EXIF has none
    stored = F.stored_for(UPRIGHT, 6)
    exif = F.exif_tiff(orientation=6, thumbnail=False)
    data = F.encode(stored, "PNG", exif=b"Exif\x00\x00" + exif, pnginfo=None)
    xmp = F.png_chunk(
        b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + F.xmp_packet(gps=False, orientation=3)
    )
    data = data[:-12] + xmp + data[-12:]
    out = veilpix.sanitize(data)
    assert out.report.orientation == 6
    assert_upright(out.data, 0.01)


def test_invalid_orientation_values_are_ignored() -> None:
    for bad in (0, 9, 300):
        data = F.jpeg(
            upright=UPRIGHT, exif=False, xmp=False, iptc=False, comment=False, vendor=False
        )
        exif = bytearray(F.exif_tiff(orientation=1, gps=None, thumbnail=False, makernote=False))
        at = bytes(exif).find(b"\x01\x12\x00\x03")  # big-endian Orientation SHORT entry
        assert at > 0
        exif[at + 8 : at + 10] = bad.to_bytes(2, "big")
        data = (
            data[:2]
            + b"\xff\xe1"
            + (len(exif) + 8).to_bytes(2, "big")
            + b"Exif\x00\x00"
            + bytes(exif)
            + data[2:]
        )
        out = veilpix.sanitize(data)
        assert out.report.orientation == 1 and out.report.lossless


@pytest.mark.parametrize("orientation", range(2, 9))
def test_jpeg_turns_by_reencoding_without_libturbojpeg(
    orientation: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_turbojpeg, "transform", lambda jpeg, o: None)
    out = veilpix.sanitize(F.jpeg(upright=UPRIGHT, orientation=orientation, quality=95))
    assert not out.report.lossless
    assert any("input's quality (≈95) with standard tables" in n for n in out.report.notes)
    assert_upright(out.data, 6.0)


@pytest.mark.skipif(not _turbojpeg.available(), reason="libturbojpeg is not installed")
@pytest.mark.parametrize("orientation", range(2, 9))
def test_lossless_jpeg_turn_matches_the_reencoded_picture(
    orientation: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = F.jpeg(
        upright=F.picture((96, 64)), orientation=orientation, quality=95, cmyk=orientation == 6
    )
    turned = veilpix.sanitize(data)
    assert turned.report.lossless and "turned losslessly" in " ".join(turned.report.notes)
    assert veilpix.inspect(turned.data).findings == ()
    monkeypatch.setattr(_turbojpeg, "transform", lambda jpeg, o: None)
    reencoded = veilpix.sanitize(data)
    with Image.open(io.BytesIO(turned.data)) as a, Image.open(io.BytesIO(reencoded.data)) as b:
        assert a.size == b.size == (96, 64)
        assert _diff(a, b) < 2.0


def test_jpeg_with_partial_blocks_falls_back_to_reencoding() -> None:
    # 61x47 is not a whole number of 16x16 blocks: no perfect lossless turn exists
    out = veilpix.sanitize(F.jpeg(upright=F.picture((61, 47)), orientation=6))
    assert not out.report.lossless
    assert (out.report.width_out, out.report.height_out) == (61, 47)


@pytest.mark.skipif(not _turbojpeg.available(), reason="libturbojpeg is not installed")
@pytest.mark.parametrize("size", [(64, 48), (61, 48), (64, 47), (61, 47), (72, 40)])
@pytest.mark.parametrize("subsampling", [0, 1, 2])  # 4:4:4, 4:2:2, 4:2:0
def test_perfect_turn_prediction_agrees_with_libjpeg_turbo(
    size: tuple[int, int], subsampling: int
) -> None:
    from veilpix.formats._jpeg import scan_jpeg

    data = F.encode(F.picture(size), "JPEG", subsampling=subsampling)
    mcu = scan_jpeg(data).extra["mcu"]
    for orientation in range(2, 9):
        predicted = _turbojpeg.perfect(orientation, size, mcu)
        actual = _turbojpeg.transform(data, orientation) is not None
        assert predicted == actual, (orientation, size, subsampling)
