"""JPEG (and MPO) at the marker level: scan, and strip losslessly.

The strip keeps only what a decoder needs: SOI, a bare JFIF APP0 (its thumbnail removed), the
Adobe APP14 colour-transform flag, a standard ICC profile when the policy keeps it, the tables
(DQT, DHT, DAC, DRI), the frame header, every scan with its entropy-coded data bit for bit,
and EOI. Everything else goes: EXIF, XMP and extended XMP, IPTC/Photoshop IRB, COM, every
vendor APPn (APP3-APP15 except the Adobe flag), APP11 JUMBF/C2PA, MPF and all bytes after the
first image's EOI (MPF secondary images, gain maps, Samsung/Google trailers).
"""

from __future__ import annotations

import math
import re
import struct
from typing import Any

from veilpix._errors import CorruptImage, UnsupportedImage
from veilpix._words import plural
from veilpix.formats._format import Format
from veilpix.formats._scan import ICC, IMAGE, METADATA, STRUCTURE, TRAILER, UNKNOWN, Scan, need

__all__ = ["icc_segments", "scan_jpeg", "strip_jpeg"]

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_TABLES = {0xC4: "DHT", 0xCC: "DAC", 0xDB: "DQT", 0xDD: "DRI", 0xDC: "DNL"}
# Inside entropy-coded data only 0xFF00 (stuffing) and RST0-7 may follow 0xFF.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_XMP_ID = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXT_ID = b"http://ns.adobe.com/xmp/extension/\x00"
_ICC_ID = b"ICC_PROFILE\x00"


def _label(payload: bytes) -> str:
    text = payload[:24].split(b"\x00")[0].decode("latin-1", "replace")
    return "".join(c for c in text if c.isprintable()).strip() or "?"


