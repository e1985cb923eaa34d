"""``sanitize()``: the image pipeline, in its fixed order.

sniff → scan the container (bounded, no pixels) → limits → findings → either a lossless strip
(the picture needs no change) or decode → orientation → colour → [faces → downscale] → encode
→ verify the output by scanning it again (nothing but structure may remain, and the extent of
its compressed data is proved by the codec: see docs/sanitize.md) and, on the pixel path,
decoding it. A strip that cannot be proved is re-coded (JPEG) or takes the pixel path; a
container the scanner refuses but whose pixels decode whole is repaired through the pixel
path.
No path returns input bytes: every output is either rebuilt from structure elements or
re-encoded from pixels, and must pass the verification.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from veilpix._errors import (
    ConfigError,
    CorruptImage,
    ImageTooLarge,
    UnsafeOutput,
    UnsupportedImage,
)
from veilpix._policy import Policy
from veilpix.formats._bmff import decode_error, scan_bmff
from veilpix.formats._bmp import scan_bmp
from veilpix.formats._gif import prove_gif, scan_gif, strip_gif
from veilpix.formats._jpeg import scan_jpeg, strip_jpeg
from veilpix.formats._png import prove_png, scan_png, strip_png
from veilpix.formats._scan import IMAGE, Part, Scan, Unproved, check_scan, proof_memo
from veilpix.formats._sniff import MEDIA_TYPES, sniff
from veilpix.formats._tiff import not_lossless, prove_tiff, rewrite_tiff, scan_tiff
from veilpix.formats._webp import scan_webp
from veilpix.image._budget import check_decode
from veilpix.image._report import Finding, GpsPosition, ImageReport, SanitizedImage
from veilpix.metadata._findings import Facts, collect, removed_parts
from veilpix.metadata._icc import describe, is_standard

if TYPE_CHECKING:
    from veilpix.image._pixels import Picture
    from veilpix.image._transform import FaceFacts

__all__ = ["Inspection", "inspect", "sanitize", "sanitize_file", "sanitize_mask"]

Stage = Callable[["Picture"], "FaceFacts | None"]

_SCANNERS: dict[str, Callable[[bytes], Scan]] = {
    "JPEG": scan_jpeg,
    "PNG": scan_png,
    "WEBP": scan_webp,
    "GIF": scan_gif,
    "TIFF": scan_tiff,
    "BMP": scan_bmp,
    "HEIF": lambda data: scan_bmff(data, "HEIF"),
    "AVIF": lambda data: scan_bmff(data, "AVIF"),
}
_BMFF = ("HEIF", "AVIF")


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise UnsupportedImage(
        f"sanitize() takes the image as bytes, not {type(data).__name__}",
        hint="read the file first, or use veilpix.sanitize_file(path)",
    )


def _scan(data: bytes, fmt: str) -> Scan:
    try:
        return _SCANNERS[fmt](data)
    except (struct.error, IndexError, ValueError, zlib.error) as exc:
        raise CorruptImage(f"{fmt} is malformed: {exc}") from exc


def _display_format(scan: Scan) -> str:
    if scan.format == "JPEG" and any(p.name == "APP2 MPF" for p in scan.parts):
        return "MPO"
    return scan.format


@dataclass(frozen=True)
class Inspection:
    """What an image carries, read without changing it (``veilpix inspect``)."""

    format: str
    width: int
    height: int
    frames: int
    bytes: int
    sha256: str
    orientation: int
    findings: tuple[Finding, ...]
    containers: tuple[Part, ...]
    gps: GpsPosition | None
    icc: str | None = None  # description of the colour profile, if any
    notes: tuple[str, ...] = ()

    @property
    def sensitive(self) -> bool:
        return any(f.sensitive for f in self.findings)


def inspect(data: bytes | bytearray | memoryview) -> Inspection:
    """Report the metadata an image carries, without decoding its pixels where possible."""
    raw = _as_bytes(data)
    fmt = sniff(raw)
    notes: list[str] = []
    try:
        scan = _scan(raw, fmt)
    except CorruptImage:
        if fmt not in _BMFF:
            raise
        scan = Scan(fmt)
        notes.append("container listing incomplete (malformed boxes)")
    orientation = None
    if fmt in _BMFF:
        orientation = _bmff_metadata(raw, fmt, scan, notes)
    facts = collect(scan)
    return Inspection(
        format=_display_format(scan),
        width=scan.width,
        height=scan.height,
        frames=scan.frames,
        bytes=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        orientation=orientation or facts.orientation or 1,
        findings=tuple(facts.findings),
        containers=tuple(scan.parts),
        gps=facts.gps,
        icc=None if scan.icc is None else (facts.icc_description or "unnamed profile"),
        notes=tuple(notes),
    )


def _bmff_metadata(data: bytes, fmt: str, scan: Scan, notes: list[str]) -> int | None:
    """EXIF/XMP/ICC and size of a HEIF/AVIF primary image, read without decoding pixels."""
    from PIL import Image

    info: dict[Any, Any]
    try:
        if fmt == "HEIF":
            import pillow_heif

            heif = pillow_heif.open_heif(io.BytesIO(data))
            img = heif[heif.primary_index]
            scan.width, scan.height = img.size
            info = dict(img.info)
            orientation = 1  # libheif applies irot/imir; HEIF ignores EXIF orientation
        else:
            with Image.open(io.BytesIO(data), formats=["AVIF"]) as im:
                scan.width, scan.height = im.size
                scan.frames = getattr(im, "n_frames", 1)
                info = dict(im.info)
                orientation = int(im.getexif().get(274, 1) or 1)
    except ImportError:
        notes.append("EXIF/XMP details need the 'heif' extra: pip install 'veilpix[heif]'")
        return None
    except Exception as exc:  # noqa: BLE001 - decoder errors of every kind end the same way
        notes.append(f"metadata not readable: {exc}")
        return None
    scan.add_decoder_metadata(info)
    return orientation


def sanitize_file(
    path: str, policy: Policy | None = None, *, consent: str | None = None
) -> SanitizedImage:
    """Read ``path`` and sanitize it (the file itself is not changed)."""
    with open(path, "rb") as fh:
        data = fh.read((policy or Policy()).max_bytes + 1)
    return sanitize(data, policy, consent=consent)


def _read(data: bytes | bytearray | memoryview, policy: Policy) -> tuple[bytes, str]:
    raw = _as_bytes(data)
    if len(raw) > policy.max_bytes:
        raise ImageTooLarge(f"image is {len(raw):,} bytes, over the limit of {policy.max_bytes:,}")
    return raw, sniff(raw)


def _faces_stage(policy: Policy, consent: str | None, orientation_known: bool) -> Stage | None:
    if not policy.looks_for_faces and not policy.changes_pixels:
        return None

    def stage(pic: Picture) -> FaceFacts:
        from veilpix.image._transform import apply

        return apply(pic, policy, consent=consent, orientation_known=orientation_known)

    return stage


def sanitize(
    data: bytes | bytearray | memoryview,
    policy: Policy | None = None,
    *,
    consent: str | None = None,
) -> SanitizedImage:
    """Return the image with every piece of metadata removed, upright, and otherwise as it was
    (apart from the face blurring and downscaling the policy asks for).

    ``consent`` is the reference of the consent you hold for the people in the picture (an ID
    in your consent records); it is recorded in the report, and it is what lets an image
    with unblurred faces through under ``Policy(require_consent_for_faces=True)``.

    Raises a :class:`~veilpix.VeilpixError` (``UnsupportedImage``, ``CorruptImage``,
    ``ImageTooLarge``, ``UnsafeOutput``, ``FaceDetectionError``, ``ConsentRequired``) when
    that cannot be done; nothing is returned then.
    """
    with proof_memo():
        return _sanitize(data, policy, consent)


def _sanitize(
    data: bytes | bytearray | memoryview, policy: Policy | None, consent: str | None
) -> SanitizedImage:
    policy = policy or Policy()
    if consent is not None and (not isinstance(consent, str) or not consent.strip()):
        raise ConfigError("consent must be a non-empty reference string, or None")
    raw, fmt = _read(data, policy)
    if fmt in _BMFF:
        stage = _faces_stage(policy, consent, orientation_known=False)
        listing = _bmff_scan(raw, fmt)
        try:
            return _sanitize_pixels(raw, fmt, listing, policy, Facts(), notes=[], stage=stage)
        except CorruptImage as exc:
            raise decode_error(exc, fmt, listing) from exc
    try:
        scan = _scan(raw, fmt)
    except CorruptImage as exc:
        return _repair(raw, fmt, policy, consent, exc)
    check_scan(policy, scan)
    facts = collect(scan)
    stage = _faces_stage(policy, consent, orientation_known=facts.orientation is not None)
    orientation = facts.orientation or 1
    target = fmt if policy.output_format == "auto" else policy.output_format.upper()
    icc = scan.icc
    icc_keep = icc is not None and policy.keep_standard_icc and is_standard(icc)
    notes: list[str] = []
    out = None
    face_facts = None
    if target == fmt and fmt != "BMP" and not _changes(policy, scan, orientation):
        if stage is not None and policy.looks_for_faces:  # consent check: look, strip losslessly
            face_facts = _look_only(raw, fmt, scan, policy, facts=facts, stage=stage)
        try:
            out = _lossless(raw, scan, orientation=orientation, icc_keep=icc_keep)
        except Unproved as exc:  # the input's own data cannot be proved: take the pixels
            notes.append(_why(exc.message, exc.why, "re-encoded from the pixels"))
    kept_icc = icc if icc_keep and fmt != "GIF" else None
    size = _turned((scan.width, scan.height), orientation)
    # a JPEG's proof is a decode already; PNG's and GIF's prove what a decoder reads (the
    # header's values, rows that inflate exactly with valid filters, LZW codes up to the
    # frame's pixels); a TIFF's tags can disagree in many more ways: it is decoded
    decode = policy.verify_decode or fmt == "TIFF"
    if out is not None and decode:  # decodes every frame of the strip: within the budget
        try:
            check_decode(
                policy,
                fmt,
                frames=scan.frames,
                canvas=size,
                total=scan.extra.get("total_pixels", 0),
            )
        except ImageTooLarge:
            if policy.verify_decode:
                raise
            decode = False  # beyond the budget the structural proofs stand alone
    proved = None
    if out is not None:
        # a JPEG turned in the DCT domain was written by libjpeg from its coefficients
        written = fmt == "JPEG" and orientation != 1
        proved = _proved(
            out, fmt, kept_icc, size, policy=policy, notes=notes, decode=decode, written=written
        )
    if proved is None:
        return _sanitize_pixels(raw, fmt, scan, policy, facts, notes=notes, stage=stage)
    out, out_scan = proved
    if orientation != 1:
        notes.append("turned losslessly (DCT coefficients rotated, no re-encoding)")
    return _result(
        raw, out, fmt_out=fmt, scan=scan, out_scan=out_scan, facts=facts, orientation=orientation,
        kept_icc=kept_icc, source_icc=icc, lossless=True, notes=notes, faces=face_facts,
    )  # fmt: skip


def _proved(
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
        return out, _verify(out, fmt, icc, size, decode=decode, reencoded=written)
    except Unproved as exc:
        what, why = exc.message, exc.why
    except CorruptImage as exc:  # the strip does not decode: what the decoder makes of it
        what, why = f"the stripped picture does not decode ({exc.message})", "damaged"
    if fmt == "JPEG":
        from veilpix.image._turbojpeg import recode

        recoded = recode(out)
        if recoded is not None:
            rebuilt = strip_jpeg(recoded, scan_jpeg(recoded), icc=icc)
            try:
                out_scan = _verify(rebuilt, fmt, icc, size, decode=policy.verify_decode)
            except Unproved:
                pass
            else:
                notes.append(_why(what, why, "compressed data re-coded losslessly (same pixels)"))
                return rebuilt, out_scan
    notes.append(_why(what, why, "re-encoded from the pixels"))
    return None


def _why(what: str, why: str, done: str) -> str:
    head = {"hidden": "removed: ", "damaged": "repaired: "}.get(why, "")
    return f"{head}{what}; {done}"


def _repair(
    raw: bytes, fmt: str, policy: Policy, consent: str | None, exc: CorruptImage
) -> SanitizedImage:
    """A container the scanner refuses (a zero-length segment, sub-blocks running past the
    end, an IFD offset out of range, ...) whose pixels a decoder still reads whole, within
    the same limits: re-encoded from those pixels, the report saying it was repaired. When
    the decoder fails too, the scanner's error stands."""
    scan = Scan(fmt)
    scan.extra["repair"] = exc.message
    stage = _faces_stage(policy, consent, orientation_known=False)
    note = _why(exc.message, "damaged", "re-encoded from the pixels")
    try:
        return _sanitize_pixels(raw, fmt, scan, policy, Facts(), notes=[note], stage=stage)
    except CorruptImage:
        raise exc from None


