"""The fail-closed contract (tests/hostilekit.py) over every format at once: truncation
anywhere, the policy's limits, huge declared sizes, garbage, non-images and polyglots, broken
structures, mutation fuzzing, and what every input type and output format must do."""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

import factories as F
import veilpix
from hostilekit import (
    FORMATS,
    FUZZ_TARGETS,
    MB,
    MUTATION,
    PEAK_LIMIT,
    POLICIES,
    SECRETS,
    box,
    capped_memory,
    check_all,
    contract,
    describe,
    hostile,
    isolated,
    job,
    jpeg_segment,
    jpeg_with_app1,
    mutate,
    needs,
    plain_jpeg,
    plain_png,
    plain_tiff,
    png_insert,
    put,
    refused_or_repaired_whole,
    riff,
    riff_chunk_at,
    sample,
    tiff_graft,
    tiff_set,
    tiny_gif,
    too_large,
    zeros_deflated,
)
from veilpix.image._pixels import decoding


# =========================================================================== the kit
@hostile
def test_zeros_deflated_is_what_it_claims() -> None:
    stream = zeros_deflated(3)
    assert zlib.decompress(stream) == bytes(3 * MB)
    assert len(zeros_deflated(500)) < 600_000


# =========================================================================== truncation
def cut_points(n: int) -> list[int]:
    """Every offset of the first 64 bytes plus ~60 spread evenly over the rest."""
    points = set(range(min(n, 64)))
    points.update(64 + (n - 64) * i // 60 for i in range(60) if n > 64)
    points.update({n - 1, n - 2, n - 3, n - 4})
    return sorted(p for p in points if 0 <= p < n)


@hostile
@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_everywhere(fmt: str) -> None:
    data = sample(fmt)
    outcomes = check_all((f"{fmt}[:{k}]", data[:k]) for k in cut_points(len(data)))
    # a cut inside the header can never produce a picture
    for o in outcomes:
        if len(o.data) < 16:
            assert o.error is not None, f"{o.label} produced an image"


@hostile
@pytest.mark.parametrize("fmt", ("jpeg", "png", "webp", "tiff"))
def test_truncation_is_reported_as_corrupt(fmt: str) -> None:
    """Formats whose end is explicit (EOI, IEND, RIFF size, strip offsets): a cut anywhere
    after the magic is CorruptImage, never a silently shorter picture."""
    data = sample(fmt)
    # a TIFF's last IFD may lack its next-IFD pointer (many writers omit it): cuts there are
    # read as the end of the chain
    stop = len(data) - (4 if fmt == "tiff" else 0)
    for o in check_all((f"{fmt}[:{k}]", data[:k]) for k in cut_points(len(data)) if 16 <= k < stop):
        refused_or_repaired_whole(o, data)


# =========================================================================== huge sizes
@hostile
def test_huge_declared_dimensions() -> None:
    jpeg = plain_jpeg()
    sof = jpeg_segment(jpeg, 0xC0)
    png = sample("png")
    gif = sample("gif")
    webp = sample("webp")
    vp8x = riff_chunk_at(webp, b"VP8X")
    simple = F.encode(F.picture(), "WEBP", quality=80)
    vp8 = riff_chunk_at(simple, b"VP8 ")
    tiff = plain_tiff()
    bmp = F.bmp()
    cases = [
        ("JPEG SOF 65000x65000", put(put(jpeg, sof + 5, 65000), sof + 7, 65000)),
        (
            "PNG IHDR 100000x100000",
            png[:8]
            + F.png_chunk(b"IHDR", struct.pack(">II", 100000, 100000) + png[24:29])
            + png[33:],
        ),
        (
            "PNG IHDR 2^31-1 x 1",
            png[:8]
            + F.png_chunk(b"IHDR", struct.pack(">II", 2**31 - 1, 1) + png[24:29])
            + png[33:],
        ),
        ("GIF screen 65535x65535", put(put(gif, 6, 65535, "<H"), 8, 65535, "<H")),
        ("GIF screen and frame 65535x65535", tiny_gif((65535, 65535), (65535, 65535))),
        (
            "WebP VP8X canvas 16384x16384",
            webp[: vp8x + 12] + b"\xff\x3f\x00\xff\x3f\x00" + webp[vp8x + 18 :],
        ),
        ("WebP VP8 16383x16383", simple[: vp8 + 14] + b"\xff\x3f\xff\x3f" + simple[vp8 + 18 :]),
        (
            "TIFF 1e6 x 1e6",
            tiff_set(
                tiff_set(tiff, 256, 4, 1, struct.pack("<I", 10**6)),
                257,
                4,
                1,
                struct.pack("<I", 10**6),
            ),
        ),
        ("BMP width 2^31-1", put(bmp, 18, 2**31 - 1, "<i")),
        ("BMP height -2^31", put(bmp, 22, -(2**31), "<i")),
        (
            "APNG with 2^31 frames",
            png_insert(plain_png(), F.png_chunk(b"acTL", struct.pack(">II", 2**31, 0))),
        ),
    ]
    too_large(cases)


LIMITS = {
    "max_input_pixels=1000": veilpix.Policy(max_input_pixels=1000),
    "max_bytes=100": veilpix.Policy(max_bytes=100),
}


@hostile
@pytest.mark.parametrize("limit", list(LIMITS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_policy_limits(fmt: str, limit: str) -> None:
    data = sample(fmt)
    with pytest.raises(veilpix.ImageTooLarge, match=r"\S"):
        veilpix.sanitize(data, LIMITS[limit])


@hostile
@pytest.mark.parametrize("fmt", FORMATS)
def test_policy_limits_are_inclusive(fmt: str) -> None:
    data = sample(fmt)
    veilpix.sanitize(data, veilpix.Policy(max_bytes=len(data), max_input_pixels=64 * 48))
    with pytest.raises(veilpix.ImageTooLarge, match=f"{len(data):,}"):
        veilpix.sanitize(data, veilpix.Policy(max_bytes=len(data) - 1))
    with pytest.raises(veilpix.ImageTooLarge, match=f"{64 * 48 - 1:,}"):
        veilpix.sanitize(data, veilpix.Policy(max_input_pixels=64 * 48 - 1))


@hostile
def test_policy_frame_limits() -> None:
    gif = F.gif(frames=3)
    with pytest.raises(veilpix.ImageTooLarge, match="3 frames"):
        veilpix.sanitize(gif, veilpix.Policy(max_frames=2))
    veilpix.sanitize(gif, veilpix.Policy(max_frames=3))
    for data in (F.png(apng_frames=3), F.tiff(pages=3)):  # APNG frames, TIFF pages
        with pytest.raises(veilpix.ImageTooLarge, match="frames"):
            veilpix.sanitize(data, veilpix.Policy(max_frames=2))
    # three 64x48 frames are 9216 pixels in all
    with pytest.raises(veilpix.ImageTooLarge, match="in all frames"):
        veilpix.sanitize(gif, veilpix.Policy(max_total_pixels=9215))
    veilpix.sanitize(gif, veilpix.Policy(max_total_pixels=9216))


# =========================================================================== XMP
@hostile
def test_pathological_xmp_stays_linear() -> None:
    """XMP is read with regular expressions: thousands of unclosed property elements make
    every search run to the end of the packet (quadratic). 70 KB must take milliseconds."""
    creators = b"<x:xmpmeta>" + b"<dc:creator>" * 6000
    png = png_insert(
        plain_png(), F.png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + creators)
    )
    jpeg = jpeg_with_app1(b"http://ns.adobe.com/xap/1.0/\x00" + b"<dc:creator>" * 5000)
    items = b"<x:xmpmeta><dc:subject>" + b"<rdf:li>" * 8000
    png2 = png_insert(
        plain_png(), F.png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + items)
    )
    results = isolated(
        [
            job("PNG iTXt XMP: 6000 unclosed <dc:creator>", png, "inspect"),
            job("JPEG APP1 XMP: 5000 unclosed <dc:creator>", jpeg, "inspect"),
            job("PNG iTXt XMP: 8000 unclosed <rdf:li>", png2, "inspect"),
        ],
        timeout=120,
    )
    slow = [describe(r) for r in results if r["outcome"] != "ok" or float(r["seconds"]) >= 0.5]
    assert not slow, "\n".join(slow)


# =========================================================================== garbage
MAGICS = {
    "jpeg": b"\xff\xd8\xff",
    "jpeg-app0": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "png": b"\x89PNG\r\n\x1a\n",
    "png-ihdr": b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
    "webp": b"RIFF\x00\x01\x00\x00WEBP",
    "webp-vp8x": b"RIFF\x00\x01\x00\x00WEBPVP8X\x0a\x00\x00\x00",
    "gif87": b"GIF87a",
    "gif89": b"GIF89a",
    "tiff-le": b"II*\x00",
    "tiff-be": b"MM\x00*",
    "bigtiff": b"II+\x00\x08\x00\x00\x00",
    "bmp": b"BM\x00\x01\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00",
    "heic": box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic"),
    "avif": box(b"ftyp", b"avif\x00\x00\x00\x00mif1avif"),
}


@hostile
def test_random_bytes_after_a_valid_magic() -> None:
    rng = random.Random(20240506)
    cases = []
    for name, magic in MAGICS.items():
        for size in (0, 1, 3, 10, 64, 300, 4096):
            cases.append((f"{name} + {size} random bytes", magic + rng.randbytes(size)))
            cases.append((f"{name} + {size} zero bytes", magic + bytes(size)))
            cases.append((f"{name} + {size} 0xFF bytes", magic + b"\xff" * size))
    for o in check_all(cases):
        assert o.error is not None, f"{o.label}: produced an image"


@hostile
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x00" * 1000,
        b"hello, world\n",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b'  \n<?xml version="1.0"?><svg/>',
        b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(40),
        b"\x7fELF\x02\x01\x01" + bytes(60),
        b'{"image": "not really"}',
        b"\xff\x0a" + bytes(30),  # JPEG XL codestream
        b"\x00\x00\x01\x00\x01\x00\x10\x10" + bytes(30),  # ICO
        b"8BPS\x00\x01" + bytes(30),  # PSD
        b"hello" + F.jpeg(),  # an image behind a text prefix is not an image
        b"\xef\xbb\xbf" + F.png(),  # nor behind a byte-order mark
        b"\xff\xd8",  # SOI alone
        b"GIF8",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"BM" + bytes(10),
    ],
    ids=lambda d: repr(d[:12]),
)
def test_non_images_are_unsupported(data: bytes) -> None:
    for call in (veilpix.inspect, veilpix.sanitize):
        with pytest.raises(veilpix.UnsupportedImage, match=r"\S"):
            call(data)


