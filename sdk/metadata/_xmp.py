"""XMP: findings for the report, read with bounded regular expressions.

XMP is never parsed as XML here: packets from the wild are often broken, and an XML parser on
hostile input invites entity expansion. The expressions below read attribute and element
forms of the properties that matter for privacy; the packet itself is always removed whole.
"""

from __future__ import annotations

import itertools
import re

from veilpix.metadata._facts import Category, Finding, GpsPosition

__all__ = ["decode_xmp", "xmp_findings", "xmp_orientation"]

_MAX = 2 * 1024 * 1024  # characters of a packet analysed for the report (all of it is removed)
_HITS = 64  # occurrences of one property looked at
_SPAN = 64 * 1024  # characters between an opening and its closing tag
_NS = re.compile(r'xmlns:([A-Za-z_][\w.-]{0,64}+)\s*+=\s*+["\']([^"\'<>]{0,1024}+)["\']')
_TAG = re.compile(r"<[^<>]{0,1024}+>")
_ATTR = re.compile(r'\s*+=\s*+(?:"([^"]{0,4096}+)"|\'([^\']{0,4096}+)\')')
_OPEN_REST = re.compile(r"(?:\s[^<>]{0,1024}+)?+>")

# property -> (category, label)
_PROPS: dict[str, tuple[Category, str]] = {
    "photoshop:City": ("location", "City"),
    "photoshop:State": ("location", "State / province"),
    "photoshop:Country": ("location", "Country"),
    "Iptc4xmpCore:Location": ("location", "Location"),
    "Iptc4xmpCore:CountryCode": ("location", "Country code"),
    "Iptc4xmpExt:LocationShown": ("location", "Location shown"),
    "Iptc4xmpExt:LocationCreated": ("location", "Location created"),
    "tiff:Make": ("device", "Camera make"),
    "tiff:Model": ("device", "Camera model"),
    "aux:Lens": ("device", "Lens"),
    "exifEX:LensModel": ("device", "Lens model"),
    "aux:SerialNumber": ("serial", "Camera serial number"),
    "aux:LensSerialNumber": ("serial", "Lens serial number"),
    "exifEX:BodySerialNumber": ("serial", "Body serial number"),
    "exifEX:LensSerialNumber": ("serial", "Lens serial number"),
    "exif:ImageUniqueID": ("serial", "Unique image ID"),
    "xmpMM:DocumentID": ("other", "Document ID"),
    "xmpMM:OriginalDocumentID": ("other", "Original document ID"),
    "dc:creator": ("owner", "Creator"),
    "dc:rights": ("owner", "Rights"),
    "xmpRights:Owner": ("owner", "Rights owner"),
    "photoshop:AuthorsPosition": ("owner", "Author position"),
    "photoshop:Credit": ("owner", "Credit"),
    "Iptc4xmpCore:CiEmailWork": ("owner", "Contact e-mail"),
    "Iptc4xmpCore:CiTelWork": ("owner", "Contact phone"),
    "Iptc4xmpCore:CiAdrExtadr": ("owner", "Contact address"),
    "exifEX:CameraOwnerName": ("owner", "Camera owner"),
    "Iptc4xmpExt:PersonInImage": ("people", "Person in image"),
    "MPReg:PersonDisplayName": ("people", "Person tagged"),
    "mwg-rs:Name": ("people", "Named region"),
    "xmp:CreateDate": ("timestamp", "Created"),
    "xmp:ModifyDate": ("timestamp", "Modified"),
    "xmp:MetadataDate": ("timestamp", "Metadata date"),
    "photoshop:DateCreated": ("timestamp", "Date created"),
    "exif:DateTimeOriginal": ("timestamp", "Taken"),
    "xmp:CreatorTool": ("software", "Creator tool"),
    "dc:title": ("comment", "Title"),
    "dc:description": ("comment", "Description"),
    "dc:subject": ("comment", "Keywords"),
    "dcterms:provenance": ("c2pa", "Provenance (C2PA manifest URL)"),
    "GCamera:MicroVideo": ("thumbnail", "Motion photo video"),
    "GCamera:MotionPhoto": ("thumbnail", "Motion photo video"),
    "hdrgm:Version": ("thumbnail", "HDR gain map"),
    "xmpNote:HasExtendedXMP": ("xmp", "Extended XMP"),
}
_REGION_MARKERS = {
    "mwg-rs:Regions": "Face / person regions (MWG)",
    "MP:RegionInfo": "Person regions (Microsoft Photo)",
    "Iptc4xmpExt:ImageRegion": "Image regions (IPTC)",
}