def scan_jpeg(data: bytes) -> Scan:
    """Walk every marker of the first image in ``data``; raise CorruptImage on damage."""
    if data[:2] != b"\xff\xd8":
        raise CorruptImage("not a JPEG: no start-of-image marker")
    scan = Scan("JPEG")
    icc_chunks: dict[int, bytes] = {}
    xmp_ext: dict[bytes, dict[int, bytes]] = {}
    keep: list[tuple[int, int, bytes | None]] = [(0, 2, None)]  # (start, end, replacement)
    tables: dict[str, Any] = {"DQT": {}, "DHT": {}, "DAC": [], "DRI": None, "DNL": None}
    sos_payload = b""
    n = len(data)
    p = 2
    sof_seen = False
    scans = 0
    eoi: int | None = None
    while p < n:
        if data[p] != 0xFF:
            # libjpeg skips extraneous bytes before a marker; so do we, and drop them.
            q = data.find(b"\xff", p)
            if q < 0:
                break
            scan.add("garbage", p, q - p, UNKNOWN, "bytes between segments")
            p = q
            continue
        while p < n and data[p] == 0xFF:
            p += 1  # fill bytes before a marker are not kept: the marker is written bare
        if p >= n:
            break
        start = p - 1
        m = data[p]
        p += 1
        if m == 0xD9:
            eoi = p
            keep.append((start, p, None))
            break
        if m == 0xD8:
            raise CorruptImage("JPEG is malformed: a second start-of-image before end-of-image")
        if m == 0x01 or 0xD0 <= m <= 0xD7:
            continue  # standalone markers outside a scan carry nothing
        need(data, p + 2, f"marker 0x{m:02X} length", "JPEG")
        (length,) = struct.unpack_from(">H", data, p)
        if length < 2:
            raise CorruptImage(f"JPEG is malformed: marker 0x{m:02X} declares length {length}")
        end = p + length
        need(data, end, f"marker 0x{m:02X} segment", "JPEG")
        payload = data[p + 2 : end]
        seg_len = end - start
        if m in _SOF:
            if len(payload) < 6:
                raise CorruptImage("JPEG is malformed: frame header too short")
            precision, height, width, ncomp = struct.unpack_from(">BHHB", payload)
            if sof_seen:
                raise CorruptImage("JPEG is malformed: more than one frame header")
            if len(payload) != 6 + 3 * ncomp:
                raise CorruptImage("JPEG is malformed: frame header length does not match")
            if width == 0 or ncomp not in (1, 3, 4):
                raise UnsupportedImage(
                    f"JPEG frame {width}x{height} with {ncomp} components is not supported"
                )
            sof_seen = True
            scan.extra["sof_payload"] = payload
            scan.width, scan.height = width, height
            factors = payload[7 : 6 + 3 * ncomp : 3]  # H (high nibble) and V sampling per component
            scan.extra.update(
                sof=m,
                precision=precision,
                components=ncomp,
                progressive=m in (0xC2, 0xC6),
                mcu=(8 * max(f >> 4 for f in factors), 8 * max(f & 15 for f in factors)),
            )
            scan.add(f"SOF{m - 0xC0}", start, seg_len, STRUCTURE)
            keep.append((start, end, None))
            p = end
            continue
        if m in _TABLES:
            _check_table(m, payload)
            scan.add(_TABLES[m], start, seg_len, STRUCTURE)
            keep.append((start, end, None))
            if not scans:  # the tables in force for the first scan
                _collect_tables(m, payload, tables)
            p = end
            continue
        if m == 0xDA:
            if not sof_seen:
                raise CorruptImage("JPEG is malformed: scan before frame header")
            scans += 1
            sos_payload = sos_payload or payload
            if not payload or len(payload) != 4 + 2 * payload[0]:
                raise CorruptImage("JPEG is malformed: scan header length does not match")
            hit = _NEXT_MARKER.search(data, end)
            stop = hit.start() if hit else n
            scan.add("SOS+scan", start, stop - start, STRUCTURE)
            tables.setdefault("SOS at", len(keep))
            keep.append((start, stop, None))
            p = stop
            continue
        if 0xE0 <= m <= 0xEF:
            _app(
                scan,
                m - 0xE0,
                payload,
                start=start,
                end=end,
                keep=keep,
                icc=icc_chunks,
                xmp_ext=xmp_ext,
            )
            p = end
            continue
        if m == 0xFE:
            text = payload.rstrip(b"\x00").decode("utf-8", "replace")
            scan.comments.append(("JPEG COM", text))
            scan.add("COM", start, seg_len, METADATA, text[:40])
            p = end
            continue
        scan.add(f"marker 0x{m:02X}", start, seg_len, UNKNOWN)
        p = end
    if not sof_seen or not scans:
        raise CorruptImage("JPEG is malformed: no frame header or no image data")
    if eoi is None:
        raise CorruptImage("JPEG is truncated: no end-of-image marker")
    if eoi < n:
        tail = data[eoi:]
        if tail.strip(b"\x00\xff"):
            images = tail.count(b"\xff\xd8\xff")
            what = f"{images} embedded JPEG image(s)" if images else "trailer data"
            scan.add("after EOI", eoi, n - eoi, IMAGE if images else TRAILER, what)
            if images:
                scan.thumbnails.append((f"JPEG after end of image ({what})", n - eoi))
        else:
            scan.add("padding after EOI", eoi, n - eoi, TRAILER)
    if icc_chunks:
        scan.icc = b"".join(icc_chunks[k] for k in sorted(icc_chunks))
    for guid, pieces in xmp_ext.items():
        scan.xmp.append(b"".join(pieces[k] for k in sorted(pieces)))
        scan.extra.setdefault("extended_xmp", []).append(guid.decode("latin-1", "replace"))
    if scans == 1:
        keep = _rebuilt(data, keep, tables, scan, sos_payload)
    # where the last scan's coded data stops: the FF of EOI (fill bytes before it belong to it)
    scan.extra.update(keep=keep, scans=scans, coded_end=eoi - 2)
    return scan


