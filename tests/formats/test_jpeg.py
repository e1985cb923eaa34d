"""JPEG (and MPO, a JPEG with more images appended): well-formed files lose every metadata
segment and keep their entropy-coded data bit for bit; hostile ones (lying segment lengths,
hostile EXIF in APP1, payloads hidden in the structure a strip keeps) fail closed by the
contract in tests/hostilekit.py."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

import factories as F
import veilpix
from hostilekit import (
    PAYLOAD,
    assert_hostile_exif_removed_whole,
    assert_lossless,
    assert_payload_dropped,
    check_all,
    hostile,
    icc_with_payload,
    jpeg_segment,
    jpeg_segments,
    plain_jpeg,
    put,
    sample,
)

# =========================================================================== well-formed
LOSSLESS_CASES: dict[str, Callable[[], bytes]] = {
    "jpeg": F.jpeg,
    "jpeg-progressive": lambda: F.jpeg(progressive=True),
    "jpeg-cmyk-adobe": lambda: F.jpeg(cmyk=True),
    "jpeg-srgb-icc": lambda: F.jpeg(icc=F.icc_profile("srgb")),
    "jpeg-trailer": lambda: F.jpeg(trailer=b"\x00\x00SEFHtrailer " + F.SERIAL.encode()),
}


@pytest.mark.parametrize("name", sorted(LOSSLESS_CASES))
def test_lossless_paths_keep_every_pixel_and_leave_no_metadata(name: str, assert_clean) -> None:  # type: ignore[no-untyped-def]
    assert_lossless(LOSSLESS_CASES[name](), assert_clean)


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
        "location",
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
    # a place name is a location, not a GPS coordinate, and sensitive on its own
    places = [f for f in rep.findings if f.label in ("City", "Country")]
    assert {f.source for f in places} == {"IPTC in JPEG", "XMP in JPEG"}
    assert all(f.category == "location" and f.sensitive for f in places)


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


def test_quality_option_is_used_for_reencoding() -> None:
    # 61x47 is not whole 16x16 blocks, so the turn cannot be lossless: it re-encodes
    data = F.jpeg(upright=F.picture((61, 47)), orientation=6, quality=95)
    default = veilpix.sanitize(data)
    low = veilpix.sanitize(data, veilpix.Policy(quality=20))
    assert len(low.data) < len(default.data)
    assert any("input's quality" in n for n in default.report.notes)


# =========================================================================== hostile
@hostile
def test_jpeg_segment_lengths() -> None:
    data = sample("jpeg")
    segs = jpeg_segments(data)
    app1 = next(s for m, s, _ in segs if m == 0xE1)
    sof = next(s for m, s, _ in segs if m == 0xC0)
    dqt = next(s for m, s, _ in segs if m == 0xDB)
    sos = next(s for m, s, _ in segs if m == 0xDA)
    for length in (0, 1):
        for name, at in (("APP1", app1), ("SOF0", sof), ("DQT", dqt), ("SOS", sos)):
            (o,) = check_all([(f"{name} length {length}", put(data, at + 2, length))])
            assert isinstance(o.error, veilpix.CorruptImage), o.label
    (o,) = check_all([("APP1 past the end", put(data, app1 + 2, 0xFFFF))])
    assert isinstance(o.error, veilpix.CorruptImage)
    cases = [
        (f"{name} length {length}", put(data, at + 2, length))
        for name, at in (("APP1", app1), ("SOF0", sof), ("DQT", dqt), ("SOS", sos))
        for real in struct.unpack_from(">H", data, at + 2)
        for length in (2, real - 3, real - 1, real + 1, real + 2, real + 7)
    ]
    cases += [
        ("SOF0 with 0 components", data[: sof + 9] + b"\x00" + data[sof + 10 :]),
        ("SOF0 with 255 components", data[: sof + 9] + b"\xff" + data[sof + 10 :]),
        ("marker run", data[:2] + b"\xff" * 5000 + data[2:]),
    ]
    check_all(cases)


@hostile
@pytest.mark.parametrize("carrier", ["jpeg"])
def test_hostile_exif_is_removed_whole(carrier: str) -> None:
    """The picture is fine, only the EXIF block is hostile: sanitize must succeed, remove the
    block whole and still produce a report, fast and in little memory, whatever the block."""
    assert_hostile_exif_removed_whole(carrier)


def smuggling_cases() -> dict[str, bytes]:
    jpeg = plain_jpeg()
    dqt = jpeg_segment(jpeg, 0xDB)
    return {
        "standard ICC profile with extra bytes (JPEG)": F.jpeg(icc=icc_with_payload()),
        "JPEG DRI with extra bytes": jpeg[:dqt]
        + b"\xff\xdd"
        + struct.pack(">H", 4 + len(PAYLOAD))
        + b"\x00\x00"
        + PAYLOAD
        + jpeg[dqt:],
    }


@hostile
@pytest.mark.parametrize("name", list(smuggling_cases()))
def test_structure_cannot_smuggle_data(name: str) -> None:
    """What survives a lossless strip is structure a decoder needs. A hostile writer can hide
    a tracking ID inside such an element (an oversized pHYs or VP8X, an extra GIF sub-block,
    a 'standard' colour profile with a payload); the output must not carry it."""
    # libjpeg rejects a DRI segment that is not exactly 4 bytes ("bogus marker length"): the
    # input does not decode anywhere, so refusing it is the right answer too
    refused = name == "JPEG DRI with extra bytes"
    assert_payload_dropped(name, smuggling_cases()[name], may_be_refused=refused)
