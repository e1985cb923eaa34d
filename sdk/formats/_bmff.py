"""HEIF / HEIC / AVIF (ISO-BMFF): inspection for the report, and why one does not decode.

HEIF and AVIF are never stripped in place: the primary image is decoded and re-encoded, so
nothing of the container survives. This walker only lists what the container held (EXIF and
XMP items, thumbnails, depth and gain-map images, other images) so the report can say what
was removed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from veilpix._errors import CorruptImage, ImageError, UnsupportedImage
from veilpix.formats._format import Format
from veilpix.formats._scan import IMAGE, METADATA, STRUCTURE, UNKNOWN, Scan

__all__ = ["brand", "decode_error", "scan_bmff"]

_ALPHA = (b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha", b"urn:mpeg:hevc:2015:auxid:1")
_MAX_BOXES = 100_000


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, box start, payload start, box end) for each box in [start, end)."""
    p = start
    count = 0
    while p + 8 <= end:
        count += 1
        if count > _MAX_BOXES:
            raise CorruptImage("HEIF/AVIF is malformed: too many boxes")
        size, kind = struct.unpack_from(">I4s", data, p)
        head = 8
        if size == 1:
            if p + 16 > end:
                raise CorruptImage("HEIF/AVIF is truncated in a box header")
            (size,) = struct.unpack_from(">Q", data, p + 8)
            head = 16
        elif size == 0:
            size = end - p
        if size < head or p + size > end:
            raise CorruptImage(
                f"HEIF/AVIF is truncated or malformed: box {kind.decode('latin-1')!r} runs past its parent"
            )
        yield kind, p, p + head, p + size
        p += size


def brand(data: bytes) -> bytes:
    """The major brand of an ISO-BMFF file ('heic', 'avif', 'mif1', ...), or b''."""
    return data[8:12] if data[4:8] == b"ftyp" else b""


def scan_bmff(data: bytes, fmt: str) -> Scan:
    """List the items of the ``meta`` box and any other top-level boxes."""
    scan = Scan(fmt)
    for kind, start, body, end in _boxes(data, 0, len(data)):
        name = kind.decode("latin-1")
        if kind == b"meta":
            _meta(scan, data, body + 4, end)
            scan.add("meta", start, end - start, STRUCTURE)
        elif kind in (b"ftyp", b"mdat", b"free", b"skip", b"moov", b"wide"):
            scan.add(name, start, end - start, STRUCTURE)
        elif kind == b"uuid":
            scan.add("uuid box", start, end - start, METADATA, "vendor box (e.g. C2PA)")
            if b"c2pa" in data[body : body + 64].lower():
                scan.c2pa.append(f"BMFF uuid C2PA box ({end - start} bytes)")
        else:
            scan.add(f"box {name}", start, end - start, UNKNOWN)
    return scan


