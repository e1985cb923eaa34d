"""PNG (and APNG): well-formed files keep every pixel of every frame and lose every
metadata chunk; hostile ones (lying chunk lengths and CRCs, hostile EXIF in eXIf, compressed
text, profile and image-data bombs, payloads hidden in the chunks a strip keeps) fail closed by
the contract in tests/hostilekit.py."""

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
    plain_png,
    png_chunk_at,
    png_insert,
    put,
    refused_or_repaired_whole,
    sample,
    too_large,
    zeros_deflated,
)

# =========================================================================== well-formed
LOSSLESS_CASES: dict[str, Callable[[], bytes]] = {
    "png": F.png,
    "png-palette-trns": lambda: F.png(im=F.picture().convert("P"), transparency=3),
    "png-gray-alpha": lambda: F.png(im=F.picture(mode="RGBA").convert("LA")),
    "png-16bit-gray": lambda: F.png(im=F.picture().convert("I;16")),
    "png-after-iend": lambda: F.png(trailer=b"GPS 52.5 13.4"),
    "apng": lambda: F.png(apng_frames=3),
}


@pytest.mark.parametrize("name", sorted(LOSSLESS_CASES))
def test_lossless_paths_keep_every_pixel_and_leave_no_metadata(name: str, assert_clean) -> None:  # type: ignore[no-untyped-def]
    assert_lossless(LOSSLESS_CASES[name](), assert_clean)


def test_gps_in_xmp_inside_png_itxt_is_reported_and_removed(assert_clean) -> None:  # type: ignore[no-untyped-def]
    data = F.png(exif=False, text=False, time=False, private=False, c2pa=False)
    rep = veilpix.inspect(data)
    assert rep.gps is not None and rep.gps.source == "XMP"
    assert rep.gps.latitude == pytest.approx(52.51627, abs=1e-4)
    out = veilpix.sanitize(data)
    assert_clean(out.data, "out.png")


def test_png_icc_profile_name_is_not_carried_over() -> None:
    data = F.png(icc=F.icc_profile("srgb"))
    assert b"Jane's screen" in data
    out = veilpix.sanitize(data).data
    assert b"iCCP" in out and b"Jane" not in out


# =========================================================================== hostile
@hostile
def test_png_chunk_lengths_and_crc() -> None:
    data = sample("png")
    text = png_chunk_at(data, b"tEXt")
    idat = png_chunk_at(data, b"IDAT")
    for length in (0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, len(data)):
        (o,) = check_all([(f"tEXt length {length:#x}", put(data, text, length, ">I"))])
        assert isinstance(o.error, veilpix.CorruptImage), o.label
    (real,) = struct.unpack_from(">I", data, text)
    check_all((f"tEXt length {real + d}", put(data, text, real + d, ">I")) for d in (-1, 1, 4, 12))
    (idat_len,) = struct.unpack_from(">I", data, idat)
    crc_at = idat + 8 + idat_len
    bad_crc = (
        data[:crc_at] + bytes(b ^ 0xFF for b in data[crc_at : crc_at + 4]) + data[crc_at + 4 :]
    )
    (o,) = check_all([("IDAT with a bad CRC", bad_crc)])
    refused_or_repaired_whole(o, data)
    ihdr_crc = data[:29] + b"\x00\x00\x00\x00" + data[33:]
    (o,) = check_all([("IHDR with a bad CRC", ihdr_crc)])
    assert isinstance(o.error, veilpix.CorruptImage)
    cases = [
        ("IHDR length 12", put(data, 8, 12, ">I")),
        ("IDAT length 0", put(data, idat, 0, ">I")),
        ("IDAT runs into IEND", put(data, idat, idat_len + 12, ">I")),
        ("no IEND", data[: png_chunk_at(data, b"IEND")]),
        ("two IHDR", data[:33] + data[8:33] + data[33:]),
        ("IEND first", data[:8] + F.png_chunk(b"IEND", b"") + data[8:]),
        ("chunk type with digits", data[: text + 4] + b"t3Xt" + data[text + 8 :]),
    ]
    check_all(cases)


@hostile
@pytest.mark.parametrize("carrier", ["png"])
def test_hostile_exif_is_removed_whole(carrier: str) -> None:
    """The picture is fine, only the EXIF block is hostile: sanitize must succeed, remove the
    block whole and still produce a report, fast and in little memory, whatever the block."""
    assert_hostile_exif_removed_whole(carrier)


@hostile
def test_png_compressed_text_and_profile_bombs() -> None:
    """zTXt, iTXt, iCCP and zxIf that inflate to 500 MB: read capped, dropped whole."""
    bomb = zeros_deflated(500)
    base = plain_png()
    cases = [
        ("zTXt bomb", png_insert(base, F.png_chunk(b"zTXt", b"Comment\x00\x00" + bomb))),
        (
            "iTXt bomb",
            png_insert(base, F.png_chunk(b"iTXt", b"Comment\x00\x01\x00\x00\x00" + bomb)),
        ),
        (
            "iTXt XMP bomb",
            png_insert(base, F.png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + bomb)),
        ),
        (
            "iCCP bomb",
            png_insert(base, F.png_chunk(b"iCCP", b"Jane's screen\x00\x00" + bomb), before=b"IDAT"),
        ),
        ("zxIf bomb", png_insert(base, F.png_chunk(b"zxIf", bomb))),
        ("ten zTXt bombs", png_insert(base, F.png_chunk(b"zTXt", b"Comment\x00\x00" + bomb) * 10)),
    ]
    for o in check_all(cases):
        assert o.result is not None, f"{o.label}: {o.error}"
        assert len(o.result.data) < len(base) + 1000


@hostile
def test_png_image_data_bomb() -> None:
    """IDAT that inflates to 500 MB: a huge IHDR is refused before inflating anything; a
    small IHDR never reads more than the picture needs."""
    bomb = zeros_deflated(500)
    png = plain_png()
    ihdr = png[8:33]
    big = F.png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    idat = F.png_chunk(b"IDAT", bomb)
    iend = F.png_chunk(b"IEND", b"")
    too_large([("IHDR 20000x20000, 500 MB of IDAT", png[:8] + big + idat + iend)])
    small = png[:8] + ihdr + idat + iend
    for policy in (
        veilpix.Policy(),
        veilpix.Policy(verify_decode=True),
        veilpix.Policy(output_format="jpeg"),
    ):
        check_all([("IHDR 64x48, 500 MB of IDAT", small)], policy)


def smuggling_cases() -> dict[str, bytes]:
    png = plain_png()
    return {
        "standard ICC profile with extra bytes (PNG)": F.png(icc=icc_with_payload()),
        "PNG pHYs with extra bytes": png_insert(png, F.png_chunk(b"pHYs", bytes(9) + PAYLOAD)),
        "PNG tRNS carrying text": png_insert(png, F.png_chunk(b"tRNS", PAYLOAD)),
    }


@hostile
@pytest.mark.parametrize("name", list(smuggling_cases()))
def test_structure_cannot_smuggle_data(name: str) -> None:
    """What survives a lossless strip is structure a decoder needs. A hostile writer can hide
    a tracking ID inside such an element (an oversized pHYs or VP8X, an extra GIF sub-block,
    a 'standard' colour profile with a payload); the output must not carry it."""
    assert_payload_dropped(name, smuggling_cases()[name])
