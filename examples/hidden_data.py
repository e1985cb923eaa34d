"""Data hidden where no metadata reader looks, and what veilpix does with it.

A hostile (or just sloppy) writer can put bytes inside the compressed image data, where
decoders never read them and metadata tools never look: after the last block of a JPEG scan,
after the end of a PNG's zlib stream. This script hides a text with a GPS position and a name
in both places, shows that a metadata reader finds nothing, and that veilpix's output does not
carry it: the JPEG keeps its exact pixels (its coded data re-written by libjpeg-turbo), the
PNG keeps its stream, cut where the stream ends.

    python examples/hidden_data.py              # a generated picture
    python examples/hidden_data.py photo.jpg    # your JPEG (nothing is written)
"""

from __future__ import annotations

import io
import struct
import sys
import zlib

from PIL import Image

import veilpix

PAYLOAD = b"GPS 52.5163N 13.3777E - Jane Doe, Invalidenstr. 7"


def picture() -> Image.Image:
    im = Image.linear_gradient("L").resize((320, 200)).convert("RGB")
    return Image.merge("RGB", (im.getchannel(0), im.rotate(90).getchannel(0), im.getchannel(0)))


def jpeg_with_hidden_bytes(jpeg: bytes) -> bytes:
    """``jpeg`` with PAYLOAD just before its end-of-image marker."""
    end = jpeg.rindex(b"\xff\xd9")
    return jpeg[:end] + PAYLOAD + jpeg[end:]


def png_with_hidden_bytes(im: Image.Image) -> bytes:
    """A PNG whose IDAT chunk holds PAYLOAD after the end of the zlib stream."""
    buf = io.BytesIO()
    im.save(buf, "PNG")
    data = buf.getvalue()
    at = data.index(b"IDAT") - 4
    (n,) = struct.unpack_from(">I", data, at)
    body = data[at + 8 : at + 8 + n] + PAYLOAD
    chunk = (
        struct.pack(">I", len(body))
        + b"IDAT"
        + body
        + struct.pack(">I", zlib.crc32(b"IDAT" + body))
    )
    return data[:at] + chunk + data[at + 12 + n :]


def show(name: str, data: bytes) -> None:
    found = veilpix.inspect(data).findings
    clean = veilpix.sanitize(data)
    print(f"{name}:")
    print(f"  the payload is in the input:          {PAYLOAD in data}")
    print(f"  metadata a reader reports:            {len(found)} item(s)")
    print(f"  the payload is in veilpix's output:   {PAYLOAD in clean.data}")
    print(f"  lossless (no re-encode):              {clean.report.lossless}")
    for note in clean.report.notes:
        print(f"  note: {note}")
    for part in clean.report.removed:
        if "compressed" in part.detail:
            print(f"  removed: {part.container} ({part.detail}, {part.size} bytes)")


def main(argv: list[str]) -> int:
    if argv:
        with open(argv[0], "rb") as fh:
            source = fh.read()
        if veilpix.inspect(source).format not in ("JPEG", "MPO"):
            print(f"{argv[0]} is not a JPEG", file=sys.stderr)
            return 1
    else:
        buf = io.BytesIO()
        picture().save(buf, "JPEG", quality=90)
        source = buf.getvalue()
    try:
        show("JPEG, bytes after the last coded block", jpeg_with_hidden_bytes(source))
        show("PNG, bytes after the end of the zlib stream", png_with_hidden_bytes(picture()))
    except veilpix.VeilpixError as exc:
        print(f"cannot sanitize: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
