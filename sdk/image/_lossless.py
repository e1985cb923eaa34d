"""The lossless path and its proofs: strip a container without touching its picture, then
prove the output holds nothing but structure and coded image data before it is handed out.

Used by the pipeline (veilpix.image._pipeline) for every output, stripped or re-encoded: a
fresh scan must find no metadata, the size must be right, the format's own proof must hold
(a JPEG's entropy-coded data proved by libjpeg-turbo, a PNG's rows, a GIF's LZW codes, a
TIFF's strips), and, where asked, every frame must decode. What cannot be proved is re-coded
or re-encoded from the pixels, and the report says why.
"""

from __future__ import annotations

import io

from veilpix._errors import CorruptImage, UnsafeOutput
from veilpix._policy import Policy
from veilpix.formats._gif import prove_gif
from veilpix.formats._jpeg import scan_jpeg, strip_jpeg
from veilpix.formats._png import prove_png
from veilpix.formats._registry import FORMATS, scan_as
from veilpix.formats._scan import Scan, Unproved
from veilpix.formats._tiff import prove_tiff
from veilpix.image import _turbojpeg as turbojpeg
from veilpix.image._pixels import decoding
from veilpix.metadata._exif import parse_exif
from veilpix.metadata._icc import describe, is_standard

__all__ = ["decode_check", "explained", "lossless", "prove_jpeg", "proved", "turn_jpeg", "verify"]


def proved(
    out: bytes,
    fmt: str,
    icc: bytes | None,
    size: tuple[int, int],
    *,
    policy: Policy,
    notes: list[str],
    decode: bool,
    written: bool = False,
) -> tuple[bytes, Scan] | None:
    """The stripped output with its verification scan, once every kept byte is proved to be
    structure or coded image data and (``decode``) every frame decodes. What cannot be
    proved is re-coded (a JPEG's entropy-coded data written afresh from its DCT
    coefficients: the same pixels) or, returning None, sent to the pixel path; either way the
    report says why."""
    try:
        return out, verify(out, fmt, icc, size, decode=decode, reencoded=written)
    except Unproved as exc:
        what, why = exc.message, exc.why
    except CorruptImage as exc:  # the strip does not decode: what the decoder makes of it
        what, why = f"the stripped picture does not decode ({exc.message})", "damaged"
    if fmt == "JPEG":
        recoded = turbojpeg.recode(out)
        if recoded is not None:
            rebuilt = strip_jpeg(recoded, scan_jpeg(recoded), icc=icc)
            try:
                out_scan = verify(rebuilt, fmt, icc, size, decode=policy.verify_decode)
            except Unproved:
                pass
            else:
                notes.append(
                    explained(what, why, "compressed data re-coded losslessly (same pixels)")
                )
                return rebuilt, out_scan
    notes.append(explained(what, why, "re-encoded from the pixels"))
    return None


def explained(what: str, why: str, done: str) -> str:
    head = {"hidden": "removed: ", "damaged": "repaired: "}.get(why, "")
    return f"{head}{what}; {done}"


def lossless(raw: bytes, scan: Scan, *, orientation: int, icc_keep: bool) -> bytes | None:
    """The stripped bytes when the picture needs no change, else None (re-encode)."""
    form = FORMATS[scan.format]
    icc = scan.icc
    # A device profile has to be applied to the pixels; so does any profile but sRGB in a
    # format that cannot keep one (GIF colours are sRGB by convention).
    if icc is not None and not (
        icc_keep and (form.keeps_icc or (describe(icc) or "").startswith("sRGB"))
    ):
        return None
    kept = icc if icc_keep and form.keeps_icc else None
    if any(v != 1 for v in scan.extra.get("orientations", {}).values()):
        return None  # pages turned their own way (TIFF): each is turned from its pixels
    if orientation != 1:  # only JPEG turns losslessly (in the DCT domain)
        return turn_jpeg(raw, scan, orientation, kept) if form.name == "JPEG" else None
    if form.strip is None:
        if form.strip_refused is not None:
            raise Unproved(form.strip_refused, why="shape")
        return None
    return form.strip(raw, scan, kept)


def turn_jpeg(raw: bytes, scan: Scan, orientation: int, icc: bytes | None) -> bytes | None:
    """Turn a JPEG in the DCT domain (libjpeg-turbo), when that can be exact."""
    if not turbojpeg.perfect(orientation, (scan.width, scan.height), scan.extra["mcu"]):
        return None
    turned = turbojpeg.transform(strip_jpeg(raw, scan, icc=None), orientation)
    if turned is None:
        return None
    return strip_jpeg(turned, scan_jpeg(turned), icc=icc)


