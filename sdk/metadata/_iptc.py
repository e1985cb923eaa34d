"""Photoshop image resource blocks (IRB) and IPTC-IIM: findings for the report."""

from __future__ import annotations

import struct

from veilpix._words import plural
from veilpix.metadata._facts import Category, Finding

__all__ = ["iim_findings", "irb_findings", "split_irb"]

# Record 2 (application) datasets -> (category, label)
_DATASETS: dict[int, tuple[Category, str]] = {
    5: ("comment", "Object name"),
    25: ("comment", "Keywords"),
    55: ("timestamp", "Date created"),
    60: ("timestamp", "Time created"),
    62: ("timestamp", "Digital creation date"),
    65: ("software", "Originating program"),
    80: ("owner", "By-line (creator)"),
    85: ("owner", "By-line title"),
    90: ("location", "City"),
    92: ("location", "Sub-location"),
    95: ("location", "Province / state"),
    100: ("location", "Country code"),
    101: ("location", "Country"),
    103: ("other", "Transmission reference"),
    105: ("comment", "Headline"),
    110: ("owner", "Credit"),
    115: ("owner", "Source"),
    116: ("owner", "Copyright notice"),
    118: ("owner", "Contact"),
    120: ("comment", "Caption"),
    122: ("owner", "Caption writer"),
}
_RESOURCES = {
    0x0404: "IPTC-IIM",
    0x0409: "thumbnail",
    0x040C: "thumbnail",
    0x0422: "EXIF",
    0x0424: "XMP",
    0x040F: "ICC profile",
}


def split_irb(blob: bytes) -> list[tuple[int, bytes]]:
    """(resource id, data) for each 8BIM resource in an image resource block (bounded)."""
    out: list[tuple[int, bytes]] = []
    p, n = 0, len(blob)
    while p + 12 <= n and blob[p : p + 4] in (b"8BIM", b"MeSa", b"PHUT", b"AgHg", b"DCSR"):
        rid = struct.unpack_from(">H", blob, p + 4)[0]
        name_len = blob[p + 6]
        q = p + 6 + ((name_len + 2) & ~1)  # Pascal name, padded to an even length
        if q + 4 > n:
            break
        (size,) = struct.unpack_from(">I", blob, q)
        start = q + 4
        end = start + size
        if end > n:
            break
        out.append((rid, blob[start:end]))
        p = end + (size & 1)
    return out


def _decode(raw: bytes) -> str:
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        s = raw.decode("latin-1")
    s = " ".join(s.split())
    return s if len(s) <= 120 else s[:119] + "…"


def iim_findings(blob: bytes, source: str) -> list[Finding]:
    """Findings for IPTC-IIM datasets (0x1C record dataset size data ...)."""
    where = f"IPTC in {source}"
    values: dict[int, list[str]] = {}
    count = 0
    p, n = 0, len(blob)
    while p + 5 <= n and blob[p] == 0x1C:
        record, dataset = blob[p + 1], blob[p + 2]
        (size,) = struct.unpack_from(">H", blob, p + 3)
        p += 5
        if size & 0x8000:  # extended dataset: the next (size & 0x7FFF) bytes hold the length
            width = size & 0x7FFF
            if width > 4 or p + width > n:
                break
            size = int.from_bytes(blob[p : p + width], "big")
            p += width
        data = blob[p : p + size]
        p += size
        count += 1
        if record == 2 and dataset in _DATASETS:
            values.setdefault(dataset, []).append(_decode(data))
    if not count:
        return []
    found = [Finding("iptc", "IPTC-IIM block", plural(count, "dataset"), where)]
    for dataset, items in values.items():
        category, label = _DATASETS[dataset]
        shown = "; ".join(dict.fromkeys(x for x in items if x))
        if shown:
            found.append(Finding(category, label, shown[:120], where))
    return found


def irb_findings(blob: bytes, source: str) -> tuple[list[Finding], list[bytes], list[bytes]]:
    """Findings for a Photoshop IRB, plus the EXIF and XMP blobs it embeds (for the caller
    to report through the EXIF and XMP readers)."""
    where = f"Photoshop IRB in {source}"
    found: list[Finding] = []
    exif: list[bytes] = []
    xmp: list[bytes] = []
    resources = split_irb(blob)
    if resources:
        found.append(
            Finding("other", "Photoshop resources", plural(len(resources), "resource"), where)
        )
    for rid, data in resources:
        kind = _RESOURCES.get(rid)
        if kind == "IPTC-IIM":
            found.extend(iim_findings(data, source))
        elif kind == "thumbnail":
            found.append(Finding("thumbnail", "Photoshop thumbnail", f"{len(data)} bytes", where))
        elif kind == "EXIF":
            exif.append(data)
        elif kind == "XMP":
            xmp.append(data)
    return found, exif, xmp
