"""EXIF: read it (piexif first, veilpix's bounded reader when piexif fails) and turn it into
findings. EXIF is only ever read here, for the report and the orientation; it is never
written back into an output image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import piexif

from veilpix._errors import CorruptImage
from veilpix.formats._tiffio import TiffReader
from veilpix.metadata._facts import Category, Finding, GpsPosition

__all__ = ["ExifData", "exif_findings", "parse_exif"]

_IFD_POINTERS = {"Exif": 0x8769, "GPS": 0x8825}
_INTEROP = 0xA005

# (ifd, tag) -> (category, label)
_TAGS: dict[tuple[str, int], tuple[Category, str]] = {
    ("0th", 0x010F): ("device", "Camera make"),
    ("0th", 0x0110): ("device", "Camera model"),
    ("0th", 0xC614): ("device", "Camera model (DNG)"),
    ("0th", 0x013C): ("device", "Host computer"),
    ("0th", 0xC62F): ("serial", "Camera serial number"),
    ("0th", 0x0131): ("software", "Software"),
    ("0th", 0x000B): ("software", "Processing software"),
    ("0th", 0x0132): ("timestamp", "Modified"),
    ("0th", 0x013B): ("owner", "Artist"),
    ("0th", 0x8298): ("owner", "Copyright"),
    ("0th", 0x9C9D): ("owner", "Author (Windows)"),
    ("0th", 0x010E): ("comment", "Image description"),
    ("0th", 0x9C9B): ("comment", "Title (Windows)"),
    ("0th", 0x9C9C): ("comment", "Comment (Windows)"),
    ("0th", 0x9C9E): ("comment", "Keywords (Windows)"),
    ("0th", 0x9C9F): ("comment", "Subject (Windows)"),
    ("0th", 0xC4A5): ("other", "PrintIM block"),
    ("Exif", 0x9003): ("timestamp", "Taken"),
    ("Exif", 0x9004): ("timestamp", "Digitized"),
    ("Exif", 0x9010): ("timestamp", "Time zone offset"),
    ("Exif", 0x9011): ("timestamp", "Time zone offset (taken)"),
    ("Exif", 0xA420): ("serial", "Unique image ID"),
    ("Exif", 0xA430): ("owner", "Camera owner"),
    ("Exif", 0xA431): ("serial", "Body serial number"),
    ("Exif", 0xA433): ("device", "Lens make"),
    ("Exif", 0xA434): ("device", "Lens model"),
    ("Exif", 0xA435): ("serial", "Lens serial number"),
    ("Exif", 0xA436): ("comment", "Image title"),
    ("Exif", 0xA437): ("owner", "Photographer"),
    ("Exif", 0xA438): ("owner", "Image editor"),
    ("Exif", 0xA43B): ("software", "Editing software"),
    ("Exif", 0x9286): ("comment", "User comment"),
    ("GPS", 0x001D): ("timestamp", "GPS date"),
    ("GPS", 0x0011): ("gps", "Camera heading (degrees)"),
    ("GPS", 0x001B): ("gps", "GPS processing method"),
    ("GPS", 0x001C): ("gps", "GPS area information"),
}
_TEXT_LIMIT = 120
_NUMERIC = {("GPS", 0x0011)}
_UCS2 = {("0th", 0x9C9B), ("0th", 0x9C9C), ("0th", 0x9C9D), ("0th", 0x9C9E), ("0th", 0x9C9F)}


@dataclass
class ExifData:
    """The standard IFDs of one EXIF block, values shaped as piexif returns them."""

    ifds: dict[str, dict[int, Any]] = field(default_factory=dict)
    thumbnail: int = 0  # bytes of the IFD1 thumbnail
    makernote: int = 0  # bytes of the MakerNote
    parser: str = "piexif"
    damaged: bool = False

    @property
    def orientation(self) -> int | None:
        value = self.ifds.get("0th", {}).get(0x0112)
        if isinstance(value, tuple) and value:
            value = value[0]
        return value if isinstance(value, int) and 1 <= value <= 8 else None


def parse_exif(blob: bytes) -> ExifData:
    """Read a TIFF-structured EXIF blob. Never raises: a blob that neither piexif nor the
    bounded reader can read yields ``damaged=True`` and whatever could be read."""
    if blob[:2] not in (b"II", b"MM"):
        # piexif.load treats anything else as a *file name*; never hand it such bytes.
        return ExifData(parser="none", damaged=True)
    if not _piexif_safe(blob):
        return _parse_own(blob)
    try:
        raw = piexif.load(blob)
        ifds = {k: dict(raw.get(k) or {}) for k in ("0th", "Exif", "GPS", "Interop", "1st")}
        thumb = raw.get("thumbnail") or b""
        note = ifds["Exif"].get(0x927C, b"")
        return ExifData(ifds, len(thumb), len(note) if isinstance(note, bytes) else 0)
    except Exception:  # noqa: BLE001 - piexif raises anything on malformed input
        return _parse_own(blob)


def _piexif_safe(blob: bytes) -> bool:
    """True when every entry of every IFD piexif would visit lies inside the blob.

    piexif trusts value counts: it builds a struct format of ``count`` items, so a 1 KB blob
    that declares 2**32 values makes it allocate gigabytes. Such blobs go to the bounded
    reader instead."""
    try:
        reader = TiffReader(blob)
        if reader.big:
            return False
        entries0, next_ifd = reader.ifd(reader.first)
        todo = [entries0]
        for tag in (*_IFD_POINTERS.values(), _INTEROP):
            for entries in list(todo):
                if tag in entries:
                    offsets = reader.ints(entries[tag])
                    todo.append(reader.ifd(offsets[0] if offsets else 0)[0])
        if next_ifd:
            todo.append(reader.ifd(next_ifd)[0])
    except CorruptImage:
        return False
    return all(reader.in_bounds(e) for entries in todo for e in entries.values())


def _parse_own(blob: bytes) -> ExifData:
    out = ExifData(parser="veilpix")
    try:
        reader = TiffReader(blob)
        entries0, next_ifd = reader.ifd(reader.first)
    except CorruptImage:
        out.damaged = True
        return out

    def load(name: str, entries: dict[int, Any]) -> None:
        out.ifds[name] = {tag: reader.value(e) for tag, e in entries.items()}

    load("0th", entries0)
    for name, tag in _IFD_POINTERS.items():
        entry = entries0.get(tag)
        if entry is None:
            continue
        offsets = reader.ints(entry)
        try:
            entries, _ = reader.ifd(offsets[0] if offsets else 0)
        except CorruptImage:
            out.damaged = True
            continue
        load(name, entries)
        if name == "Exif":
            note = entries.get(0x927C)
            out.makernote = note.size if note and reader.in_bounds(note) else 0
            interop = entries.get(_INTEROP)
            if interop is not None:
                try:
                    ientries, _ = reader.ifd((reader.ints(interop) or (0,))[0])
                    load("Interop", ientries)
                except CorruptImage:
                    out.damaged = True
    if next_ifd:
        try:
            entries1, _ = reader.ifd(next_ifd)
            load("1st", entries1)
            start = reader.ints(entries1[0x0201])[0] if 0x0201 in entries1 else 0
            length = reader.ints(entries1[0x0202])[0] if 0x0202 in entries1 else 0
            if start and 0 < length <= len(blob) - start:
                out.thumbnail = length
        except (CorruptImage, IndexError):
            out.damaged = True
    return out


def text(value: Any, *, ucs2: bool = False) -> str:
    """Render an EXIF value for a report line (bounded, printable)."""
    if (
        ucs2
        and isinstance(value, tuple)
        and all(isinstance(x, int) and 0 <= x < 256 for x in value)
    ):
        value = bytes(value).decode("utf-16-le", "replace")
    elif isinstance(value, bytes):
        raw = value
        if raw[:8] in (b"ASCII\x00\x00\x00", b"UNICODE\x00", b"JIS\x00\x00\x00\x00\x00", bytes(8)):
            enc = "utf-16" if raw.startswith(b"UNICODE") else "utf-8"
            value = raw[8:].decode(enc, "replace")
        elif ucs2:
            value = raw.decode("utf-16-le", "replace")
        else:
            value = raw.decode("utf-8", "replace")
        value = value.replace("\x00", " ")
    elif isinstance(value, tuple) and len(value) == 2 and all(isinstance(x, int) for x in value):
        value = f"{value[0] / value[1]:g}" if value[1] else "?"
    s = " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())
    return s if len(s) <= _TEXT_LIMIT else s[: _TEXT_LIMIT - 1] + "…"


def _rational(v: Any) -> float | None:
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return v[0] / v[1] if v[1] else None
    if isinstance(v, int | float):
        return float(v)
    return None


def _dms(v: Any) -> float | None:
    if not isinstance(v, tuple) or not v:
        return None
    if isinstance(v[0], int):  # a single rational
        return _rational(v)
    parts = [_rational(x) for x in v[:3]]
    if any(p is None for p in parts):
        return None
    deg, minutes, seconds = ([*parts, 0.0, 0.0])[:3]
    assert deg is not None and minutes is not None and seconds is not None
    return deg + minutes / 60 + seconds / 3600


def _ref(v: Any) -> str:
    return text(v)[:1].upper() if v is not None else ""


def gps_position(gps: dict[int, Any]) -> GpsPosition | None:
    lat, lon = _dms(gps.get(2)), _dms(gps.get(4))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    if _ref(gps.get(1)) == "S":
        lat = -lat
    if _ref(gps.get(3)) == "W":
        lon = -lon
    alt = _rational(gps.get(6))
    if alt is not None and gps.get(5) in (1, b"\x01", (1,)):
        alt = -alt
    return GpsPosition(lat, lon, alt, "EXIF GPS")


def exif_findings(ex: ExifData, source: str) -> tuple[list[Finding], GpsPosition | None]:
    """Findings for one parsed EXIF block found in ``source`` (e.g. "JPEG APP1")."""
    found: list[Finding] = []
    where = f"EXIF in {source}"
    gps = gps_position(ex.ifds.get("GPS", {}))
    if gps is not None:
        found.append(Finding("gps", "GPS position", str(gps), where))
    elif ex.ifds.get("GPS"):
        found.append(Finding("gps", "GPS block", f"{len(ex.ifds['GPS'])} tags", where))
    for (ifd, tag), (category, label) in _TAGS.items():
        value = ex.ifds.get(ifd, {}).get(tag)
        if value is None or value in (b"", ()):
            continue
        if (ifd, tag) in _NUMERIC:
            number = _rational(value)
            rendered = f"{number:g}" if number is not None else ""
        else:
            rendered = text(value, ucs2=(ifd, tag) in _UCS2)
        if rendered:
            found.append(Finding(category, label, rendered, where))
    if ex.makernote:
        make = text(ex.ifds.get("0th", {}).get(0x010F, b"")) or "unknown maker"
        found.append(
            Finding(
                "makernotes",
                "Maker notes",
                f"{make}, {ex.makernote} bytes (may hold serial numbers and settings)",
                where,
            )
        )
    if ex.thumbnail:
        found.append(Finding("thumbnail", "EXIF thumbnail (IFD1)", f"{ex.thumbnail} bytes", where))
    if ex.damaged:
        found.append(Finding("other", "Damaged EXIF", "partly unreadable; removed whole", where))
    return found, gps
