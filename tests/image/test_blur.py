"""The face filters in numpy (no OpenCV): their strength, their shapes and types, and, where
OpenCV is installed as a dev-only peer, agreement with the OpenCV code they replace."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from veilpix.image import _blur
from veilpix.image._blur import CELLS, SIGMA, anonymize
from veilpix.image._faces import FaceBox

RNG = np.random.default_rng(5)


def cv2_or_skip() -> Any:
    try:
        import cv2
    except ImportError:
        pytest.skip("OpenCV (a dev-only peer) is not installed")
    return cv2


def opencv_filter(patch: np.ndarray, mode: str, size: float) -> np.ndarray:
    """The filter as veilpix computed it with OpenCV (area down, Gaussian, linear up)."""
    cv2 = cv2_or_skip()
    ph, pw = patch.shape[:2]
    sigma = max(1.0, SIGMA * size)
    k = max(1.0, sigma / 4.0)
    if k > 1.5:
        sw, sh = max(1, round(pw / k)), max(1, round(ph / k))
        small = cv2.resize(patch, (sw, sh), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma / k, borderType=cv2.BORDER_REPLICATE)
        out = cv2.resize(small, (pw, ph), interpolation=cv2.INTER_LINEAR)
    else:
        out = cv2.GaussianBlur(patch, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
    return np.asarray(out, dtype=np.float64).reshape(patch.shape)


def smooth(shape: tuple[int, ...], top: int = 255) -> np.ndarray:
    """A picture with detail at every scale: summed sine waves plus a little noise."""
    h, w = shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w))
    for f in (3, 11, 29, 71):
        img += np.sin(x / f + 0.3 * f) * np.cos(y / (f * 1.3))
    img = (img - img.min()) / np.ptp(img)
    img = img.reshape(h, w, *([1] * (len(shape) - 2))) * np.ones(shape[2:])
    img = img * 0.9 + RNG.random(shape) * 0.1
    return np.asarray(img * top, dtype=np.uint16 if top > 255 else np.uint8)


@pytest.mark.parametrize(
    "shape", [(9, 11, 3), (30, 40, 3), (301, 277), (250, 180, 1), (420, 380, 4), (1000, 900, 3)]
)
@pytest.mark.parametrize("top", [255, 65535])
def test_blur_matches_the_opencv_code_it_replaces(shape: tuple[int, ...], top: int) -> None:
    patch = smooth(shape, top)
    for size in (max(shape[:2]) / 1.3, 12.0):
        ours = np.asarray(_blur._filtered(patch, "blur", size), dtype=np.float64)
        theirs = opencv_filter(patch, "blur", size)
        diff = np.abs(ours - theirs) * 255 / top
        # OpenCV rounds its 8-bit intermediates; otherwise the two agree to a fraction of a level
        assert diff.mean() < 0.5 and diff.max() < 3, (size, diff.mean(), diff.max())


def _rise(row: np.ndarray) -> float:
    """Width (px) over which ``row`` goes from 10 % to 90 % of its step."""
    lo, hi = row.min(), row.max()
    norm = (row - lo) / (hi - lo)
    return float(np.argmax(norm >= 0.9) - np.argmax(norm >= 0.1))


@pytest.mark.parametrize("size", [8.0, 20.0, 60.0, 200.0, 800.0])
def test_blur_has_the_strength_of_a_gaussian_of_its_sigma(size: float) -> None:
    """A step edge blurred by a Gaussian of sigma s rises from 10 % to 90 % over 2.56 s."""
    n = max(32, round(size * 1.3))
    step = np.zeros((n, n), np.uint16)
    step[:, n // 2 :] = 60000
    out = _blur._filtered(step, "blur", size)
    sigma = max(1.0, SIGMA * size)
    width = _rise(np.asarray(out[n // 2], dtype=np.float64))
    assert 0.85 * 2.563 * sigma <= width + 1 <= 1.3 * 2.563 * sigma + 2, (width, sigma)


@pytest.mark.parametrize("mode", ["blur", "pixelate", "fill"])
def test_flat_patches_stay_flat(mode: str) -> None:
    """Edges are repeated, weights sum to one: no dark or bright rim, whatever the shape."""
    for shape in ((1, 1, 3), (1, 50), (50, 1, 4), (37, 23, 3), (400, 300)):
        flat = np.full(shape, 40000, np.uint16)
        out = _blur._filtered(flat, mode, max(shape[:2]) * 0.8 + 1)
        assert out.shape == flat.shape
        expected = 0 if mode == "fill" else 40000
        assert np.abs(np.asarray(out) - expected).max() < 0.5  # float32 sums: well below 1


def test_pixelate_shows_cell_means() -> None:
    patch = smooth((100, 73, 3))
    size = 100.0
    cell = max(2, math.ceil(size / CELLS))
    out = np.asarray(_blur._filtered(patch, "pixelate", size))
    for y0 in range(0, 100, cell):
        for x0 in range(0, 73, cell):
            block = out[y0 : y0 + cell, x0 : x0 + cell]
            mean = patch[y0 : y0 + cell, x0 : x0 + cell].reshape(-1, 3).mean(axis=0)
            assert np.allclose(block, mean, atol=1e-3)
    assert len(np.unique(out[:, :, 0])) <= math.ceil(100 / cell) * math.ceil(73 / cell)


def test_hidden_detail_is_gone() -> None:
    """Noise inside a face (the hardest content to hide) loses nearly all its fine detail:
    what a re-identification would need."""
    img = RNG.integers(0, 256, (600, 600, 3), dtype=np.uint8)
    box = FaceBox(200, 180, 400, 420, 0.9)
    for mode in ("blur", "pixelate"):
        out = anonymize(img, [box], mode=mode).astype(np.float64)
        inner = (slice(230, 370), slice(230, 370))

        def detail(a: np.ndarray) -> float:
            lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
            return float(lap.var())

        assert detail(out[inner]) < 0.02 * detail(img[inner].astype(np.float64)), mode


@pytest.mark.parametrize(
    ("shape", "dtype", "alpha"),
    [
        ((120, 100), np.uint8, False),  # L
        ((120, 100), np.uint16, False),  # I;16
        ((120, 100, 2), np.uint8, True),  # LA
        ((120, 100, 3), np.uint8, False),  # RGB
        ((120, 100, 4), np.uint8, True),  # RGBA
        ((120, 100, 3), np.uint16, False),  # 16-bit RGB
        ((120, 100, 4), np.uint16, True),  # 16-bit RGBA
        ((120, 100, 4), np.uint8, False),  # four channels, all hidden
    ],
)
def test_every_mode_and_channel_count(shape: tuple[int, ...], dtype: Any, alpha: bool) -> None:
    top = np.iinfo(dtype).max
    pixels = RNG.integers(0, top, shape, dtype=dtype, endpoint=True)
    box = FaceBox(30, 30, 70, 80, 0.9)
    for mode in ("blur", "pixelate", "fill"):
        out = anonymize(pixels, [box], mode=mode, alpha=alpha)
        assert out.dtype == pixels.dtype and out.shape == pixels.shape
        assert np.array_equal(out[:5, :5], pixels[:5, :5])  # outside the mask: untouched
        if alpha:
            assert np.array_equal(out[..., -1], pixels[..., -1])
        colour = out[..., :-1] if alpha else out
        centre = colour[45:65, 40:60].astype(np.float64)
        if mode == "fill":
            assert centre.max() == 0
        else:
            assert centre.std() < 0.35 * pixels[45:65, 40:60].std()


def test_faces_at_the_picture_edge_and_tiny_faces() -> None:
    pixels = smooth((90, 120, 3))
    boxes = [
        FaceBox(-20, -10, 30, 40, 0.9),
        FaceBox(100, 70, 130, 100, 0.9),
        FaceBox(60, 40, 62, 43, 0.9),
    ]
    for mode in ("blur", "pixelate", "fill"):
        out = anonymize(pixels, boxes, mode=mode)
        assert out.shape == pixels.shape and out.dtype == pixels.dtype
        assert not np.array_equal(out[:20, :20], pixels[:20, :20])