def _changes(policy: Policy, scan: Scan, orientation: int) -> bool:
    """Whether the policy will change this picture's pixels (faces, or a real downscale)."""
    if policy.faces != "off":
        return True
    if policy.max_side is None and policy.max_pixels is None:
        return False
    from veilpix.image._transform import target_size

    w, h = _turned((scan.width, scan.height), orientation)
    return target_size(w, h, max_side=policy.max_side, max_pixels=policy.max_pixels) != (w, h)


def _look_only(
    raw: bytes, fmt: str, scan: Scan, policy: Policy, *, facts: Facts, stage: Stage
) -> FaceFacts | None:
    """Decode the picture upright and run the face stage on it without keeping the pixels
    (the consent rule needs to know about faces even when nothing will be changed)."""
    from veilpix.image._pixels import decode, prepare

    pic = decode(raw, fmt, policy)
    prepare(pic, policy, _first_orientation(scan, facts))
    return stage(pic)


def _first_orientation(scan: Scan, facts: Facts) -> int:
    """The orientation of the first frame (TIFF: of its first page)."""
    if scan.format == "TIFF":
        return int(scan.extra.get("orientations", {}).get(0, 1))
    return facts.orientation or 1


def sanitize_mask(
    data: bytes | bytearray | memoryview, image: SanitizedImage, policy: Policy | None = None
) -> SanitizedImage:
    """Sanitize the mask that goes with ``image`` (an edit endpoint's ``mask``).

    The mask loses its metadata like any image and gets exactly ``image``'s output geometry:
    the same turn when it was drawn on the unturned picture, the same size, resampled with
    nearest-neighbour so its alpha keeps the values that were drawn. It is never face-blurred
    and always comes out as PNG (masks need alpha).
    """
    policy = (policy or Policy()).replace(
        faces="off", require_consent_for_faces=False, max_side=None, max_pixels=None,
        output_format="png",
    )  # fmt: skip
    raw, fmt = _read(data, policy)
    rep = image.report
    upright_in = _turned((rep.width_in, rep.height_in), rep.orientation)
    out_size = (rep.width_out, rep.height_out)

    def stage(pic: Picture) -> None:
        from veilpix.image._pixels import orient
        from veilpix.image._transform import fit_mask

        size = pic.frames[0].size
        if size not in (upright_in, out_size):
            if size == (rep.width_in, rep.height_in) and rep.orientation != 1:
                pic.frames = [orient(f, rep.orientation) for f in pic.frames]
            else:
                raise ConfigError(
                    f"the mask is {size[0]}x{size[1]} but its image is "
                    f"{upright_in[0]}x{upright_in[1]}",
                    hint="a mask must have the same size as the image it goes with",
                )
        pic.frames = [fit_mask(f, out_size) for f in pic.frames[:1]]

    scan = _bmff_scan(raw, fmt) if fmt in _BMFF else _scan(raw, fmt)
    if fmt not in _BMFF:
        check_scan(policy, scan)
    facts = Facts() if fmt in _BMFF else collect(scan)
    return _sanitize_pixels(
        raw, fmt, scan, policy, facts, notes=["mask: geometry of its image"], stage=stage
    )


