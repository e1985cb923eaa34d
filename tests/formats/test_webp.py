"""WebP: no bitstream says where it ends, so every WebP is re-encoded (lossless ones pixel
for pixel); hostile ones (lying RIFF and chunk sizes, hostile EXIF in the EXIF chunk, payloads
hidden in VP8X or a profile) fail closed by the contract in tests/hostilekit.py."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import factories as F
import veilpix
from hostilekit import (
    PAYLOAD,
    assert_hostile_exif_removed_whole,
    assert_payload_dropped,
    check_all,
    frame_count,
    hostile,
    icc_with_payload,
    pixels,
    plain_webp,
    put,
    riff,
    riff_chunk_at,
    sample,
)

# =========================================================================== well-formed
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


# =========================================================================== hostile
@hostile
def test_webp_riff_and_chunk_sizes() -> None:
    data = sample("webp")
    for size in (0, 4, 0xFFFFFFFF, len(data)):
        (o,) = check_all([(f"RIFF size {size:#x}", put(data, 4, size, "<I"))])
        assert isinstance(o.error, veilpix.CorruptImage), o.label
    cases = [
        (f"RIFF size {len(data) - 8 + d}", put(data, 4, len(data) - 8 + d, "<I"))
        for d in (-40, -9, -1, 1)
    ]
    cases += [
        (f"{kind!r} size {size:#x}", put(data, at + 4, size, "<I"))
        for kind in (b"VP8X", b"VP8 ", b"EXIF", b"XMP ")
        for at in [riff_chunk_at(data, kind)]
        for real in struct.unpack_from("<I", data, at + 4)
        for size in (0, 1, real - 1, real + 1, real + 100, 0x7FFFFFFF, 0xFFFFFFFF)
    ]
    anim = F.webp(frames=2)
    anmf = riff_chunk_at(anim, b"ANMF")
    (real,) = struct.unpack_from("<I", anim, anmf + 4)
    cases += [
        (f"ANMF size {size:#x}", put(anim, anmf + 4, size, "<I"))
        for size in (0, 15, 16, real - 1, real + 1, 0xFFFFFFF0)
    ]
    cases += [
        (f"ANMF sub-chunk size {size:#x}", put(anim, anmf + 8 + 16 + 4, size, "<I"))
        for size in (0, 0xFFFFFFF0)
    ]
    check_all(cases)


@hostile
@pytest.mark.parametrize("carrier", ["webp"])
def test_hostile_exif_is_removed_whole(carrier: str) -> None:
    """The picture is fine, only the EXIF block is hostile: sanitize must succeed, remove the
    block whole and still produce a report, fast and in little memory, whatever the block."""
    assert_hostile_exif_removed_whole(carrier)


def smuggling_cases() -> dict[str, bytes]:
    webp = plain_webp()
    vp8x = riff_chunk_at(webp, b"VP8X")
    return {
        "standard ICC profile with extra bytes (WebP)": F.webp(icc=icc_with_payload()),
        "WebP VP8X with extra bytes": riff(
            webp[12 : vp8x + 4]
            + struct.pack("<I", 10 + len(PAYLOAD))
            + webp[vp8x + 8 : vp8x + 18]
            + PAYLOAD
            + webp[vp8x + 18 :]
        ),
    }


@hostile
@pytest.mark.parametrize("name", list(smuggling_cases()))
def test_structure_cannot_smuggle_data(name: str) -> None:
    """What survives a lossless strip is structure a decoder needs. A hostile writer can hide
    a tracking ID inside such an element (an oversized pHYs or VP8X, an extra GIF sub-block,
    a 'standard' colour profile with a payload); the output must not carry it."""
    # libwebp rejects a VP8X chunk that is not 10 bytes (WebP is always re-encoded): the
    # input does not decode anywhere, so refusing it is the right answer too
    refused = name == "WebP VP8X with extra bytes"
    assert_payload_dropped(name, smuggling_cases()[name], may_be_refused=refused)