def verify(
    out: bytes,
    fmt: str,
    icc: bytes | None,
    size: tuple[int, int],
    *,
    decode: bool,
    reencoded: bool = True,
) -> Scan:
    """Prove the output clean: a fresh scan must find nothing but structure (and the standard
    profile we chose to keep), the size must be right, and, when asked, it must decode."""
    try:
        scan = scan_as(out, fmt)
    except CorruptImage as exc:
        raise UnsafeOutput(f"veilpix's own {fmt} output does not parse: {exc}") from exc
    icc_ok = icc is not None and is_standard(icc)
    dirty = scan.dirty_parts(icc_ok=icc_ok)
    if dirty or scan.exif[1 if fmt == "TIFF" else 0 :] or scan.xmp or scan.irb or scan.iptc:
        names = ", ".join(p.name for p in dirty) or "metadata payload"
        raise UnsafeOutput(f"{fmt} output still holds: {names}")
    if scan.comments or scan.texts or scan.c2pa or scan.thumbnails:
        raise UnsafeOutput(f"{fmt} output still holds comments, text or embedded images")
    if fmt == "JPEG":
        prove_jpeg(out, scan, own=reencoded)
    elif fmt == "PNG":
        prove_png(out, scan)
    elif fmt == "GIF" and not reencoded:
        prove_gif(out, scan)
    elif fmt == "TIFF" and not reencoded:
        prove_tiff(out, scan)
    if fmt == "TIFF":
        ex = parse_exif(out)
        if any(ex.ifds.get(k) for k in ("Exif", "GPS", "Interop")):
            raise UnsafeOutput("TIFF output still holds EXIF or GPS data")
    if (scan.width, scan.height) != size:
        raise UnsafeOutput(
            f"{fmt} output is {scan.width}x{scan.height}, expected {size[0]}x{size[1]}"
        )
    if decode:
        decode_check(out, fmt, size, reencoded=reencoded)
    return scan


def prove_jpeg(out: bytes, scan: Scan, *, own: bool) -> None:
    """The entropy-coded data of a single-scan JPEG, proved to end with its last block and
    to decode without a warning (libjpeg-turbo; see ``entropy_proof``). ``own``: libjpeg
    wrote it for veilpix (a re-encode, a re-code, a turn in the DCT domain), so every coded
    byte is the encoder's: no proof needed."""
    if own:
        return  # libjpeg wrote every coded byte (from pixels or coefficients): nothing hides
    size = (scan.width, scan.height)
    components = scan.extra["components"]
    if scan.extra.get("sof", 0xC0) >= 0xC9:
        # libjpeg's arithmetic decoder never runs short, so the cut proves nothing there
        raise Unproved("arithmetic coding written as Huffman coding", why="shape")
    try:
        if scan.extra.get("scans") != 1:
            # the cut decode proves one scan only: several are re-coded as one, after a
            # decode that says whether they hid (more than a few) bytes or are damaged
            found = turbojpeg.decode_warning(out, size, components)
            found = found or ("shape", "several scans (progressive) written as one sequential scan")
        else:
            found = turbojpeg.entropy_proof(
                out, size, components, coded_end=scan.extra["coded_end"]
            )
    except OSError as exc:
        raise Unproved(
            "the compressed data cannot be checked without libjpeg-turbo (install "
            "libturbojpeg0 / jpeg-turbo)",
            why="shape",
        ) from exc
    if found is not None:
        raise Unproved(found[1], why=found[0])


def decode_check(out: bytes, fmt: str, size: tuple[int, int], *, reencoded: bool) -> None:
    """Decode every frame of ``out``. JPEG is decoded with DCT scaling (1/8 size), which
    still reads every bit of the entropy-coded data but skips most of the inverse DCT.
    A stripped file that fails carries damage from its input (CorruptImage); a re-encoded
    one that fails is veilpix's fault (UnsafeOutput)."""
    from PIL import Image

    formats = list(FORMATS[fmt].decoders[:1])
    with decoding(fmt, output=reencoded), Image.open(io.BytesIO(out), formats=formats) as im:
        if im.size != size:
            raise UnsafeOutput(f"{fmt} output decodes to {im.size}, expected {size}")
        if fmt == "JPEG":
            im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            im.load()
