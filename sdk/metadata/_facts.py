"""The facts a metadata reader reports: findings by category, a GPS position, and what was
removed from a container. Plain values, no pixels; the image report (veilpix.image._report)
is built from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["CATEGORIES", "SENSITIVE", "Category", "Finding", "GpsPosition", "Removed"]

# Categories of findings, in the order reports list them.
Category = Literal[
    "gps",  # coordinates
    "location",  # place names: city, state, country, sub-location
    "device",
    "serial",
    "owner",
    "timestamp",
    "software",
    "comment",
    "people",
    "thumbnail",
    "c2pa",
    "xmp",
    "iptc",
    "makernotes",
    "icc",
    "other",
]
CATEGORIES: tuple[Category, ...] = get_args(Category)
# Categories that identify a person, a place or a device on their own.
SENSITIVE: frozenset[Category] = frozenset({"gps", "location", "serial", "owner", "people"})


@dataclass(frozen=True)
class GpsPosition:
    """A position recorded in the image (EXIF GPS IFD or XMP)."""

    latitude: float
    longitude: float
    altitude_m: float | None = None
    source: str = "EXIF"

    def __str__(self) -> str:
        ns = "N" if self.latitude >= 0 else "S"
        ew = "E" if self.longitude >= 0 else "W"
        text = f"{abs(self.latitude):.6f}° {ns}, {abs(self.longitude):.6f}° {ew}"
        if self.altitude_m is not None:
            text += f", {self.altitude_m:.0f} m"
        return text


@dataclass(frozen=True)
class Finding:
    """One privacy-relevant fact found in the input image."""

    category: Category
    label: str
    value: str
    source: str

    @property
    def sensitive(self) -> bool:
        return self.category in SENSITIVE


@dataclass(frozen=True)
class Removed:
    """One container element (segment, chunk, block, item, tag) that was not carried over."""

    container: str
    detail: str
    size: int