def _meta(scan: Scan, data: bytes, start: int, end: int) -> None:
    items: dict[int, tuple[bytes, str]] = {}
    refs: list[tuple[bytes, int, list[int]]] = []
    props: list[tuple[bytes, bytes]] = []
    assoc: dict[int, list[int]] = {}
    primary = None
    for kind, _s, body, stop in _boxes(data, start, end):
        if kind == b"pitm":
            version = data[body]
            primary = struct.unpack_from(">H" if version == 0 else ">I", data, body + 4)[0]
        elif kind == b"iinf":
            version = data[body]
            first = body + 4 + (2 if version == 0 else 4)
            for k2, _s2, b2, e2 in _boxes(data, first, stop):
                if k2 != b"infe" or data[b2] < 2:
                    continue
                width = 2 if data[b2] == 2 else 4
                iid = int.from_bytes(data[b2 + 4 : b2 + 4 + width], "big")
                itype = data[b2 + 4 + width + 2 : b2 + 4 + width + 6]
                rest = data[b2 + 4 + width + 6 : e2].split(b"\x00")
                ctype = (
                    rest[1].decode("latin-1", "replace")
                    if itype == b"mime" and len(rest) > 1
                    else ""
                )
                items[iid] = (itype, ctype)
        elif kind == b"iref":
            width = 2 if data[body] == 0 else 4
            for k2, _s2, b2, e2 in _boxes(data, body + 4, stop):
                src = int.from_bytes(data[b2 : b2 + width], "big")
                (n,) = struct.unpack_from(">H", data, b2 + width)
                at = b2 + width + 2
                n = min(n, max(0, (e2 - at) // width))  # never more than the box holds
                dst = [
                    int.from_bytes(data[at + i * width : at + (i + 1) * width], "big")
                    for i in range(n)
                ]
                refs.append((k2, src, dst))
        elif kind == b"iprp":
            for k2, _s2, b2, e2 in _boxes(data, body, stop):
                if k2 == b"ipco":
                    props.extend((k3, data[b3:e3]) for k3, _s3, b3, e3 in _boxes(data, b2, e2))
                elif k2 == b"ipma":
                    _ipma(data, b2, assoc)
    if primary is not None and primary in items:
        scan.extra["primary_type"] = items[primary][0]
        tiles = [d for k, src, dst in refs if k == b"dimg" and src == primary for d in dst]
        scan.extra["tile_types"] = sorted({items[t][0] for t in tiles if t in items})
    thumbs = {src for k, src, _ in refs if k == b"thmb"}
    aux = {src for k, src, _ in refs if k == b"auxl"}
    derived = {d for k, _, dst in refs if k in (b"dimg", b"base") for d in dst}
    for iid, (itype, ctype) in items.items():
        label = itype.decode("latin-1").strip()
        if itype == b"Exif":
            scan.add(f"item {iid} Exif", 0, 0, METADATA)
        elif itype == b"mime":
            scan.add(f"item {iid} {ctype or 'mime'}", 0, 0, METADATA)
        elif itype in (b"uri ", b"jumb", b"iptc", b"xml "):
            scan.add(f"item {iid} {label}", 0, 0, METADATA)
            if itype == b"jumb":
                scan.c2pa.append(f"HEIF JUMBF item {iid}")
        elif iid in thumbs:
            scan.thumbnails.append((f"HEIF thumbnail item {iid} ({label})", 0))
            scan.add(f"item {iid} thumbnail", 0, 0, IMAGE)
        elif iid in aux:
            kind_name = _aux_type(iid, props, assoc)
            if kind_name not in _ALPHA:
                what = (
                    "depth map"
                    if b"depth" in kind_name
                    else (
                        "gain map"
                        if b"hdrgainmap" in kind_name or b"gainmap" in kind_name
                        else "auxiliary image"
                    )
                )
                scan.thumbnails.append((f"HEIF {what} item {iid}", 0))
                scan.add(f"item {iid} {what}", 0, 0, IMAGE, kind_name.decode("latin-1", "replace"))
        elif itype == b"tmap":
            scan.thumbnails.append((f"HEIF gain map item {iid}", 0))
            scan.add(f"item {iid} tone map (gain map)", 0, 0, IMAGE)
        elif (
            iid != primary
            and iid not in derived
            and itype in (b"hvc1", b"av01", b"jpeg", b"grid", b"unci")
        ):
            scan.thumbnails.append((f"HEIF secondary image item {iid} ({label})", 0))
            scan.add(f"item {iid} secondary image", 0, 0, IMAGE)
    scan.extra["primary_item"] = primary
    scan.extra["items"] = len(items)


def _ipma(data: bytes, body: int, assoc: dict[int, list[int]]) -> None:
    version = data[body]
    flags = int.from_bytes(data[body + 1 : body + 4], "big")
    (count,) = struct.unpack_from(">I", data, body + 4)
    q = body + 8
    for _ in range(min(count, _MAX_BOXES)):
        if version < 1:
            (iid,) = struct.unpack_from(">H", data, q)
            q += 2
        else:
            (iid,) = struct.unpack_from(">I", data, q)
            q += 4
        n = data[q]
        q += 1
        lst = []
        for _ in range(n):
            if flags & 1:
                lst.append(struct.unpack_from(">H", data, q)[0] & 0x7FFF)
                q += 2
            else:
                lst.append(data[q] & 0x7F)
                q += 1
        assoc[iid] = lst


def _aux_type(iid: int, props: list[tuple[bytes, bytes]], assoc: dict[int, list[int]]) -> bytes:
    for index in assoc.get(iid, []):
        if 0 < index <= len(props) and props[index - 1][0] == b"auxC":
            return props[index - 1][1][4:].split(b"\x00")[0]
    return b""


# what HEIF/AVIF items are coded as, by item type
_CODECS = {
    b"hvc1": "HEVC (H.265)",
    b"av01": "AV1",
    b"jpeg": "JPEG",
    b"avc1": "H.264 (AVC)",
    b"vvc1": "VVC (H.266)",
    b"evc1": "EVC",
    b"j2k1": "JPEG 2000",
    b"unci": "uncompressed (ISO/IEC 23001-17)",
    b"mski": "a mask",
}
_DECODED = {"HEIF": {b"hvc1", b"av01"}, "AVIF": {b"av01"}}


def decode_error(exc: CorruptImage, fmt: str, scan: Scan) -> ImageError:
    """Say what is really wrong when a HEIF/AVIF image does not decode: a codec the installed
    decoder does not have (most often), or damage."""
    primary = scan.extra.get("primary_type")
    coded = [primary] if primary not in (None, b"grid", b"iovl", b"iden") else []
    coded += scan.extra.get("tile_types", [])
    unknown = [t for t in coded if t not in _DECODED[fmt]]
    if unknown:
        names = ", ".join(_CODECS.get(t, repr(t.decode("latin-1"))) for t in unknown)
        return UnsupportedImage(
            f"{fmt} whose main image is coded as {names}, which the installed decoder "
            f"({_decoder(fmt)}) cannot decode; the file itself may be fine",
            hint=f"convert it to JPEG or PNG with a tool that reads {names} (e.g. heif-convert "
            "from a libheif built with that codec), then sanitize the result",
        )
    said = exc.message.lower()
    if "unsupported" in said or "not supported" in said or "invalid image index" in said:
        return UnsupportedImage(
            f"{fmt} uses a feature the installed decoder ({_decoder(fmt)}) does not support: "
            f"{exc.message}",
            hint="convert it to JPEG or PNG with a newer libheif/libavif, then sanitize it",
        )
    return exc


def _decoder(fmt: str) -> str:
    try:
        if fmt == "HEIF":
            import pillow_heif

            return f"libheif {pillow_heif.libheif_version()}"
        from PIL import features

        return f"libavif {features.version('avif') or '?'}"
    except (ImportError, ValueError):
        return "not installed" if fmt == "HEIF" else "Pillow's AVIF support"


_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_GENERIC_BRANDS = frozenset({b"mif1", b"msf1", b"mif2", b"miaf"})
# The ISO-BMFF brands of still images and image sequences; any other brand is audio or video
IMAGE_BRANDS = _HEIF_BRANDS | _AVIF_BRANDS | _GENERIC_BRANDS


def brand_family(data: bytes) -> str | None:
    """ "HEIF" or "AVIF" from an ISO-BMFF file's ``ftyp`` brands, else None."""
    if data[4:8] != b"ftyp" or len(data) < 16:
        return None
    major = data[8:12]
    size = min(int.from_bytes(data[:4], "big"), 256, len(data))
    compatible = {data[i : i + 4] for i in range(16, size - 3, 4)}
    if major in _AVIF_BRANDS:
        return "AVIF"
    if major in _HEIF_BRANDS:
        return "HEIF"
    if major in _GENERIC_BRANDS or compatible & (_GENERIC_BRANDS | _HEIF_BRANDS | _AVIF_BRANDS):
        # a newer or vendor major brand ('MiHE', 'avci', 'vvic', ...) that declares itself
        # compatible with the HEIF image family: the decoder says whether it can read it
        if compatible & _AVIF_BRANDS and not compatible & _HEIF_BRANDS:
            return "AVIF"
        return "HEIF"
    return None


FORMATS = (
    Format(
        name="HEIF",
        media_type="image/heif",
        extensions=(".heic", ".heif", ".hif"),
        signatures=(b"ftyp",),
        offset=4,
        accept=lambda data: brand_family(data) == "HEIF",
        scan=lambda data: scan_bmff(data, "HEIF"),
        writable=False,
        via_decoder=True,
    ),
    Format(
        name="AVIF",
        media_type="image/avif",
        extensions=(".avif",),
        signatures=(b"ftyp",),
        offset=4,
        accept=lambda data: brand_family(data) == "AVIF",
        scan=lambda data: scan_bmff(data, "AVIF"),
        decoders=("AVIF",),
        writable=False,
        exif_orientation=True,
        animated=True,
        via_decoder=True,
    ),
)