def _collect_tables(marker: int, payload: bytes, tables: dict[str, Any]) -> None:
    """Each table of a (checked) DQT/DHT segment by its id, the last definition winning."""
    name = _TABLES[marker]
    if name == "DQT":
        p = 0
        while p < len(payload):
            size = 1 + (128 if payload[p] >> 4 else 64)
            tables["DQT"][payload[p] & 15] = payload[p : p + size]
            p += size
    elif name == "DHT":
        p = 0
        while p + 17 <= len(payload):
            size = 17 + sum(payload[p + 1 : p + 17])
            tables["DHT"][(payload[p] >> 4, payload[p] & 15)] = payload[p : p + size]
            p += size
    elif name == "DAC":
        tables["DAC"].append(payload)
    else:
        tables[name] = payload


def _markers(
    keep: list[tuple[int, int, bytes | None]], ncomp: int
) -> list[tuple[int, int, bytes | None]]:
    """The last JFIF APP0 (libjpeg reads the last), and the last Adobe APP14 only where
    libjpeg reads its colour transform (three components without JFIF, or four), written
    with the transform libjpeg acts on."""
    jfif = [k for k in keep if k[2] is not None and k[2][:2] == b"\xff\xe0"][-1:]
    adobe = [k for k in keep if k[2] is not None and k[2][:2] == b"\xff\xee"][-1:]
    if not adobe or not (ncomp == 4 or (ncomp == 3 and not jfif)):
        return jfif
    start, end, segment = adobe[0]
    assert segment is not None
    transform = segment[-1]
    canonical = (0 if transform == 0 else 1) if ncomp == 3 else (0 if transform == 0 else 2)
    return [*jfif, (start, end, segment[:-1] + bytes((canonical,)))]