def _occurrences(text: str, needle: str) -> list[int]:
    """Offsets just after the first ``_HITS`` occurrences of ``needle`` (linear time)."""
    out: list[int] = []
    at = text.find(needle)
    while at >= 0 and len(out) < _HITS:
        out.append(at + len(needle))
        at = text.find(needle, at + 1)
    return out


def _elements(text: str, name: str) -> list[str]:
    """Inner text of up to ``_HITS`` ``<name ...>...</name>`` elements. Every step is bounded
    (possessive patterns, bounded searches), so broken or hostile packets stay linear."""
    close = f"</{name}>"
    found = []
    for start in _occurrences(text, "<" + name):
        head = _OPEN_REST.match(text, start)
        if head is None:
            continue
        end = text.find(close, head.end(), head.end() + _SPAN)
        if end >= 0:
            found.append(text[head.end() : end])
    return found


def _values(xmp: str, prop: str) -> list[str]:
    """Values of ``prop`` in attribute form (prop="v") and element form, list items split."""
    if prop not in xmp:
        return []
    found = []
    for at in _occurrences(xmp, prop):
        m = _ATTR.match(xmp, at)
        if m is not None:
            found.append(m.group(1) if m.group(1) is not None else m.group(2))
    for inner in _elements(xmp, prop):
        parts = _elements(inner, "rdf:li") or [inner]
        found.extend(" ".join(_TAG.sub(" ", x).split()) for x in parts)
    return [v for v in (x.strip() for x in found) if v]


def _coord(value: str) -> float | None:
    """XMP GPS coordinate: "DDD,MM.mmk", "DDD,MM,SSk" or a signed decimal."""
    v = value.strip()
    if not v:
        return None
    sign = -1.0 if v[-1:].upper() in ("S", "W") else 1.0
    body = v[:-1] if v[-1:].upper() in ("N", "S", "E", "W") else v
    try:
        parts = [float(x) for x in body.split(",")]
    except ValueError:
        return None
    deg = (
        parts[0]
        + (parts[1] / 60 if len(parts) > 1 else 0)
        + (parts[2] / 3600 if len(parts) > 2 else 0)
    )
    return sign * deg


def decode_xmp(blob: bytes) -> str:
    """The packet as text: XMP may be UTF-8, UTF-16 or UTF-32 (with or without a BOM)."""
    raw = blob[:_MAX]
    for bom, enc in (
        (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe\x00\x00", "utf-32-le"),
        (b"\x00\x00\xfe\xff", "utf-32-be"),
        (b"\xfe\xff", "utf-16-be"),
        (b"\xff\xfe", "utf-16-le"),
    ):
        if raw.startswith(bom):
            return raw[len(bom) :].decode(enc, "replace")
    if raw[:2] == b"\x00<":
        return raw.decode("utf-16-be", "replace")
    if raw[:2] == b"<\x00":
        return raw.decode("utf-16-le", "replace")
    return raw.decode("utf-8", "replace")


def xmp_orientation(blob: bytes) -> int | None:
    """tiff:Orientation from an XMP packet, as Pillow reads it."""
    m = re.search(r'tiff:Orientation(?:="|>)([0-9])', decode_xmp(blob))
    if m is None:
        return None
    value = int(m.group(1))
    return value if 1 <= value <= 8 else None


def xmp_findings(blob: bytes, source: str) -> tuple[list[Finding], GpsPosition | None]:
    """Findings for one XMP packet found in ``source``."""
    where = f"XMP in {source}"
    xmp = decode_xmp(blob)
    found: list[Finding] = []
    namespaces = itertools.islice(_NS.finditer(xmp), 256)
    prefixes = sorted({m.group(1) for m in namespaces} - {"x", "rdf"})
    found.append(
        Finding(
            "xmp",
            "XMP packet",
            f"{len(blob)} bytes; namespaces: {', '.join(prefixes) or '-'}",
            where,
        )
    )
    gps = None
    lat, lon = _values(xmp, "exif:GPSLatitude"), _values(xmp, "exif:GPSLongitude")
    if lat and lon:
        la, lo = _coord(lat[0]), _coord(lon[0])
        if la is not None and lo is not None and -90 <= la <= 90 and -180 <= lo <= 180:
            gps = GpsPosition(la, lo, None, "XMP")
            found.append(Finding("gps", "GPS position", str(gps), where))
    for prop, (category, label) in _PROPS.items():
        values = _values(xmp, prop)
        if values:
            shown = "; ".join(dict.fromkeys(values))
            if len(shown) > 120:
                shown = shown[:119] + "…"
            found.append(Finding(category, label, shown, where))
    for marker, label in _REGION_MARKERS.items():
        if marker in xmp:
            found.append(Finding("people", label, "regions that locate faces or people", where))
    return found, gps
