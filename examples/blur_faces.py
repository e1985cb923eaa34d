"""Blur the faces in a photo and make it smaller before it goes to an AI API.

    python examples/blur_faces.py [OUT]

Needs scikit-image for the sample picture (pip install scikit-image); the face model ships
with veilpix. No files are read: the input is scikit-image's "astronaut"
photo, encoded as a JPEG in memory with a GPS position in its EXIF. The script sanitizes it
with Policy(faces="blur", max_side=320), prints what was found and changed, then shows the
consent rule: an image with unblurred faces is refused unless the call carries a consent
reference. With OUT, the blurred, downscaled JPEG is written there.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import veilpix


def sample_jpeg() -> bytes:
    """A 512x512 JPEG of a person, with a GPS position in EXIF (like a phone photo)."""
    import piexif
    from PIL import Image
    from skimage import data

    exif = piexif.dump(
        {
            "GPS": {
                piexif.GPSIFD.GPSLatitudeRef: b"N",
                piexif.GPSIFD.GPSLatitude: ((28, 1), (31, 1), (2400, 100)),
                piexif.GPSIFD.GPSLongitudeRef: b"W",
                piexif.GPSIFD.GPSLongitude: ((80, 1), (39, 1), (3600, 100)),
            }
        }
    )
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


def main(argv: list[str]) -> int:
    data = sample_jpeg()

    # 1. Blur every face and bring the long side down to 320 px.
    policy = veilpix.Policy(faces="blur", max_side=320)
    try:
        clean = veilpix.sanitize(data, policy)
    except veilpix.VeilpixError as exc:
        # FaceDetectionError, or ConfigError when the face model is not installed:
        # nothing was produced, and the original must not be sent instead.
        print(f"cannot sanitize: {exc.message} ({exc.hint})", file=sys.stderr)
        return 1
    rep = clean.report
    print(f"sample: {rep.format_in} {rep.width_in}x{rep.height_in}, {rep.bytes_in:,} bytes")
    print(
        f"  faces found: {rep.faces_found}, blurred: {rep.faces_blurred} "
        f"(mode {rep.face_mode}, detector {rep.face_detector})"
    )
    for box in rep.face_boxes:
        print(
            f"    face at ({box.x0:.0f}, {box.y0:.0f})-({box.x1:.0f}, {box.y1:.0f}) "
            f"in input pixels, score {box.score:.2f}"
        )
    print(
        f"  size: {rep.width_in}x{rep.height_in} -> {rep.width_out}x{rep.height_out} "
        f"(downscaled={rep.downscaled}), {rep.bytes_in:,} -> {rep.bytes_out:,} bytes"
    )
    if rep.gps:
        print(f"  removed GPS position {rep.gps}")

    # 2. The consent rule: faces may only leave unblurred with a consent reference.
    strict = veilpix.Policy(require_consent_for_faces=True)
    try:
        veilpix.sanitize(data, strict)
    except veilpix.ConsentRequired as exc:
        print(f"without consent: refused: {exc.message}")
    allowed = veilpix.sanitize(data, strict, consent="consent-form-2024-0042")
    print(
        f"with consent={allowed.report.consent!r}: sent with "
        f"{allowed.report.faces_found - allowed.report.faces_blurred} face(s) unblurred"
    )
    blurred = veilpix.sanitize(data, strict.replace(faces="blur"))
    print(f"blurred instead: {blurred.report.faces_blurred} face(s) blurred, no consent needed")

    if argv:
        out = Path(argv[0])
        out.write_bytes(clean.data)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
