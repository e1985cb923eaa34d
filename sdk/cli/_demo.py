"""``veilpix demo``: the main job on a built-in sample, with no files, keys or servers.

The sample is drawn in memory: a small landscape stored sideways (EXIF orientation 6, as
phones do), carrying a GPS position, camera make, model and serial numbers, the owner's name,
timestamps, an EXIF thumbnail that shows a *different* picture, XMP, IPTC and a JPEG comment.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import sys

import piexif
from PIL import Image, ImageDraw, ImageFont  # noqa: TID253 - drawing is heavy by nature

from veilpix.cli._inspect import inspection_dict, print_tables
from veilpix.cli._options import Subparsers
from veilpix.cli._term import Term, json_text, plural
from veilpix.image._pipeline import inspect, sanitize
from veilpix.image._preview import render_preview

__all__ = ["add_parser", "run", "sample_photo"]


def _landscape(size: tuple[int, int]) -> Image.Image:
    w, h = size
    im = Image.new("RGB", size)
    draw = ImageDraw.Draw(im)
    for y in range(h):
        t = y / h
        draw.line([(0, y), (w, y)], fill=(int(90 + 120 * t), int(150 + 70 * t), 235))
    draw.ellipse([w * 0.72, h * 0.10, w * 0.86, h * 0.29], fill=(255, 214, 90))
    draw.polygon(
        [
            (0, h * 0.75),
            (w * 0.30, h * 0.35),
            (w * 0.55, h * 0.72),
            (w * 0.78, h * 0.45),
            (w, h * 0.70),
            (w, h),
            (0, h),
        ],
        fill=(62, 110, 72),
    )
    draw.rectangle([0, h * 0.85, w, h], fill=(48, 86, 160))
    draw.text(
        (16, 12),
        "veilpix demo: this side up",
        fill=(20, 20, 20),
        font=ImageFont.load_default(size=22),
    )
    return im


def _rational(x: float, den: int = 10000) -> tuple[int, int]:
    return (round(x * den), den)


def _dms(deg: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    d = int(deg)
    m = int((deg - d) * 60)
    s = (deg - d - m / 60) * 3600
    return ((d, 1), (m, 1), _rational(s, 100))


def sample_photo() -> bytes:
    """A JPEG full of the metadata veilpix exists to remove."""
    upright = _landscape((640, 480))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back
    thumb = Image.new("RGB", (160, 120), (200, 30, 30))
    ImageDraw.Draw(thumb).text(
        (12, 45), "PRIVATE", fill="white", font=ImageFont.load_default(size=24)
    )
    tbuf = io.BytesIO()
    thumb.save(tbuf, "JPEG", quality=80)
    lat, lon = 52.516275, 13.377704  # Brandenburger Tor, Berlin
    exif = piexif.dump(
        {
            "0th": {
                piexif.ImageIFD.Make: b"Pixelcam",
                piexif.ImageIFD.Model: b"Pixelcam P-1",
                piexif.ImageIFD.Orientation: 6,
                piexif.ImageIFD.Software: b"Pixelcam OS 4.2",
                piexif.ImageIFD.DateTime: b"2026:06:14 18:22:07",
                piexif.ImageIFD.Artist: b"Jane Doe",
                piexif.ImageIFD.Copyright: b"(c) Jane Doe",
            },
            "Exif": {
                piexif.ExifIFD.DateTimeOriginal: b"2026:06:14 18:22:07",
                piexif.ExifIFD.BodySerialNumber: b"PX1-4711-0042",
                piexif.ExifIFD.LensSerialNumber: b"LN-99812",
                piexif.ExifIFD.CameraOwnerName: b"Jane Doe",
            },
            "GPS": {
                piexif.GPSIFD.GPSLatitudeRef: b"N",
                piexif.GPSIFD.GPSLatitude: _dms(lat),
                piexif.GPSIFD.GPSLongitudeRef: b"E",
                piexif.GPSIFD.GPSLongitude: _dms(lon),
                piexif.GPSIFD.GPSAltitudeRef: 0,
                piexif.GPSIFD.GPSAltitude: (34, 1),
            },
            "1st": {
                piexif.ImageIFD.JPEGInterchangeFormat: 0,
                piexif.ImageIFD.JPEGInterchangeFormatLength: 0,
            },
            "thumbnail": tbuf.getvalue(),
        }
    )
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" '
        b'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" photoshop:City="Berlin">'
        b"<dc:creator><rdf:Seq><rdf:li>Jane Doe</rdf:li></rdf:Seq></dc:creator>"
        b"</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    iptc = b"".join(
        b"\x1c\x02" + bytes((ds,)) + struct.pack(">H", len(v)) + v
        for ds, v in ((80, b"Jane Doe"), (90, b"Berlin"), (101, b"Germany"))
    )
    irb = (
        b"8BIM\x04\x04\x00\x00"
        + struct.pack(">I", len(iptc))
        + iptc
        + (b"\x00" if len(iptc) & 1 else b"")
    )
    body = io.BytesIO()
    stored.save(body, "JPEG", quality=88)
    jpeg = body.getvalue()

    def seg(marker: int, payload: bytes) -> bytes:
        return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload

    extra = (
        seg(
            0xE1, b"Exif\x00\x00" + exif[6:] if exif.startswith(b"Exif") else b"Exif\x00\x00" + exif
        )
        + seg(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xmp)
        + seg(0xED, b"Photoshop 3.0\x00" + irb)
        + seg(0xFE, b"Holiday with Max - do not share")
    )
    return jpeg[:2] + extra + jpeg[2:]


def add_parser(sub: Subparsers, summary: str) -> None:
    """The ``demo`` command's parser."""
    p = sub.add_parser(
        "demo",
        help=summary,
        description="Build a sample photo in memory with GPS, camera serial number, owner, "
        "timestamps, a thumbnail of a different picture, XMP, IPTC and a comment; sanitize "
        "it and show what was found and removed.",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="also write before.jpg, after.jpg and preview.png here",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    before = sample_photo()
    clean = sanitize(before)
    rep = clean.report
    if args.json:
        sys.stdout.write(json_text(rep.to_dict(), indent=2) + "\n")
    else:
        term = Term()
        print("A sample photo, as a phone would send it (built in memory):\n")
        print_tables(
            [inspection_dict("sample.jpg (before)", inspect(before), containers=False)],
            containers=False,
            term=term,
        )
        print("After veilpix.sanitize():\n")
        print_tables(
            [inspection_dict("sample.jpg (after)", inspect(clean.data), containers=False)],
            containers=False,
            term=term,
        )
        print(
            f"{plural(len(rep.removed), 'container element')} removed, "
            f"{plural(len(rep.findings), 'finding')}, "
            f"{rep.bytes_in:,} → {rep.bytes_out:,} bytes, {rep.width_out}×{rep.height_out} upright."
        )
        for note in rep.notes:
            term.print("  note: ", note)
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        files = {
            "before.jpg": before,
            "after.jpg": clean.data,
            "preview.png": render_preview(before, clean, as_stored=True),
        }
        for name, data in files.items():
            with open(os.path.join(args.output, name), "wb") as fh:
                fh.write(data)
        if not args.json:
            print(f"\nwrote {', '.join(files)} to {args.output}/")
    if not args.json:
        print("\nNext: veilpix scrub YOUR_PHOTOS -o clean/   (see veilpix scrub --help)")
    return 0
