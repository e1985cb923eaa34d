"""Downscaling (max_side, max_pixels) and masks that travel with an image."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import factories
import veilpix
from veilpix.image._budget import target_size


@given(
    st.integers(1, 20000),
    st.integers(1, 20000),
    st.one_of(st.none(), st.integers(16, 8000)),
    st.one_of(st.none(), st.integers(256, 50_000_000)),
)
def test_target_size(w: int, h: int, max_side: int | None, max_pixels: int | None) -> None:
    tw, th = target_size(w, h, max_side=max_side, max_pixels=max_pixels)
    assert tw <= w and th <= h  # never enlarged
    if max_side is not None:
        assert max(tw, th) <= max(max_side, 1) or (tw, th) == (1, 1) or min(tw, th) == 1
    if max_pixels is not None and (tw, th) != (w, h):
        assert tw * th <= max_pixels
    if (tw, th) != (w, h) and min(tw, th) > 20:
        assert abs(tw / th - w / h) / (w / h) < 0.05  # aspect kept


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


@pytest.mark.parametrize(
    ("fmt", "make"),
    [
        ("JPEG", lambda: factories.jpeg(upright=factories.picture((1200, 800)), orientation=6)),
        ("PNG", lambda: factories.png(im=factories.picture((1200, 800), "RGBA"))),
        ("WEBP", lambda: factories.encode(factories.picture((1200, 800)), "WEBP")),
    ],
)
def test_downscale_keeps_aspect_and_is_clean(fmt: str, make, assert_clean) -> None:  # type: ignore[no-untyped-def]
    out = veilpix.sanitize(make(), veilpix.Policy(max_side=300))
    w, h = _size(out.data)
    assert max(w, h) == 300 and out.report.downscaled
    assert (w, h) == (300, 200)  # the JPEG, stored sideways, comes out upright too
    assert_clean(out.data, "out." + fmt.lower())


def test_downscale_never_enlarges_and_stays_lossless() -> None:
    data = factories.jpeg(upright=factories.picture((320, 240)))
    out = veilpix.sanitize(data, veilpix.Policy(max_side=4096, max_pixels=10_000_000))
    assert _size(out.data) == (320, 240)
    assert out.report.lossless and not out.report.downscaled


def test_max_pixels_and_animation_frames() -> None:
    frames = [factories.picture((400, 300)), factories.picture((400, 300)).rotate(180)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    out = veilpix.sanitize(buf.getvalue(), veilpix.Policy(max_pixels=30_000))
    w, h = _size(out.data)
    assert w * h <= 30_000 and abs(w / h - 4 / 3) < 0.05
    assert out.report.frames_out == 2


def _mask(size: tuple[int, int], hole: tuple[int, int, int, int]) -> bytes:
    m = Image.new("RGBA", size, (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), hole)
    buf = io.BytesIO()
    m.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("drawn_on", ["upright", "stored"])
def test_mask_gets_the_image_geometry(drawn_on: str) -> None:
    """Image 800x600 stored sideways (orientation 6), downscaled to 400 px: the mask ends up
    at the output size, its hole where it was drawn, and alpha only 0 or 255."""
    image = veilpix.sanitize(
        factories.jpeg(upright=factories.picture((600, 800)), orientation=6),
        veilpix.Policy(max_side=400, faces="off"),
    )
    assert (image.report.width_out, image.report.height_out) == (300, 400)
    if drawn_on == "upright":  # the hole covers the upright picture's top-left quarter
        mask = _mask((600, 800), (0, 0, 300, 400))
    else:  # the same region, drawn on the stored (unturned, 800x600) picture
        stored = factories.stored_for(
            Image.open(io.BytesIO(_mask((600, 800), (0, 0, 300, 400)))), 6
        )
        buf = io.BytesIO()
        stored.save(buf, "PNG")
        mask = buf.getvalue()
    out = veilpix.sanitize_mask(mask, image, veilpix.Policy(faces="blur"))
    assert out.media_type == "image/png"
    with Image.open(io.BytesIO(out.data)) as im:
        assert im.size == (300, 400)
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
    assert set(np.unique(alpha)) <= {0, 255}
    assert (
        alpha[:200, :150].max() == 0 and alpha[200:, :].min() == 255 and alpha[:, 150:].min() == 255
    )


def test_mask_of_the_wrong_size_is_refused() -> None:
    image = veilpix.sanitize(factories.jpeg(upright=factories.picture((640, 480))))
    with pytest.raises(veilpix.ConfigError, match="same size"):
        veilpix.sanitize_mask(_mask((100, 100), (0, 0, 10, 10)), image)


def _tiff16() -> bytes:
    """A 16-bit RGB TIFF (one uncompressed strip) with an Artist tag."""
    up = np.asarray(factories.picture((40, 24)), dtype=np.uint16) * 257
    h, w = up.shape[:2]
    tags = {
        256: (3, 1, struct.pack("<H", w)),
        257: (3, 1, struct.pack("<H", h)),
        258: (3, 3, struct.pack("<3H", 16, 16, 16)),
        259: (3, 1, struct.pack("<H", 1)),
        262: (3, 1, struct.pack("<H", 2)),
        277: (3, 1, struct.pack("<H", 3)),
        278: (3, 1, struct.pack("<H", h)),
        315: (2, 9, factories.SECRET.encode() + b"\x00"),
    }
    return factories.tiff_file(tags, up.astype("<u2").tobytes())


def test_sixteen_bit_downscale_goes_through_eight_bits() -> None:
    """Resizing a 16-bit picture works on its 8-bit pixels (the report says so)."""
    for data in (factories.png16(orientation=6)[0], _tiff16()):
        out = veilpix.sanitize(data, veilpix.Policy(max_side=20))
        assert max(out.report.width_out, out.report.height_out) == 20
        assert "16-bit image processed at 8 bits for face blurring / resizing" in out.report.notes
        assert factories.SECRET.encode() not in out.data


@pytest.mark.parametrize(
    "make",
    [
        lambda: factories.jpeg(cmyk=True),
        lambda: factories.png16()[0],
        lambda: factories.png16(alpha=True)[0],
        _tiff16,
        factories.gif,
        factories.tiff,
        factories.bmp,
        lambda: factories.heic(orientation=6),
        lambda: factories.avif(frames=3, alpha=True),
        factories.webp,
        lambda: factories.encode(factories.picture((1, 1)), "PNG"),
        lambda: factories.encode(factories.picture((64, 48), "P"), "PNG"),
        lambda: factories.encode(factories.picture((64, 48), "1"), "PNG"),
    ],
    ids=[
        "cmyk",
        "png16",
        "png16a",
        "tiff16",
        "gif",
        "tiff",
        "bmp",
        "heic",
        "avif",
        "webp",
        "1x1",
        "P",
        "bilevel",
    ],
)
def test_faces_and_downscale_on_every_format(make, assert_clean) -> None:  # type: ignore[no-untyped-def]
    try:
        data = make()
    except (ImportError, OSError) as exc:  # HEIC/AVIF encoders are optional
        pytest.skip(str(exc))
    out = veilpix.sanitize(data, veilpix.Policy(faces="blur", max_side=32))
    assert max(out.report.width_out, out.report.height_out) <= 32
    assert out.report.faces_checked
    assert_clean(out.data, "out" + out.extension)