def _bmff_scan(raw: bytes, fmt: str) -> Scan:
    try:
        return _scan(raw, fmt)
    except CorruptImage:
        scan = Scan(fmt)  # the decoder decides; the listing is only for the report
        scan.extra["listing_incomplete"] = True
        return scan


def _lossless(raw: bytes, scan: Scan, *, orientation: int, icc_keep: bool) -> bytes | None:
    """The stripped bytes when the picture needs no change, else None (re-encode)."""
    fmt = scan.format
    icc = scan.icc
    kept = icc if icc_keep else None
    if fmt == "GIF":
        # GIF colours are sRGB by convention: an sRGB profile can go, any other is applied.
        srgb = icc is None or (icc_keep and (describe(icc) or "").startswith("sRGB"))
        return strip_gif(raw, scan) if orientation == 1 and srgb else None
    if icc is not None and not icc_keep:
        return None  # a device profile has to be applied to the pixels
    if fmt == "TIFF":
        turned = any(v != 1 for v in scan.extra.get("orientations", {}).values())
        if turned:
            return None
        reason = not_lossless(raw, scan)
        if reason is not None:
            raise Unproved(reason, why="shape")
        return rewrite_tiff(raw, scan, icc=kept)
    if orientation != 1:
        return _turn_jpeg(raw, scan, orientation, kept) if fmt == "JPEG" else None
    if fmt == "WEBP":
        raise Unproved(
            "a WebP bitstream's end cannot be proved (libwebp ignores bytes after it)", why="shape"
        )
    strip = {"JPEG": strip_jpeg, "PNG": strip_png}.get(fmt)
    return strip(raw, scan, icc=kept) if strip is not None else None


