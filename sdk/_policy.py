"""``Policy``: the one frozen, keyword-only configuration object veilpix runs on.

Metadata stripping is not a setting: it is always on. What the policy controls is how far
veilpix goes to keep the picture (colour profiles, output format, quality) and the limits
that protect the machine from hostile input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from veilpix._errors import ConfigError

__all__ = ["OutputFormat", "Policy"]

OutputFormat = Literal["auto", "jpeg", "png", "webp"]

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
    """

    max_bytes: int = 100 * _MIB
    max_pixels: int = 100_000_000
    max_frames: int = 1000
    max_total_pixels: int = 400_000_000
    output_format: OutputFormat = "auto"
    quality: int | None = None
    keep_standard_icc: bool = True
    verify_decode: bool = False

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_frames", "max_total_pixels"):
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
        for name in ("keep_standard_icc", "verify_decode"):
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
