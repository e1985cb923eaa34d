"""TIFF: well-formed files (multi-page, raw, deflated) keep every pixel and lose every
descriptive, GeoTIFF and GPS tag; hostile ones (the file itself is the EXIF structure: IFD
loops, wild pointers, strips that copy the file or amplify it, later pages beyond the limits)
fail closed by the contract in tests/hostilekit.py."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable

import pytest
from PIL import Image, ImageChops

import factories as F
import veilpix
from hostilekit import (
    EXIF_PTR,
    GPS_PTR,
    MAKE,
    MB,
    PEAK_LIMIT,
    SECRETS,
    TIME_LIMIT,
    assert_lossless,
    check_all,
    describe,
    hostile,
    isolated,
    job,
    plain_tiff,
    put,
    tiff_graft,
    tiff_ifd0,
    tiff_set,
    too_large,
)

# =========================================================================== well-formed
LOSSLESS_CASES: dict[str, Callable[[], bytes]] = {
    "tiff-multipage": lambda: F.tiff(pages=3),
    "tiff-raw": lambda: F.tiff(compression="raw"),
    "tiff-deflate-rgba": lambda: F.tiff(mode="RGBA", compression="tiff_adobe_deflate", pages=1),
}


@pytest.mark.parametrize("name", sorted(LOSSLESS_CASES))
def test_lossless_paths_keep_every_pixel_and_leave_no_metadata(name: str, assert_clean) -> None:  # type: ignore[no-untyped-def]
    assert_lossless(LOSSLESS_CASES[name](), assert_clean)


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


# =========================================================================== hostile
def tiff_hostile_cases() -> dict[str, tuple[bytes, bool]]:
    """(file, must succeed): hostile IFD structures grafted into a good one-page TIFF."""
    base = plain_tiff()
    strip = next(
        struct.unpack_from(tiff_ifd0(base)[0] + "I", raw, 8)[0]
        for raw in tiff_ifd0(base)[2]
        if struct.unpack_from(tiff_ifd0(base)[0] + "H", raw)[0] == 273
    )
    tail = MAKE + bytes(8)
    make = (0x010F, 2, len(MAKE), ("tail", 0))
    cases: dict[str, tuple[bytes, bool]] = {
        "IFD0 next is IFD0": (tiff_graft(base, [make], next_ifd=("ifd0", 0), tail=tail), True),
        "IFD0 -> IFD1 -> IFD0": (
            tiff_graft(
                base, [make], next_ifd=("ifd1", 0), ifd1=True, ifd1_next=("ifd0", 0), tail=tail
            ),
            True,
        ),
        "Exif IFD is IFD0": (
            tiff_graft(base, [make, (EXIF_PTR, 4, 1, ("ifd0", 0))], tail=tail),
            True,
        ),
        "GPS IFD is IFD0": (
            tiff_graft(base, [make, (GPS_PTR, 4, 1, ("ifd0", 0))], tail=tail),
            True,
        ),
        "GPS IFD in the pixels": (
            tiff_graft(base, [make, (GPS_PTR, 4, 1, strip + 5)], tail=tail),
            True,
        ),
        "GPS IFD past the end": (
            tiff_graft(base, [make, (GPS_PTR, 4, 1, 0xFFFFFFF0)], tail=tail),
            True,
        ),
        "Make outside the file": (tiff_graft(base, [(0x010F, 2, 64, 0xFFFFFF00)]), True),
        "next IFD past the end": (tiff_graft(base, [make], next_ifd=0xFFFFFFF0, tail=tail), False),
        "IFD0 declares 65535 entries": (tiff_graft(base, [make], count=65535, tail=tail), False),
        "IFD0 declares 0 entries": (tiff_graft(base, [make], count=0, tail=tail), False),
        "strip offsets 2^32-1 values": (
            tiff_set(base, 273, 4, 0xFFFFFFFF, struct.pack("<I", 8)),
            False,
        ),
        "strip counts 2^32-1 values": (
            tiff_set(base, 279, 4, 0xFFFFFFFF, struct.pack("<I", 8)),
            False,
        ),
    }
    for typ in (1, 2, 3, 4, 5, 7, 12):
        cases[f"Software: type {typ}, 2^32-1 values"] = (
            tiff_graft(base, [make, (0x0131, typ, 0xFFFFFFFF, 8)], tail=tail),
            True,
        )
    for typ in (1, 3):
        cases[f"Software: type {typ}, 2^24 values"] = (
            tiff_graft(base, [make, (0x0131, typ, 1 << 24, 8)], tail=tail),
            True,
        )
    return cases


@hostile
def test_hostile_exif_structures_in_tiff() -> None:
    """In a TIFF the file itself is the EXIF structure: loops must end, wild pointers must not
    reach anything, and a hostile non-structural tag must simply be dropped."""
    cases = tiff_hostile_cases()
    jobs = [
        job(name, data, op) for name, (data, _) in cases.items() for op in ("inspect", "sanitize")
    ]
    problems = []
    for rec in isolated(jobs):
        must = cases[str(rec["label"])][1]
        ok = rec["outcome"] == "ok" or (rec["outcome"] == "error" and not must)
        if rec["op"] == "inspect":
            ok = rec["outcome"] != "escape"
        if not ok:
            problems.append(describe(rec))
        elif rec["op"] == "sanitize" and rec["outcome"] == "ok" and (rec["left"] or rec["same"]):
            problems.append(f"{rec['label']}: output not clean: {rec['left']}")
        if float(rec["seconds"]) >= TIME_LIMIT or int(rec["peak"]) >= PEAK_LIMIT:
            problems.append(describe(rec))
    assert not problems, "\n".join(problems)


@hostile
def test_tiff_negative_strip_counts_do_not_copy_the_file() -> None:
    """StripOffsets/StripByteCounts typed SLONG with negative values: the lossless rewrite
    must not slice ``data[0:-1]`` (the whole input, metadata included) into the output."""
    base = F.tiff(pages=1, compression="raw")  # with metadata: Jane Doe, serial, XMP, GPS
    e = tiff_ifd0(base)[0]
    cases = [
        (
            "count -1",
            tiff_set(
                tiff_set(base, 273, 9, 1, struct.pack(e + "i", 0)),
                279,
                9,
                1,
                struct.pack(e + "i", -1),
            ),
        ),
        (
            "offset -len",
            tiff_set(
                tiff_set(base, 273, 9, 1, struct.pack(e + "i", -len(base))),
                279,
                9,
                1,
                struct.pack(e + "i", len(base) - 1),
            ),
        ),
        (
            "SSHORT count -1",
            tiff_set(
                tiff_set(base, 273, 9, 1, struct.pack(e + "i", 0)),
                279,
                8,
                1,
                struct.pack(e + "hh", -1, 0),
            ),
        ),
    ]
    leaks = [
        f"{o.label}: the output carries {[s for s in SECRETS if s in o.result.data]}"
        for o in check_all(cases)
        if o.result is not None and any(s in o.result.data for s in SECRETS)
    ]
    assert not leaks, "\n".join(leaks)


@hostile
def test_tiff_strips_cannot_amplify_the_input() -> None:
    """Thousands of strips each declared as the whole file: the rewrite copies every one,
    so a 20 KB input becomes a 50 MB output (2^16 strips: 30+ GB)."""
    strips = 2500
    w, h = 64, 48
    e = "<"
    entries = 9
    arrays = 8 + 2 + 12 * entries + 4
    total = arrays + 8 * strips + w * h
    rows = [
        (256, 3, 1, struct.pack(e + "HH", w, 0)),
        (257, 3, 1, struct.pack(e + "HH", h, 0)),
        (258, 3, 1, struct.pack(e + "HH", 8, 0)),
        (259, 3, 1, struct.pack(e + "HH", 1, 0)),
        (262, 3, 1, struct.pack(e + "HH", 1, 0)),
        (273, 4, strips, struct.pack(e + "I", arrays)),
        (277, 3, 1, struct.pack(e + "HH", 1, 0)),
        (278, 3, 1, struct.pack(e + "HH", 1, 0)),
        (279, 4, strips, struct.pack(e + "I", arrays + 4 * strips)),
    ]
    data = b"II*\x00" + struct.pack(e + "IH", 8, entries)
    data += b"".join(struct.pack(e + "HHI", t, ty, c) + v for t, ty, c, v in rows) + bytes(4)
    data += struct.pack(e + f"{strips}I", *[0] * strips) + struct.pack(
        e + f"{strips}I", *[total] * strips
    )
    data += bytes(w * h)
    assert len(data) == total
    (o,) = check_all([("2500 strips of the whole file", data)])
    if o.result is not None:
        assert len(o.result.data) < 4 * len(data) + 65536, (
            f"{len(data)} bytes in, {len(o.result.data)} bytes out"
        )


@functools.cache
def tiff_with_big_pages(*, pages: int, side: int, orientation: int | None = None) -> bytes:
    """A 64x48 first page, then ``pages`` pages of side x side 8-bit gray whose one strip is
    deflated zeros (~1000:1): a tiny file that decodes to side*side bytes per page."""
    from PIL import TiffImagePlugin

    info = TiffImagePlugin.ImageFileDirectory_v2()
    if orientation:
        info[274] = orientation
    out = bytearray(F.encode(F.picture(), "TIFF", tiffinfo=info))
    e, _, _, link = tiff_ifd0(bytes(out))
    co = zlib.compressobj(9)
    row = bytes(side)
    strip = b"".join(co.compress(row) for _ in range(side)) + co.flush()
    strip_at = len(out)
    out += strip
    for _ in range(pages):
        if len(out) & 1:
            out += b"\x00"
        ifd_at = len(out)
        rows = [
            (256, 4, side),
            (257, 4, side),
            (258, 3, 8),
            (259, 3, 8),
            (262, 3, 1),
            (273, 4, strip_at),
            (277, 3, 1),
            (278, 4, side),
            (279, 4, len(strip)),
        ]
        out += struct.pack(e + "H", len(rows))
        for tag, typ, value in rows:
            field = struct.pack(e + "HH", value, 0) if typ == 3 else struct.pack(e + "I", value)
            out += struct.pack(e + "HHI", tag, typ, 1) + field
        struct.pack_into(e + "I", out, link, ifd_at)
        link = len(out)
        out += bytes(4)
    return bytes(out)


@hostile
def test_tiff_later_pages_are_held_to_the_limits() -> None:
    """max_input_pixels is checked on the first page only: a second page of 1e6 x 1e6 (or of
    12000x12000 > max_input_pixels) passes, on the lossless path and on the pixel path."""
    small = tiff_with_big_pages(pages=1, side=16)
    e, _, _, link = tiff_ifd0(small)
    (page2,) = struct.unpack_from(e + "I", small, link)
    # page 2's first two entries are ImageWidth and ImageLength (LONG, value at +8)
    huge = put(put(small, page2 + 2 + 8, 10**6, e + "I"), page2 + 14 + 8, 10**6, e + "I")
    too_large(
        [
            ("TIFF page 2 is 1e6 x 1e6", huge),
            ("TIFF page 2 is 12000x12000", tiff_with_big_pages(pages=1, side=12000)),
        ]
    )


@hostile
def test_tiff_later_pages_do_not_blow_up_memory() -> None:
    """The pixel path (orientation 6) decodes every page after checking only the first:
    two 12000x12000 pages in a 150 KB file cost hundreds of MB."""
    data = tiff_with_big_pages(pages=2, side=12000, orientation=6)
    assert len(data) < 400_000
    (rec,) = isolated([job("TIFF, orientation 6, two 12000x12000 pages", data)])
    assert rec["outcome"] == "error" and rec["type"] in ("ImageTooLarge", "CorruptImage"), describe(
        rec
    )
    assert int(rec["rss_growth"]) < 100 * MB, (
        f"resident memory grew by {int(rec['rss_growth']) // MB} MB"
    )


@pytest.mark.parametrize("orientation", [2, 3, 6])
def test_an_orientation_only_in_xmp_is_applied_to_the_pixels(orientation: int) -> None:
    """A TIFF whose pages carry no orientation tag but whose XMP says tiff:Orientation: the
    picture is turned from its pixels, like any other format (before, the lossless rewrite
    kept it unturned and the report said it was turned, or the output check refused it)."""
    upright = F.picture((64, 48))
    stored = F.stored_for(upright, orientation)
    data = F.encode(stored, "TIFF", tiffinfo={700: F.xmp_packet(orientation=orientation)})
    clean = veilpix.sanitize(data, veilpix.Policy(output_format="png"))
    rep = clean.report
    assert rep.orientation == orientation and not rep.lossless
    assert (rep.width_out, rep.height_out) == upright.size

    out = Image.open(io.BytesIO(clean.data)).convert("RGB")
    assert ImageChops.difference(out, upright).getbbox() is None
    auto = veilpix.sanitize(data)  # the TIFF written as TIFF: the same pixels
    assert Image.open(io.BytesIO(auto.data)).convert("RGB").tobytes() == upright.tobytes()