@hostile
@pytest.mark.parametrize("value", ["a string", None, 42, [1, 2, 3]], ids=repr)
def test_non_bytes_are_unsupported(value: object) -> None:
    for call in (veilpix.inspect, veilpix.sanitize):
        with pytest.raises(veilpix.UnsupportedImage):
            call(value)


def _zip(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, payload)
    return buf.getvalue()


@hostile
def test_polyglots_lose_their_payload() -> None:
    secret_zip = _zip("secret.txt", b"TRACKING-ID " + F.SECRET.encode())
    html = b"<html><script>alert('TRACKING-ID')</script></html>"
    cases = [
        ("JPEG + ZIP", sample("jpeg") + secret_zip),
        ("JPEG + HTML", sample("jpeg") + html),
        ("JPEG + JPEG", sample("jpeg") + sample("jpeg")),
        ("PNG + data after IEND", sample("png") + secret_zip),
        ("GIF + ZIP (GIFAR)", sample("gif") + secret_zip),
        ("GIF + HTML", sample("gif") + html),
        ("WebP + data after the RIFF", sample("webp") + secret_zip),
        ("TIFF + ZIP", sample("tiff") + secret_zip),
        ("BMP + ZIP", sample("bmp") + secret_zip),
    ]
    outcomes = check_all(cases)
    for o in outcomes:
        assert o.result is not None, f"{o.label}: {o.error}"
        out = o.result.data
        assert b"PK\x03\x04" not in out and b"<script" not in out, o.label
        assert not [s for s in SECRETS if s in out], o.label
        assert o.result.report.removed, f"{o.label}: the report lists nothing removed"
    png = outcomes[3].result
    assert png is not None and png.data.endswith(F.png_chunk(b"IEND", b""))