def _mcus(scan: Scan, sof: bytes, sos: bytes) -> int:
    """MCUs in the (single) scan: a restart interval at least this long never restarts."""
    width, height = scan.width, scan.height
    if sos[0] > 1:
        mcu_w, mcu_h = scan.extra["mcu"]
        return int(-(-width // mcu_w) * -(-height // mcu_h))
    # one component: its own blocks, at its sampling of the frame
    factors = {sof[6 + 3 * i]: sof[7 + 3 * i] for i in range(sof[5])}
    hmax = max(f >> 4 for f in factors.values())
    vmax = max(f & 15 for f in factors.values())
    f = factors.get(sos[1], 0x11)
    cw, ch = -(-width * (f >> 4) // hmax), -(-height * (f & 15) // vmax)
    return -(-cw // 8) * -(-ch // 8)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _rebuilt(
    data: bytes,
    keep: list[tuple[int, int, bytes | None]],
    tables: dict[str, Any],
    scan: Scan,
    sos: bytes,
) -> list[tuple[int, int, bytes | None]]:
    """The kept segments of a single-scan JPEG, in canonical order and form: SOI, JFIF and
    Adobe markers, one DQT with the tables the frame uses, the frame header, one DHT with
    the tables the scan uses (one DAC for arithmetic coding), the restart interval, the
    scan, EOI. Tables no component uses, redefined tables, DNL and every other repeat are
    dropped: their values are a writer's free choice."""
    sof = scan.extra["sof_payload"]
    ncomp = sof[5]
    quant = sorted({sof[6 + 3 * i + 2] for i in range(ncomp)})
    coding = sorted(
        {(0, sos[2 + 2 * i] >> 4) for i in range(sos[0])}
        | {(1, sos[2 + 2 * i] & 15) for i in range(sos[0])}
    )
    arithmetic = scan.extra["sof"] >= 0xC9
    missing = [f"DQT {t}" for t in quant if t not in tables["DQT"]]
    if not arithmetic:
        missing += [f"DHT {c}/{t}" for c, t in coding if (c, t) not in tables["DHT"]]
    if missing:
        raise CorruptImage(
            f"JPEG is malformed: the frame uses undefined tables ({', '.join(missing)})"
        )
    unused = (
        len(tables["DQT"]) - len(quant) + (0 if arithmetic else len(tables["DHT"]) - len(coding))
    )
    if unused > 0:
        scan.add("tables", 0, 0, UNKNOWN, f"{plural(unused, 'table')} no component uses")
    out = [keep[0], *_markers(keep, ncomp)]  # SOI, one JFIF, one Adobe where it counts
    out.append((1, 1, _segment(0xDB, b"".join(tables["DQT"][t] for t in quant))))
    out.append((1, 1, _segment(scan.extra["sof"], sof)))
    if arithmetic:
        out.extend((1, 1, _segment(0xCC, dac)) for dac in tables["DAC"][-1:])
    else:
        out.append((1, 1, _segment(0xC4, b"".join(tables["DHT"][c] for c in coding))))
    interval = int.from_bytes(bytes(tables["DRI"] or b""), "big")
    if 0 < interval < _mcus(scan, sof, sos):  # else no restart marker can follow: dropped
        out.append((1, 1, _segment(0xDD, tables["DRI"])))
    if tables["DNL"] is not None and not scan.height:
        out.append((1, 1, _segment(0xDC, tables["DNL"])))
    return [*out, keep[tables["SOS at"]], keep[-1]]  # the scan, EOI


def _check_table(marker: int, payload: bytes) -> None:
    """Tables must fill their segment exactly, as libjpeg requires ("bogus marker length"),
    so no bytes can ride along inside a segment the strip keeps."""
    n = len(payload)
    if marker in (0xDD, 0xDC):  # DRI, DNL: one 16-bit value
        ok = n == 2
    elif marker == 0xCC:  # DAC: pairs
        ok = n > 0 and n % 2 == 0
    elif marker == 0xDB:  # DQT: precision/id byte + 64 values of 1 or 2 bytes each
        p = 0
        while p < n:
            p += 1 + (128 if payload[p] >> 4 else 64)
        ok = n > 0 and p == n
    else:  # DHT: class/id byte, 16 counts, the symbols
        p = 0
        while p + 17 <= n:
            p += 17 + sum(payload[p + 1 : p + 17])
        ok = n > 0 and p == n
    if not ok:
        raise CorruptImage(
            f"JPEG is malformed: {_TABLES[marker]} segment length does not match its tables"
        )


def _app(
    scan: Scan,
    app: int,
    payload: bytes,
    *,
    start: int,
    end: int,
    keep: list[tuple[int, int, bytes | None]],
    icc: dict[int, bytes],
    xmp_ext: dict[bytes, dict[int, bytes]],
) -> None:
    seg_len = end - start
    name = f"APP{app}"
    if app == 0 and payload.startswith(b"JFIF\x00") and len(payload) >= 14:
        # version 1.01; the pixel aspect ratio only when it is not square (dpi values and
        # the version are a writer's free choice)
        units, x, y = payload[7], *struct.unpack_from(">HH", payload, 8)
        if units == 0 and x and y and x != y:
            g = math.gcd(x, y)
            x, y = x // g, y // g
        else:
            x = y = 1
        bare = b"JFIF\x00\x01\x01\x00" + struct.pack(">HH", x, y) + b"\x00\x00"
        thumb = payload[12] * payload[13]
        if thumb:
            scan.thumbnails.append(("JFIF thumbnail", len(payload) - 14))
        scan.add("APP0 JFIF", start, seg_len, STRUCTURE, "thumbnail removed" if thumb else "")
        keep.append((start, end, b"\xff\xe0" + struct.pack(">H", len(bare) + 2) + bare))
        return
    if app == 14 and payload.startswith(b"Adobe") and len(payload) >= 12:
        scan.extra["adobe_transform"] = payload[11]
        scan.add("APP14 Adobe", start, seg_len, STRUCTURE)
        # version 100, no flags: only the colour transform matters to a decoder
        keep.append((start, end, b"\xff\xee\x00\x0eAdobe\x00\x64" + bytes(4) + payload[11:12]))
        return
    if app == 2 and payload.startswith(_ICC_ID) and len(payload) >= 14:
        icc[payload[12]] = payload[14:]
        scan.add("APP2 ICC_PROFILE", start, seg_len, ICC)
        return
    if app == 1 and payload.startswith(b"Exif\x00"):
        scan.exif.append(payload[6:])
        scan.add("APP1 Exif", start, seg_len, METADATA)
        return
    if app == 1 and payload.startswith(_XMP_ID):
        scan.xmp.append(payload[len(_XMP_ID) :])
        scan.add("APP1 XMP", start, seg_len, METADATA)
        return
    if app == 1 and payload.startswith(_XMP_EXT_ID) and len(payload) >= len(_XMP_EXT_ID) + 40:
        body = payload[len(_XMP_EXT_ID) :]
        guid, offset = body[:32], struct.unpack_from(">I", body, 36)[0]
        xmp_ext.setdefault(guid, {})[offset] = body[40:]
        scan.add("APP1 extended XMP", start, seg_len, METADATA)
        return
    if app == 13 and payload.startswith(b"Photoshop 3.0\x00"):
        scan.irb.append(payload[14:])
        scan.add("APP13 Photoshop IRB", start, seg_len, METADATA)
        return
    if app == 2 and payload.startswith(b"MPF\x00"):
        scan.add("APP2 MPF", start, seg_len, IMAGE, "multi-picture index")
        return
    if app == 11 and payload.startswith(b"JP"):
        scan.c2pa.append(f"APP11 JUMBF ({seg_len} bytes)")
        scan.add("APP11 JUMBF", start, seg_len, METADATA, "C2PA / JUMBF")
        return
    if app == 0 and payload.startswith(b"JFXX"):
        scan.thumbnails.append(("JFXX thumbnail", seg_len))
        scan.add("APP0 JFXX", start, seg_len, IMAGE, "thumbnail")
        return
    label = _label(payload)
    scan.add(f"{name} {label}", start, seg_len, METADATA, "vendor segment")


def icc_segments(icc: bytes) -> bytes:
    """APP2 ICC_PROFILE segments carrying ``icc`` (split into 65519-byte chunks)."""
    size = 65519
    chunks = [icc[i : i + size] for i in range(0, len(icc), size)] or [b""]
    if len(chunks) > 255:
        raise CorruptImage("ICC profile too large to embed in JPEG")
    out = bytearray()
    for i, chunk in enumerate(chunks, 1):
        body = _ICC_ID + bytes((i, len(chunks))) + chunk
        out += b"\xff\xe2" + struct.pack(">H", len(body) + 2) + body
    return bytes(out)


def strip_jpeg(data: bytes, scan: Scan, *, icc: bytes | None) -> bytes:
    """The first image of ``data`` with nothing but structure (and ``icc`` when given)."""
    keep: list[tuple[int, int, bytes | None]] = scan.extra["keep"]
    out = bytearray()
    icc_done = icc is None
    for start, end, replacement in keep:
        chunk = data[start:end] if replacement is None else replacement
        if not icc_done and start > 0 and not _is_app01(chunk):
            out += icc_segments(icc or b"")
            icc_done = True
        out += chunk
    return bytes(out)


def _is_app01(chunk: bytes) -> bool:
    """JFIF APP0 and Adobe APP14 stay ahead of the ICC segments, as encoders write them."""
    return chunk[:2] in (b"\xff\xe0", b"\xff\xee")


FORMATS = (
    Format(
        name="JPEG",
        media_type="image/jpeg",
        extensions=(".jpg", ".jpeg", ".jpe", ".jfif"),
        read_extensions=(".mpo",),
        signatures=(b"\xff\xd8\xff",),
        scan=scan_jpeg,
        strip=lambda data, scan, icc: strip_jpeg(data, scan, icc=icc),
        decoders=("JPEG", "MPO"),
        exif_orientation=True,
    ),
)