def _turn_jpeg(raw: bytes, scan: Scan, orientation: int, icc: bytes | None) -> bytes | None:
    """Turn a JPEG in the DCT domain (libjpeg-turbo), when that can be exact."""
    from veilpix.image._turbojpeg import perfect, transform

    if not perfect(orientation, (scan.width, scan.height), scan.extra["mcu"]):
        return None
    turned = transform(strip_jpeg(raw, scan, icc=None), orientation)
    if turned is None:
        return None
    return strip_jpeg(turned, scan_jpeg(turned), icc=icc)


def _deep(scan: Scan) -> bool:
    """A single-frame 16-bit colour PNG or TIFF (Pillow would read it as 8-bit)."""
    if scan.frames != 1 or scan.extra.get("bit_depth") != 16:
        return False
    if scan.format == "PNG":
        return scan.extra.get("color_type") in (2, 4, 6)
    return scan.format == "TIFF" and scan.extra.get("samples", 1) >= 3


def _sanitize_pixels(
    raw: bytes,
    fmt: str,
    scan: Scan,
    policy: Policy,
    facts: Facts,
    *,
    notes: list[str],
    stage: Stage | None = None,
) -> SanitizedImage:
    from veilpix.image._pixels import decode, deep_reencode, encode, prepare

    orientation = _first_orientation(scan, facts)
    icc_fine = scan.icc is None or (policy.keep_standard_icc and is_standard(scan.icc))
    if _deep(scan) and stage is not None:
        notes.append("16-bit image processed at 8 bits for face blurring / resizing")
    elif _deep(scan) and policy.output_format == "auto" and icc_fine:
        out = deep_reencode(raw, fmt, orientation, policy=policy, size=(scan.width, scan.height))
        kept = scan.icc
        if kept is not None:
            out = _attach_icc(out, fmt, kept)
        notes.append("16-bit depth kept")
        out_scan = _verify(
            out, fmt, kept, _turned((scan.width, scan.height), orientation), decode=True
        )
        return _result(
            raw, out, fmt_out=fmt, scan=scan, out_scan=out_scan, facts=facts, orientation=orientation,
            kept_icc=kept, source_icc=scan.icc, lossless=False, notes=notes,
        )  # fmt: skip
    pic = decode(_decodable(raw, fmt, scan), fmt, policy)
    pic.lossless_source = bool(scan.extra.get("lossless"))
    if fmt in _BMFF or "repair" in scan.extra:  # facts from what the decoder read
        scan.add_decoder_metadata(pic.meta)
        scan.width, scan.height = pic.frames[0].size
        scan.frames = len(pic.frames)
        facts = collect(scan)
        if scan.extra.get("listing_incomplete"):
            notes.append("container listing incomplete (malformed boxes); image decoded")
    else:
        pic.orientation = facts.orientation or 1
        if scan.icc is not None:
            pic.icc = scan.icc  # decoders do not surface every profile (GIF, BMP)
    orientation = pic.orientation
    source_icc = pic.icc
    icc_state, icc_note = prepare(pic, policy, orientation)
    if icc_note:
        notes.append(icc_note)
    face_facts = stage(pic) if stage is not None else None
    if face_facts is not None:
        notes.extend(face_facts.notes)
    target = _pixel_target(fmt, pic, policy)
    if target != _family(fmt):
        notes.append(f"{_display_format(scan)} written as {target}")
    out, enc_notes = encode(pic, target, policy)
    if target == "PNG":  # the encoder writes a picture's palette whole, used or not
        out = strip_png(out, scan_png(out), icc=pic.icc)
    elif target == "GIF":  # likewise its colour tables
        try:
            out = strip_gif(out, scan_gif(out))
        except Unproved as exc:
            if exc.why != "shape":
                raise UnsafeOutput(f"veilpix's own GIF output: {exc.message}") from exc
            notes.append("colour tables not reduced to the colours used (LZW data over 16 MiB)")
    notes.extend(enc_notes)
    notes.extend(pic.notes)
    expect = pic.frames[0].size
    out_scan = _verify(out, target, pic.icc, expect, decode=True)
    return _result(
        raw, out, fmt_out=target, scan=scan, out_scan=out_scan, facts=facts, orientation=orientation,
        kept_icc=pic.icc, source_icc=source_icc, lossless=False, notes=notes, icc_state=icc_state,
        faces=face_facts,
    )  # fmt: skip