@hostile
def test_broken_structures_are_corrupt() -> None:
    jpeg = sample("jpeg")
    cases = {
        "GIF without an image": b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x3b",
        "GIF with only extensions": b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x21\xfe\x02hi\x00\x3b",
        "JPEG with two SOI": jpeg[:2] + jpeg,
        "JPEG without SOS": jpeg[: jpeg_segment(jpeg, 0xDA)] + b"\xff\xd9",
        "JPEG without EOI": jpeg[:-2],
        "JPEG SOS before SOF": plain_jpeg()[:2] + plain_jpeg()[jpeg_segment(plain_jpeg(), 0xDA) :],
        "PNG without IDAT": plain_png()[:33] + F.png_chunk(b"IEND", b""),
        "WebP without image data": riff(F.riff_chunk(b"EXIF", F.exif_tiff())),
        "TIFF without pages": b"II*\x00\x00\x00\x00\x00",
        "TIFF page without size": tiff_graft(plain_tiff(), [], count=1),
    }
    for o in check_all(cases.items()):
        assert isinstance(o.error, veilpix.CorruptImage), (
            f"{o.label}: {type(o.error).__name__ if o.error else 'an image'}"
        )


# =========================================================================== fuzzing
@hostile
@pytest.mark.parametrize("fmt", FUZZ_TARGETS)
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: a failing example is reported as is
    suppress_health_check=list(HealthCheck),
)
@given(ops=st.lists(MUTATION, min_size=1, max_size=6), policy=st.sampled_from(list(POLICIES)))
def test_fuzz_mutations(fmt: str, ops: list[tuple[str, bool, int, int]], policy: str) -> None:
    needs(fmt)
    data = mutate(sample(fmt), ops)
    with capped_memory():
        o = contract(data, POLICIES[policy], label=f"{fmt} mutated by {ops}, policy {policy}")
    assert o.seconds < 5.0, f"took {o.seconds:.1f} s"
    assert o.peak < PEAK_LIMIT, f"allocated {o.peak / MB:.0f} MB for {len(data)} bytes of input"


@hostile
def test_decoder_errors_carry_no_memory_addresses() -> None:
    """Pillow says "cannot identify image file <_io.BytesIO object at 0x7f...>"; veilpix's
    message says what is wrong without the address (issue 15)."""
    with pytest.raises(veilpix.CorruptImage) as info, decoding("TIFF"):
        Image.open(io.BytesIO(b"II*\x00" + bytes(50)))
    assert "0x" not in str(info.value) and "cannot identify image file the data" in str(info.value)


# =========================================================================== inputs and outputs
@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_explicit_output_format_converts(fmt: str, assert_clean) -> None:  # type: ignore[no-untyped-def]
    out = veilpix.sanitize(F.gif(frames=1), veilpix.Policy(output_format=fmt))  # type: ignore[arg-type]
    assert out.media_type == f"image/{fmt}"
    assert_clean(out.data, "out." + fmt)
    with Image.open(io.BytesIO(out.data)) as im:
        assert im.format == fmt.upper()


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
