"""``Policy``: the one frozen, keyword-only configuration object veilpix runs on.

Metadata stripping is not a setting: it is always on. What the policy controls is how far
veilpix goes to keep the picture (colour profiles, output format, quality) and the limits
that protect the machine from hostile input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from veilpix._errors import ConfigError

if TYPE_CHECKING:
    from veilpix._faces import FaceDetector

__all__ = ["FaceMode", "OutputFormat", "Policy"]

OutputFormat = Literal["auto", "jpeg", "png", "webp"]
FaceMode = Literal["off", "blur", "pixelate", "fill"]

_MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Policy:
    """What veilpix may do to an image and the limits it enforces.

    ``output_format="auto"`` keeps each image's format where that format can be written
    without metadata (JPEG, PNG, WebP, GIF, TIFF, BMP); HEIC/HEIF and AVIF become JPEG, or PNG
    when they have alpha or several frames. ``quality=None`` re-encodes JPEG with the input's
    own quantization tables (so quality matches the source) and other lossy output at 90.
    ``keep_standard_icc`` keeps an sRGB, Display P3 or Adobe RGB profile; any other profile
    is applied to the pixels (converted to sRGB) and dropped, because a camera or device
    profile can identify where a picture came from.

    Every output is verified by scanning it again. Re-encoded outputs are also decoded; a
    lossless strip copies compressed image data bit for bit and is decoded only when
    ``verify_decode=True`` (slower, catches damage that was already in the input).

    Faces: ``faces="blur"`` (Gaussian), ``"pixelate"`` or ``"fill"`` (solid) hides every face
    found, over the detected box grown ``face_padding`` times with a soft elliptical edge.
    ``face_detector`` replaces the built-in CenterFace detector (see ``veilpix.FaceDetector``);
    ``face_rotations=False`` skips the passes that look for faces in sideways and upside-down
    pictures. ``require_consent_for_faces=True`` blocks an image in which faces are left
    unblurred unless the call carries a consent reference. If detection fails for any reason
    the image is blocked, never sent unblurred.

    Size: ``max_side`` and ``max_pixels`` shrink the picture (aspect kept, never enlarged)
    until both hold. ``max_input_pixels`` is different: a safety limit that refuses inputs.
    """

    max_bytes: int = 100 * _MIB
    max_input_pixels: int = 100_000_000
    max_frames: int = 1000
    max_total_pixels: int = 400_000_000
    output_format: OutputFormat = "auto"
    quality: int | None = None
    keep_standard_icc: bool = True
    verify_decode: bool = False
    faces: FaceMode = "off"
    face_padding: float = 1.6
    face_rotations: bool = True
    face_detector: FaceDetector | None = field(default=None, compare=False)
    require_consent_for_faces: bool = False
    max_side: int | None = None
    max_pixels: int | None = None

    @property
    def looks_for_faces(self) -> bool:
        return self.faces != "off" or self.require_consent_for_faces

    @property
    def changes_pixels(self) -> bool:
        """True when the policy can change the picture itself (blur or downscale)."""
        return self.faces != "off" or self.max_side is not None or self.max_pixels is not None

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_input_pixels", "max_frames", "max_total_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(
                    f"Policy.{name} must be a positive whole number, got {value!r}",
                    hint=f"for example Policy({name}={getattr(Policy, name)})",
                )
        if self.output_format not in ("auto", "jpeg", "png", "webp"):
            raise ConfigError(
                f"Policy.output_format must be 'auto', 'jpeg', 'png' or 'webp', "
                f"got {self.output_format!r}",
                hint="'auto' keeps each image's own format where it is safe to",
            )
        if self.quality is not None and (
            isinstance(self.quality, bool)
            or not isinstance(self.quality, int)
            or not 1 <= self.quality <= 100
        ):
            raise ConfigError(
                f"Policy.quality must be None or a whole number from 1 to 100, "
                f"got {self.quality!r}",
                hint="None re-encodes at the quality of the input",
            )
        if self.faces not in ("off", "blur", "pixelate", "fill"):
            raise ConfigError(
                f"Policy.faces must be 'off', 'blur', 'pixelate' or 'fill', got {self.faces!r}",
                hint="'blur' is a strong Gaussian blur; 'fill' paints the face over",
            )
        if (
            isinstance(self.face_padding, bool)
            or not isinstance(self.face_padding, int | float)
            or not 1.0 <= self.face_padding <= 4.0
        ):
            raise ConfigError(
                f"Policy.face_padding must be a number from 1.0 to 4.0, got {self.face_padding!r}",
                hint="1.6 (the default) grows each face box by 30 % on every side",
            )
        if self.face_detector is not None and not callable(
            getattr(self.face_detector, "detect", None)
        ):
            raise ConfigError(
                "Policy.face_detector must have a detect(rgb, *, scale=1.0) method",
                hint="see veilpix.FaceDetector",
            )
        for name in ("max_side", "max_pixels"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 16
            ):
                raise ConfigError(
                    f"Policy.{name} must be None or a whole number of at least 16, got {value!r}",
                    hint="for example Policy(max_side=2048)",
                )
        for name in (
            "keep_standard_icc",
            "verify_decode",
            "face_rotations",
            "require_consent_for_faces",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"Policy.{name} must be True or False, got {getattr(self, name)!r}"
                )

    def replace(self, **changes: object) -> Policy:
        """Return a copy with some fields changed (validated like the constructor)."""
        try:
            return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(str(exc), hint="see help(veilpix.Policy) for the fields") from exc
