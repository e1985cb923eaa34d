"""Every container veilpix reads, built synthetically with metadata in every place it can
hide: the output must be clean by exiftool, keep the picture, and the report must say what
was there."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

import factories as F
import veilpix

Case = Callable[[], bytes]


def pixels(data: bytes, frame: int = 0) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.seek(frame)
        return np.asarray(im.convert("RGBA"), dtype=np.int16)


def frame_count(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as im:
        return getattr(im, "n_frames", 1)


LOSSLESS_CASES: dict[str, Case] = {
    "jpeg": F.jpeg,
    "jpeg-progressive": lambda: F.jpeg(progressive=True),
    "jpeg-cmyk-adobe": lambda: F.jpeg(cmyk=True),
    "jpeg-srgb-icc": lambda: F.jpeg(icc=F.icc_profile("srgb")),
    "jpeg-trailer": lambda: F.jpeg(trailer=b"\x00\x00SEFHtrailer " + F.SERIAL.encode()),
    "png": F.png,
    "png-palette-trns": lambda: F.png(im=F.picture().convert("P"), transparency=3),
    "png-gray-alpha": lambda: F.png(im=F.picture(mode="RGBA").convert("LA")),
    "png-16bit-gray": lambda: F.png(im=F.picture().convert("I;16")),
    "png-after-iend": lambda: F.png(trailer=b"GPS 52.5 13.4"),
    "apng": lambda: F.png(apng_frames=3),
    "gif-animated": F.gif,
    "gif-single-trailer": lambda: F.gif(frames=1, trailer=b"after the trailer"),
    "tiff-multipage": lambda: F.tiff(pages=3),
    "tiff-raw": lambda: F.tiff(compression="raw"),
    "tiff-deflate-rgba": lambda: F.tiff(mode="RGBA", compression="tiff_adobe_deflate", pages=1),
}


@pytest.mark.parametrize("name", sorted(LOSSLESS_CASES))
def test_lossless_paths_keep_every_pixel_and_leave_no_metadata(name: str, assert_clean) -> None:  # type: ignore[no-untyped-def]
    data = LOSSLESS_CASES[name]()
    out = veilpix.sanitize(data, veilpix.Policy(verify_decode=True))
    rep = out.report
    assert rep.lossless, rep.notes
    assert_clean(out.data, "out" + out.extension)
    assert veilpix.inspect(out.data).findings == ()
    assert frame_count(out.data) == frame_count(data) == rep.frames_out
    for i in range(rep.frames_out):
        assert np.array_equal(pixels(out.data, i), pixels(data, i)), f"frame {i} changed"
    assert rep.sha256_in != rep.sha256_out and rep.bytes_out < rep.bytes_in


WEBP_CASES = {
    "webp-lossy": (F.webp, False),
    "webp-lossless-alpha": (lambda: F.webp(im=F.picture(mode="RGBA"), lossless=True), True),
    "webp-lossless-animated": (lambda: F.webp(frames=3, lossless=True), True),
    "webp-animated": (lambda: F.webp(frames=3), False),
    "webp-srgb-icc": (lambda: F.webp(icc=F.icc_profile("srgb")), False),
}


@pytest.mark.parametrize("name", sorted(WEBP_CASES))
def test_webp_is_re_encoded_lossless_pixel_for_pixel(name: str, assert_clean) -> None:  # type: ignore[no-untyped-def]
    """No WebP bitstream says where it ends, so none is copied: lossless WebP comes out pixel
    for pixel, lossy WebP re-encoded close to its pixels."""
    make, exact = WEBP_CASES[name]
    data = make()
    out = veilpix.sanitize(data, veilpix.Policy(verify_decode=True))
    assert not out.report.lossless
    assert any("WebP bitstream" in n for n in out.report.notes), out.report.notes
    assert_clean(out.data, "out" + out.extension)
    assert veilpix.inspect(out.data).findings == ()
    assert frame_count(out.data) == frame_count(data) == out.report.frames_out
    for i in range(out.report.frames_out):
        a, b = pixels(out.data, i).astype(int), pixels(data, i).astype(int)
        if exact:
            assert np.array_equal(a, b), f"frame {i} changed"
        else:
            assert np.abs(a - b).mean() < 6, f"frame {i} drifted"


def test_jpeg_strip_keeps_the_entropy_coded_data_bit_for_bit() -> None:
    data = F.jpeg(trailer=b"trailer")
    out = veilpix.sanitize(data).data
    assert F.scan_data(out) in data
    assert out.startswith(b"\xff\xd8") and out.endswith(b"\xff\xd9")


def test_report_names_what_was_found() -> None:
    rep = veilpix.sanitize(F.jpeg()).report
    by_cat = rep.categories()
    for cat in (
        "gps",
        "device",
        "serial",
        "owner",
        "timestamp",
        "software",
        "comment",
        "thumbnail",
        "c2pa",
        "xmp",
        "iptc",
        "makernotes",
    ):
        assert cat in by_cat, f"{cat} missing from {by_cat}"
    assert rep.gps is not None
    assert rep.gps.latitude == pytest.approx(F.GPS[0], abs=1e-5)
    assert rep.gps.longitude == pytest.approx(F.GPS[1], abs=1e-5)
    values = " ".join(f.value for f in rep.findings)
    assert F.SERIAL in values and F.SECRET in values and F.COMMENT in values
    removed = {r.container for r in rep.removed}
    assert {
        "JPEG APP1 Exif",
        "JPEG APP1 XMP",
        "JPEG APP1 extended XMP",
        "JPEG APP13 Photoshop IRB",
        "JPEG COM",
        "JPEG APP11 JUMBF",
    } <= removed
    assert rep.sensitive


def test_gps_in_xmp_inside_png_itxt_is_reported_and_removed(assert_clean) -> None:  # type: ignore[no-untyped-def]
    data = F.png(exif=False, text=False, time=False, private=False, c2pa=False)
    rep = veilpix.inspect(data)
    assert rep.gps is not None and rep.gps.source == "XMP"
    assert rep.gps.latitude == pytest.approx(52.51627, abs=1e-4)
    out = veilpix.sanitize(data)
    assert_clean(out.data, "out.png")


def test_exif_thumbnail_showing_another_picture_is_gone() -> None:
    data = F.jpeg(xmp=False, iptc=False, comment=False, vendor=False)
    thumb = F.scan_data(F.different_thumbnail())  # the thumbnail's own image data
    assert thumb in data
    out = veilpix.sanitize(data).data
    assert thumb not in out
    assert out.count(b"\xff\xd8") == 1  # one image, no embedded JPEG left
    assert any(f.category == "thumbnail" for f in veilpix.inspect(data).findings)


def test_mpo_keeps_only_the_primary_image(assert_clean) -> None:  # type: ignore[no-untyped-def]
    data = F.mpo()
    out = veilpix.sanitize(data)
    assert out.report.format_in == "MPO" and out.media_type == "image/jpeg"
    assert out.data.count(b"\xff\xd8") == 1
    assert_clean(out.data, "out.jpg")
    assert "kept the first image only" in out.report.notes


def test_device_icc_profile_is_applied_and_dropped(assert_clean) -> None:  # type: ignore[no-untyped-def]
    for data, ext in (
        (F.jpeg(icc=F.icc_profile("device")), ".jpg"),
        (F.png(icc=F.icc_profile("device")), ".png"),
    ):
        out = veilpix.sanitize(data)
        assert out.report.icc.startswith("converted to sRGB"), out.report.icc
        assert not out.report.lossless
        assert (
            b"Jane" not in out.data and b"ICC_PROFILE" not in out.data and b"iCCP" not in out.data
        )
        assert_clean(out.data, "out" + ext)


def test_standard_icc_profile_is_kept_and_can_be_dropped() -> None:
    data = F.jpeg(icc=F.icc_profile("srgb"))
    kept = veilpix.sanitize(data)
    assert kept.report.icc == "kept: sRGB built-in" and b"ICC_PROFILE" in kept.data
    dropped = veilpix.sanitize(data, veilpix.Policy(keep_standard_icc=False))
    assert b"ICC_PROFILE" not in dropped.data
    assert dropped.report.icc.startswith("converted to sRGB")


def test_png_icc_profile_name_is_not_carried_over() -> None:
    data = F.png(icc=F.icc_profile("srgb"))
    assert b"Jane's screen" in data
    out = veilpix.sanitize(data).data
    assert b"iCCP" in out and b"Jane" not in out


@pytest.mark.parametrize("maker", ["heic", "heic-alpha", "avif", "avif-animated"])
def test_heif_and_avif_become_jpeg_or_png(maker: str, assert_clean) -> None:  # type: ignore[no-untyped-def]
    if maker.startswith("heic"):
        pytest.importorskip("pillow_heif")
        data = F.heic(alpha=maker.endswith("alpha"))
    else:
        data = F.avif(frames=3, alpha=True) if maker.endswith("animated") else F.avif()
    out = veilpix.sanitize(data)
    alpha_or_anim = maker in ("heic-alpha", "avif-animated")
    assert out.media_type == ("image/png" if alpha_or_anim else "image/jpeg")
    assert out.report.gps is not None
    assert_clean(out.data, "out" + out.extension)
    assert frame_count(out.data) == (3 if maker == "avif-animated" else 1)
    with Image.open(io.BytesIO(out.data)) as im:
        assert im.size == (64, 48)
        if alpha_or_anim:
            assert im.mode == "RGBA"


def test_bmp_is_rebuilt_from_pixels(assert_clean) -> None:  # type: ignore[no-untyped-def]
    data = F.bmp()
    out = veilpix.sanitize(data)
    assert out.media_type == "image/bmp"
    assert np.array_equal(pixels(out.data), pixels(data))
    assert_clean(out.data, "out.bmp")


def test_tiff_descriptive_geotiff_and_gps_tags_are_gone(assert_clean) -> None:  # type: ignore[no-untyped-def]
    data = F.tiff()
    rep = veilpix.inspect(data)
    labels = {f.label for f in rep.findings}
    assert {
        "Camera make",
        "Artist",
        "GeoTIFF georeferencing",
        "GPS position",
        "Host computer",
    } <= labels
    out = veilpix.sanitize(data)
    assert_clean(out.data, "out.tif")
    for secret in (b"VeilCam", F.SECRET.encode(), b"janes-laptop", b"xmpmeta"):
        assert secret not in out.data


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_explicit_output_format_converts(fmt: str, assert_clean) -> None:  # type: ignore[no-untyped-def]
    out = veilpix.sanitize(F.gif(frames=1), veilpix.Policy(output_format=fmt))  # type: ignore[arg-type]
    assert out.media_type == f"image/{fmt}"
    assert_clean(out.data, "out." + fmt)
    with Image.open(io.BytesIO(out.data)) as im:
        assert im.format == fmt.upper()


def test_quality_option_is_used_for_reencoding() -> None:
    # 61x47 is not whole 16x16 blocks, so the turn cannot be lossless: it re-encodes
    data = F.jpeg(upright=F.picture((61, 47)), orientation=6, quality=95)
    default = veilpix.sanitize(data)
    low = veilpix.sanitize(data, veilpix.Policy(quality=20))
    assert len(low.data) < len(default.data)
    assert any("input's quality" in n for n in default.report.notes)


def test_sanitize_file_and_bytes_like_inputs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = F.jpeg()
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    a = veilpix.sanitize_file(str(path))
    b = veilpix.sanitize(bytearray(data))
    c = veilpix.sanitize(memoryview(data))
    assert a.data == b.data == c.data
    assert path.read_bytes() == data  # the original is untouched
    with pytest.raises(veilpix.UnsupportedImage, match="bytes"):
        veilpix.sanitize(str(path))  # type: ignore[arg-type]
