"""The picture-changing steps of the pipeline, after orientation and colour: faces, then size.

Faces are looked for at full resolution (before any downscale) on every frame, and hidden
in the frame's own pixels. Any failure while looking raises ``FaceDetectionError``: an image
that was to be blurred is never let through unblurred. Downscaling keeps the aspect ratio,
never enlarges, and uses Lanczos (with Pillow's ``reducing_gap`` for big reductions).
A mask that goes with an image (edit endpoints) gets exactly the image's output geometry,
resampled with nearest-neighbour so its alpha stays as it was drawn, and is never blurred.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from veilpix._errors import ConfigError, ConsentRequired, FaceDetectionError, VeilpixError
from veilpix._policy import Policy
from veilpix.image._blur import anonymize
from veilpix.image._budget import target_size
from veilpix.image._faces import FaceBox, Sweep, default_detector, detect_faces
from veilpix.image._pixels import Picture, flatten, has_alpha, to_8bit_gray

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["FaceFacts", "apply", "fit", "fit_mask", "target_size"]

_REDUCING_GAP = 3.0


@dataclass
class FaceFacts:
    """What the face and size steps did to one picture."""

    looked: bool = False
    found: int = 0
    blurred: int = 0
    boxes: list[FaceBox] = field(default_factory=list)
    detector: str = ""
    mode: str = "off"
    consent: str | None = None
    size_before: tuple[int, int] | None = None
    size_after: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def downscaled(self) -> bool:
        return self.size_before is not None and self.size_before != self.size_after


def _detect_rgb(frame: Image.Image) -> Any:
    """An upright RGB uint8 array of ``frame`` for the detector (alpha over white)."""
    import numpy as np

    if frame.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        frame = to_8bit_gray(frame)
    elif has_alpha(frame) or frame.mode == "PA":
        frame = flatten(frame)
    return np.asarray(frame.convert("RGB"))


def _workable(frame: Image.Image) -> Image.Image:
    """``frame`` in a mode whose pixels can be filtered and resampled directly."""
    if frame.mode in ("L", "LA", "RGB", "RGBA", "I;16"):
        return frame
    if frame.mode == "PA" or "transparency" in frame.info:
        return frame.convert("RGBA")
    if frame.mode == "1":
        return frame.convert("L")
    if frame.mode in ("I", "I;16B", "I;16L", "I;16N"):
        return frame.convert("I;16")
    return frame.convert("RGB")  # P, CMYK, YCbCr, ...


def _hide(frame: Image.Image, boxes: list[FaceBox], policy: Policy) -> Image.Image:
    import numpy as np
    from PIL import Image

    work = _workable(frame)
    arr = np.asarray(work)
    alpha = work.mode in ("LA", "RGBA")
    out = anonymize(arr, boxes, mode=policy.faces, padding=policy.face_padding, alpha=alpha)  # type: ignore[arg-type]
    return Image.fromarray(out, work.mode)


def _look(frame: Image.Image, policy: Policy, orientation_known: bool) -> list[FaceBox]:
    detector = policy.face_detector or default_detector()
    sweep = Sweep() if policy.face_rotations else Sweep(rotations=())
    try:
        return detect_faces(
            _detect_rgb(frame), detector, sweep, orientation_known=orientation_known
        )
    except VeilpixError:
        raise
    except Exception as exc:
        raise FaceDetectionError(f"face detection failed: {type(exc).__name__}: {exc}") from exc


def apply(
    pic: Picture, policy: Policy, *, consent: str | None, orientation_known: bool
) -> FaceFacts:
    """Run the face and size steps on ``pic`` in place (frames already upright, sRGB)."""
    facts = FaceFacts(mode=policy.faces, consent=consent)
    if policy.looks_for_faces:
        detector = policy.face_detector or default_detector()
        facts.looked = True
        facts.detector = str(getattr(detector, "name", type(detector).__name__))
        for i, frame in enumerate(pic.frames):  # in place: one extra frame alive at a time
            boxes = _look(frame, policy, orientation_known)
            if i == 0:
                facts.boxes = boxes
            facts.found += len(boxes)
            hide = bool(boxes) and policy.faces != "off"
            if hide:
                pic.frames[i] = _hide(frame, boxes, policy)
            facts.blurred += len(boxes) if hide else 0
        if len(pic.frames) > 1:
            facts.notes.append(f"faces looked for in all {len(pic.frames)} frames")
        unblurred = facts.found - facts.blurred
        if policy.require_consent_for_faces and unblurred and not consent:
            raise ConsentRequired(
                f"{unblurred} face{'s' if unblurred != 1 else ''} would be sent unblurred "
                "and the call carries no consent reference"
            )
    if policy.max_side is not None or policy.max_pixels is not None:
        w, h = pic.frames[0].size
        size = target_size(w, h, max_side=policy.max_side, max_pixels=policy.max_pixels)
        facts.size_before, facts.size_after = (w, h), size
        if size != (w, h):
            for i, frame in enumerate(pic.frames):  # in place, like the face step
                pic.frames[i] = fit(frame, size)
            facts.notes.append(f"downscaled from {w}x{h} to {size[0]}x{size[1]}")
    return facts


def fit(frame: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``frame`` resampled to ``size`` with Lanczos (palette and bilevel images first become
    RGB(A) and L, so no colour is picked by nearest neighbour)."""
    from PIL import Image

    frame = _workable(frame)
    gap = _REDUCING_GAP if frame.width >= 2 * size[0] and frame.mode != "I;16" else None
    try:
        return frame.resize(size, Image.Resampling.LANCZOS, reducing_gap=gap)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot resample a {frame.mode} image: {exc}") from exc


def fit_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A mask brought to ``size`` with nearest-neighbour: every output pixel is one of the
    mask's own values, so transparent stays transparent and opaque stays opaque."""
    from PIL import Image

    if mask.size == size:
        return mask
    return mask.resize(size, Image.Resampling.NEAREST)