def _decodable(raw: bytes, fmt: str, scan: Scan) -> bytes:
    """What the decoder is given: the input; for a PNG whose colour profile is larger than
    Pillow reads (1 MB) the stripped PNG without it (veilpix's own bounded reader has the
    profile already: it is applied from ``scan.icc``); for a big-endian BigTIFF its pages as
    a classic TIFF."""
    if fmt == "TIFF" and scan.extra.get("bigtiff") and raw[:2] == b"MM":
        try:  # Pillow reads no big-endian BigTIFF: give it the same pages as a classic TIFF
            return rewrite_tiff(raw, scan, icc=None, orientation=True)
        except (Unproved, CorruptImage):
            return raw
    if fmt != "PNG" or scan.icc is None or "repair" in scan.extra:
        return raw
    from PIL import PngImagePlugin

    if len(scan.icc) <= PngImagePlugin.MAX_TEXT_CHUNK:
        return raw
    try:
        return strip_png(raw, scan, icc=None)
    except Unproved:
        return raw


def _turned(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def _attach_icc(out: bytes, fmt: str, icc: bytes) -> bytes:
    """Add a (standard) profile to a freshly encoded PNG or TIFF."""
    if fmt == "PNG":
        return strip_png(out, scan_png(out), icc=icc)
    return rewrite_tiff(out, scan_tiff(out), icc=icc)


def _family(fmt: str) -> str:
    return "JPEG" if fmt == "MPO" else fmt


def _pixel_target(fmt: str, pic: object, policy: Policy) -> str:
    from veilpix.image._pixels import Picture, _has_alpha

    assert isinstance(pic, Picture)
    if policy.output_format != "auto":
        return policy.output_format.upper()
    if fmt in _BMFF:
        return "PNG" if len(pic.frames) > 1 or _has_alpha(pic.frames[0]) else "JPEG"
    return fmt


def _verify(
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
        scan = _scan(out, fmt)
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
        _prove_jpeg(out, scan, own=reencoded)
    elif fmt == "PNG":
        prove_png(out, scan)
    elif fmt == "GIF" and not reencoded:
        prove_gif(out, scan)
    elif fmt == "TIFF" and not reencoded:
        prove_tiff(out, scan)
    if fmt == "TIFF":
        from veilpix.metadata._exif import parse_exif

        ex = parse_exif(out)
        if any(ex.ifds.get(k) for k in ("Exif", "GPS", "Interop")):
            raise UnsafeOutput("TIFF output still holds EXIF or GPS data")
    if (scan.width, scan.height) != size:
        raise UnsafeOutput(
            f"{fmt} output is {scan.width}x{scan.height}, expected {size[0]}x{size[1]}"
        )
    if decode:
        _decode_check(out, fmt, size, reencoded=reencoded)
    return scan


def _prove_jpeg(out: bytes, scan: Scan, *, own: bool) -> None:
    """The entropy-coded data of a single-scan JPEG, proved to end with its last block and
    to decode without a warning (libjpeg-turbo; see ``entropy_proof``). ``own``: libjpeg
    wrote it for veilpix (a re-encode, a re-code, a turn in the DCT domain), so every coded
    byte is the encoder's: no proof needed."""
    from veilpix.image._turbojpeg import decode_warning, entropy_proof

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
            found = decode_warning(out, size, components)
            found = found or ("shape", "several scans (progressive) written as one sequential scan")
        else:
            found = entropy_proof(out, size, components, coded_end=scan.extra["coded_end"])
    except OSError as exc:
        raise Unproved(
            "the compressed data cannot be checked without libjpeg-turbo (install "
            "libturbojpeg0 / jpeg-turbo)",
            why="shape",
        ) from exc
    if found is not None:
        raise Unproved(found[1], why=found[0])


def _decode_check(out: bytes, fmt: str, size: tuple[int, int], *, reencoded: bool) -> None:
    """Decode every frame of ``out``. JPEG is decoded with DCT scaling (1/8 size), which
    still reads every bit of the entropy-coded data but skips most of the inverse DCT.
    A stripped file that fails carries damage from its input (CorruptImage); a re-encoded
    one that fails is veilpix's fault (UnsafeOutput)."""
    from PIL import Image

    from veilpix.image._pixels import decoding

    with decoding(fmt, output=reencoded), Image.open(io.BytesIO(out), formats=[fmt]) as im:
        if im.size != size:
            raise UnsafeOutput(f"{fmt} output decodes to {im.size}, expected {size}")
        if fmt == "JPEG":
            im.draft(im.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            im.load()


def _result(
    raw: bytes,
    out: bytes,
    *,
    fmt_out: str,
    scan: Scan,
    out_scan: Scan,
    facts: Facts,
    orientation: int,
    kept_icc: bytes | None,
    source_icc: bytes | None,
    lossless: bool,
    notes: list[str],
    icc_state: str | None = None,
    faces: FaceFacts | None = None,
) -> SanitizedImage:
    if kept_icc is not None:
        icc = f"kept: {describe(kept_icc)}"
    elif source_icc is None:
        icc = "none"
    elif icc_state == "dropped":
        icc = "dropped: unreadable profile"
    elif scan.format == "GIF" and lossless:
        icc = f"dropped: {describe(source_icc) or 'unnamed'} (GIF is sRGB)"
    else:
        icc = f"converted to sRGB from: {describe(source_icc) or 'unnamed profile'}"
    if orientation != 1:
        notes.insert(0, f"orientation {orientation} applied to the pixels")
    removed = removed_parts(scan, icc_kept=kept_icc is not None)
    if scan.format == "JPEG" and lossless and any(p.kind == IMAGE for p in scan.parts):
        notes.append("kept the first image only")
    media = MEDIA_TYPES[fmt_out]
    report = ImageReport(
        format_in=_display_format(scan),
        format_out=fmt_out,
        media_type=media,
        width_in=scan.width,
        height_in=scan.height,
        width_out=out_scan.width,
        height_out=out_scan.height,
        frames_in=scan.frames,
        frames_out=out_scan.frames,
        bytes_in=len(raw),
        bytes_out=len(out),
        sha256_in=hashlib.sha256(raw).hexdigest(),
        sha256_out=hashlib.sha256(out).hexdigest(),
        lossless=lossless,
        orientation=orientation,
        icc=icc,
        findings=tuple(facts.findings),
        removed=tuple(removed),
        gps=facts.gps,
        notes=tuple(dict.fromkeys(notes)),
        **_face_fields(faces),
    )
    return SanitizedImage(out, media, report)


def _face_fields(faces: FaceFacts | None) -> dict[str, Any]:
    if faces is None:
        return {}
    return {
        "faces_checked": faces.looked,
        "faces_found": faces.found,
        "faces_blurred": faces.blurred,
        "face_mode": faces.mode,
        "face_boxes": tuple(faces.boxes),
        "face_detector": faces.detector,
        "consent": faces.consent,
        "downscaled": faces.downscaled,
    }
