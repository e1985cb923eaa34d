"""What veilpix found in an image, what it removed, and what it handed out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from veilpix.formats._registry import extension_for
from veilpix.image._faces import FaceBox
from veilpix.metadata._facts import CATEGORIES, SENSITIVE, Finding, GpsPosition, Removed

__all__ = ["ImageReport", "SanitizedImage"]


@dataclass(frozen=True)
class ImageReport:
    """Everything veilpix knows about one sanitized image. Holds facts, never pixels."""

    format_in: str
    format_out: str
    media_type: str
    width_in: int
    height_in: int
    width_out: int
    height_out: int
    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int
    sha256_in: str
    sha256_out: str
    lossless: bool
    orientation: int
    icc: str
    findings: tuple[Finding, ...] = ()
    removed: tuple[Removed, ...] = ()
    gps: GpsPosition | None = None
    notes: tuple[str, ...] = ()
    faces_checked: bool = False
    faces_found: int = 0
    faces_blurred: int = 0
    face_mode: str = "off"
    face_boxes: tuple[FaceBox, ...] = ()
    face_detector: str = ""
    consent: str | None = None
    downscaled: bool = False

    @property
    def sensitive(self) -> bool:
        """True when the input carried something that identifies a person, place or device."""
        return any(f.sensitive for f in self.findings)

    def categories(self) -> dict[str, int]:
        """Number of findings per category, in report order."""
        counts: dict[str, int] = {}
        for cat in CATEGORIES:
            n = sum(1 for f in self.findings if f.category == cat)
            if n:
                counts[cat] = n
        return counts

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (used by ``--json`` and the audit log)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["findings"] = [
            {
                "category": f.category,
                "label": f.label,
                "value": f.value,
                "source": f.source,
                "sensitive": f.category in SENSITIVE,
            }
            for f in self.findings
        ]
        out["removed"] = [
            {"container": r.container, "detail": r.detail, "size": r.size} for r in self.removed
        ]
        out["gps"] = None if self.gps is None else asdict(self.gps)
        out["notes"] = list(self.notes)
        out["face_boxes"] = [b.to_dict() for b in self.face_boxes]
        out["sensitive"] = self.sensitive
        return out


@dataclass(frozen=True)
class SanitizedImage:
    """The result of :func:`veilpix.sanitize`: clean bytes, their media type and the report."""

    data: bytes = field(repr=False)
    media_type: str
    report: ImageReport

    @property
    def extension(self) -> str:
        """The usual file extension for ``media_type`` (with the dot)."""
        return extension_for(self.media_type) or ".bin"
