"""HEIF and AVIF (ISO base media file format): always decoded, and written as JPEG or PNG;
hostile ones (a huge declared size, unbounded item references, whatever the decoder raises on
a broken file) fail closed by the contract in tests/hostilekit.py."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable

import pytest
from PIL import Image

import factories as F
import veilpix
from hostilekit import (
    box,
    check_all,
    describe,
    frame_count,
    hostile,
    isolated,
    job,
    needs,
    patch_ispe,
    sample,
    too_large,
)


# =========================================================================== well-formed
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


# =========================================================================== hostile
@hostile
@pytest.mark.parametrize("fmt", ("heic", "avif"))
def test_bmff_huge_declared_size(fmt: str) -> None:
    needs(fmt)
    too_large([(f"{fmt} ispe 65535x65535", patch_ispe(sample(fmt), 65535, 65535))])


@hostile
def test_bmff_item_references_are_bounded() -> None:
    """An iref box whose references each declare 65535 targets (with none present): 12 bytes
    of input expand to a 65535-entry list, so 10 of them (under 200 bytes) take seconds."""
    ref = box(b"dimg", struct.pack(">HH", 1, 0xFFFF))
    meta = box(b"meta", b"\x00\x00\x00\x00" + box(b"iref", b"\x00\x00\x00\x00" + ref * 10))
    files = {b: box(b"ftyp", b + b"\x00\x00\x00\x00mif1" + b) + meta for b in (b"heic", b"avif")}
    jobs = [job(f"{b.decode()}: 10 irefs of 65535 targets", d, "inspect") for b, d in files.items()]
    results = isolated(jobs, timeout=120)
    slow = [describe(r) for r in results if r["outcome"] == "escape" or float(r["seconds"]) >= 0.5]
    assert not slow, "\n".join(slow)


def _damaged_coded_data(data: bytes) -> bytes:
    """The fixture AVIF with 4 bytes of its AV1 payload (the last extent in the file) flipped."""
    return data[:-40] + bytes(b ^ 0xFF for b in data[-40:-36]) + data[-36:]


DECODER_CASES: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    # libheif: SyntaxError("Unsupported feature: ... infe box data version 34")
    "HEIC infe box version 34": ("heic", lambda d: d.replace(b"infe\x02", b"infe\x22", 1)),
    # no decoder configuration: libheif lists no image, heif[primary_index] -> IndexError
    "HEIC without hvcC": ("heic", lambda d: d.replace(b"hvcC", b"hvCC", 1)),
    # Pillow's AVIF plugin: RuntimeError("Failed to decode frame 0: ...") on load
    "AVIF with damaged AV1 data": ("avif", _damaged_coded_data),
}


@hostile
@pytest.mark.parametrize("name", list(DECODER_CASES))
def test_decoder_errors_are_translated(name: str) -> None:
    """HEIC and AVIF always go through a decoder: whatever it raises on a broken file must
    reach the caller as a VeilpixError."""
    fmt, damage = DECODER_CASES[name]
    needs(fmt)
    for policy in (veilpix.Policy(), veilpix.Policy(output_format="png")):
        check_all([(name, damage(sample(fmt)))], policy)
