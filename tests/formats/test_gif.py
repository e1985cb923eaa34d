"""GIF: well-formed files (animated, or with data after the trailer) keep every pixel and
lose every comment and extension that is not structure; hostile ones (sub-blocks running past
the end, a frame larger than its screen, payloads hidden in extra sub-blocks) fail closed by
the contract in tests/hostilekit.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import factories as F
import veilpix
from hostilekit import (
    PAYLOAD,
    assert_lossless,
    assert_payload_dropped,
    check_all,
    hostile,
    sample,
    tiny_gif,
    too_large,
)

# =========================================================================== well-formed
LOSSLESS_CASES: dict[str, Callable[[], bytes]] = {
    "gif-animated": F.gif,
    "gif-single-trailer": lambda: F.gif(frames=1, trailer=b"after the trailer"),
}


@pytest.mark.parametrize("name", sorted(LOSSLESS_CASES))
def test_lossless_paths_keep_every_pixel_and_leave_no_metadata(name: str, assert_clean) -> None:  # type: ignore[no-untyped-def]
    assert_lossless(LOSSLESS_CASES[name](), assert_clean)


# =========================================================================== hostile
def gif_blocks(data: bytes) -> list[tuple[str, int, int]]:
    """(kind, start, first sub-block) of each block after the header; for an image the
    first sub-block follows the LZW minimum code size."""
    flags = data[10]
    p = 13 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)
    out = []
    while p < len(data) and data[p] != 0x3B:
        if data[p] == 0x2C:
            local = data[p + 9]
            lzw = p + 10 + ((3 << ((local & 7) + 1)) if local & 0x80 else 0)
            out.append(("image", p, lzw + 1))
            q = lzw + 1
        else:
            out.append((f"extension {data[p + 1]:02x}", p, p + 2))
            q = p + 2
        while data[q]:
            q += 1 + data[q]
        p = q + 1
    return out


@hostile
def test_gif_sub_blocks_running_past_the_end() -> None:
    data = sample("gif")
    blocks = gif_blocks(data)
    comment = next(s for k, s, _ in blocks if k == "extension fe")
    image, first = next((s, b) for k, s, b in blocks if k == "image")
    cases = [
        ("comment sub-block 255 at the end", data[: comment + 2] + b"\xff" + b"x" * 10),
        ("comment without terminator", data[: comment + 2] + b"\x05hello"),
        ("image data sub-block past the end", data[:first] + b"\xff" + b"\x00" * 20),
        ("image descriptor cut", data[: image + 5]),
        ("huge global colour table", data[:10] + bytes([data[10] | 0x87]) + data[11:40]),
        ("huge local colour table", data[: image + 9] + b"\x87" + data[image + 10 : image + 40]),
        ("application extension size 255", data[:comment] + b"\x21\xff\xff" + b"A" * 20),
        ("plain text extension cut", data[:comment] + b"\x21\x01\xff\x00"),
        ("extension right at the end", data[:comment] + b"\x21"),
        ("LZW minimum code size 255", data[: first - 1] + b"\xff" + data[first:]),
        ("LZW minimum code size 0", data[: first - 1] + b"\x00" + data[first:]),
    ]
    check_all(cases)
    check_all(cases, veilpix.Policy(verify_decode=True))
    check_all(cases, veilpix.Policy(output_format="png"))


@hostile
@pytest.mark.parametrize(
    "policy",
    [
        veilpix.Policy(),
        veilpix.Policy(verify_decode=True),
        veilpix.Policy(output_format="png"),
    ],
    ids=["default", "verify_decode", "to-png"],
)
def test_gif_frame_larger_than_its_screen(policy: veilpix.Policy) -> None:
    """A 1x1 logical screen with a 65535x65535 image descriptor: the frame is what a decoder
    allocates, so the limits must apply to it (Pillow grows the canvas to fit the frame)."""
    too_large(
        [
            ("GIF 1x1 screen, 65535x65535 frame", tiny_gif((1, 1), (65535, 65535))),
            ("GIF 1x1 screen, 12000x12000 frame", tiny_gif((1, 1), (12000, 12000))),
        ],
        policy,
    )


def smuggling_cases() -> dict[str, bytes]:
    gif = F.gif(frames=2, comment=False, xmp=False, plaintext=False)
    loop = gif.index(b"NETSCAPE2.0") + 11 + 4  # after the loop sub-block
    gce = gif.index(b"\x21\xf9") + 7  # after the graphic control sub-block
    return {
        "GIF loop extension with an extra sub-block": gif[:loop]
        + bytes([len(PAYLOAD)])
        + PAYLOAD
        + gif[loop:],
        "GIF graphic control with an extra sub-block": gif[:gce]
        + bytes([len(PAYLOAD)])
        + PAYLOAD
        + gif[gce:],
    }


@hostile
@pytest.mark.parametrize("name", list(smuggling_cases()))
def test_structure_cannot_smuggle_data(name: str) -> None:
    """What survives a lossless strip is structure a decoder needs. A hostile writer can hide
    a tracking ID inside such an element (an oversized pHYs or VP8X, an extra GIF sub-block,
    a 'standard' colour profile with a payload); the output must not carry it."""
    assert_payload_dropped(name, smuggling_cases()[name])
