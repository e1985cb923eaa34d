"""Turn a container scan into report findings, the GPS position and the orientation."""

from __future__ import annotations

from dataclasses import dataclass, field

from veilpix.formats._scan import STRUCTURE, Scan
from veilpix.metadata._exif import exif_findings, parse_exif
from veilpix.metadata._facts import CATEGORIES, Category, Finding, GpsPosition, Removed
from veilpix.metadata._icc import describe, is_standard
from veilpix.metadata._iptc import iim_findings, irb_findings
from veilpix.metadata._xmp import xmp_findings, xmp_orientation

__all__ = ["Facts", "collect", "removed_parts"]

_TEXT_KEYS: tuple[tuple[str, Category], ...] = (
    ("gps", "gps"),
    ("latitude", "gps"),
    ("longitude", "gps"),
    ("location", "location"),
    ("city", "location"),
    ("country", "location"),
    ("serial", "serial"),
    ("author", "owner"),
    ("artist", "owner"),
    ("copyright", "owner"),
    ("owner", "owner"),
    ("creator", "owner"),
    ("make", "device"),
    ("model", "device"),
    ("source", "device"),
    ("date", "timestamp"),
    ("time", "timestamp"),
    ("software", "software"),
    ("comment", "comment"),
    ("description", "comment"),
    ("title", "comment"),
)


@dataclass
class Facts:
    findings: list[Finding] = field(default_factory=list)
    gps: GpsPosition | None = None
    orientation: int | None = None  # from EXIF, else XMP (as Pillow reads it)
    icc_description: str | None = None


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def collect(scan: Scan) -> Facts:
    """All findings of a scan, in a stable order."""
    facts = Facts()
    fmt = scan.format
    exif_blobs = list(scan.exif)
    xmp_blobs = list(scan.xmp)
    for irb in scan.irb:
        found, exif, xmp = irb_findings(irb, fmt)
        facts.findings.extend(found)
        exif_blobs.extend(exif)
        xmp_blobs.extend(xmp)
    for index, blob in enumerate(exif_blobs):
        ex = parse_exif(blob)
        found, gps = exif_findings(ex, fmt)
        facts.findings.extend(found)
        facts.gps = facts.gps or gps
        if index == 0 and ex.orientation is not None:
            facts.orientation = ex.orientation
    for blob in xmp_blobs:
        found, gps = xmp_findings(blob, fmt)
        facts.findings.extend(found)
        facts.gps = facts.gps or gps
        if facts.orientation is None:
            facts.orientation = xmp_orientation(blob)
    for blob in scan.iptc:
        facts.findings.extend(iim_findings(blob, fmt))
    for source, text in scan.comments:
        facts.findings.append(Finding("comment", "Comment", _short(text) or "(empty)", source))
    for source, key, text in scan.texts:
        lowered = key.lower()
        category: Category = next((c for k, c in _TEXT_KEYS if k in lowered), "other")
        facts.findings.append(Finding(category, key, _short(text) or "(empty)", source))
    for source, value in scan.timestamps:
        facts.findings.append(Finding("timestamp", "Last modified", value, source))
    for what, size in scan.thumbnails:
        facts.findings.append(Finding("thumbnail", what, f"{size} bytes" if size else "", fmt))
    for what in scan.c2pa:
        facts.findings.append(Finding("c2pa", "C2PA / content credentials", what, fmt))
    if scan.extra.get("geotiff"):
        facts.findings.append(Finding("gps", "GeoTIFF georeferencing", "map coordinates", fmt))
    if scan.icc is not None:
        desc = describe(scan.icc)
        facts.icc_description = desc
        if not is_standard(scan.icc):  # a standard working space says nothing about the source
            facts.findings.append(
                Finding(
                    "icc",
                    "Device colour profile",
                    f"{desc or 'unnamed'} ({len(scan.icc)} bytes)",
                    fmt,
                )
            )
    order = {c: i for i, c in enumerate(CATEGORIES)}
    facts.findings.sort(key=lambda f: order.get(f.category, len(order)))
    return facts


def removed_parts(scan: Scan, *, icc_kept: bool) -> list[Removed]:
    """Container elements of the input that are not in the output."""
    out = []
    for part in scan.parts:
        if part.kind == STRUCTURE or (part.kind == "icc" and icc_kept):
            continue
        out.append(Removed(f"{scan.format} {part.name}", part.detail or part.kind, part.length))
    return out
