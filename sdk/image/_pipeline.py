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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from veilpix._errors import (
    ConfigError,
    CorruptImage,
    ImageTooLarge,
    UnsafeOutput,
    UnsupportedImage,
)
from veilpix._install import install_command
from veilpix._policy import Policy
from veilpix.formats._bmff import decode_error
from veilpix.formats._gif import scan_gif, strip_gif
from veilpix.formats._png import scan_png, strip_png
from veilpix.formats._registry import FORMATS, scan_as
from veilpix.formats._scan import IMAGE, Part, Scan, Unproved, check_scan, proof_memo
from veilpix.formats._sniff import sniff
from veilpix.formats._tiff import rewrite_tiff, scan_tiff
from veilpix.image._budget import check_decode, target_size
from veilpix.image._lossless import explained, lossless, proved, verify
from veilpix.image._pixels import (
    Picture,
    decode,
    deep_reencode,
    encode,
    has_alpha,
    orient,
    output_format,
    prepare,
)
from veilpix.image._report import ImageReport, SanitizedImage
from veilpix.image._transform import FaceFacts, apply, fit_mask
from veilpix.metadata._facts import Finding, GpsPosition
from veilpix.metadata._findings import Facts, collect, removed_parts
from veilpix.metadata._icc import describe, is_standard

__all__ = ["Inspection", "inspect", "sanitize", "sanitize_file", "sanitize_mask"]

Stage = Callable[["Picture"], "FaceFacts | None"]


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise UnsupportedImage(
        f"sanitize() takes the image as bytes, not {type(data).__name__}",
        hint="read the file first, or use veilpix.sanitize_file(path)",
    )


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
        scan = scan_as(raw, fmt)
    except CorruptImage:
        if not FORMATS[fmt].via_decoder:
            raise
        scan = Scan(fmt)
        notes.append("container listing incomplete (malformed boxes)")
    orientation = None
    if FORMATS[fmt].via_decoder:
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
        notes.append(f"EXIF/XMP details need the 'heif' extra: {install_command('heif')}")
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
    form = FORMATS[fmt]
    if form.via_decoder:
        stage = _faces_stage(policy, consent, orientation_known=False)
        listing = _bmff_scan(raw, fmt)
        try:
            return _sanitize_pixels(raw, fmt, listing, policy, Facts(), notes=[], stage=stage)
        except CorruptImage as exc:
            raise decode_error(exc, fmt, listing) from exc
    try:
        scan = scan_as(raw, fmt)
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
    strips = form.strip is not None or form.strip_refused is not None
    if target == fmt and strips and not _changes(policy, scan, orientation):
        if stage is not None and policy.looks_for_faces:  # consent check: look, strip losslessly
            face_facts = _look_only(raw, fmt, scan, policy, facts=facts, stage=stage)
        try:
            out = lossless(raw, scan, orientation=orientation, icc_keep=icc_keep)
        except Unproved as exc:  # the input's own data cannot be proved: take the pixels
            notes.append(explained(exc.message, exc.why, "re-encoded from the pixels"))
    kept_icc = icc if icc_keep and form.keeps_icc else None
    size = _turned((scan.width, scan.height), orientation)
    # a JPEG's proof is a decode already; PNG's and GIF's prove what a decoder reads (the
    # header's values, rows that inflate exactly with valid filters, LZW codes up to the
    # frame's pixels); a TIFF's tags can disagree in many more ways: it is decoded
    decode = policy.verify_decode or form.decode_to_prove
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
    checked = None
    if out is not None:
        # a JPEG turned in the DCT domain was written by libjpeg from its coefficients
        written = fmt == "JPEG" and orientation != 1
        checked = proved(
            out, fmt, kept_icc, size, policy=policy, notes=notes, decode=decode, written=written
        )
    if checked is None:
        return _sanitize_pixels(raw, fmt, scan, policy, facts, notes=notes, stage=stage)
    out, out_scan = checked
    if orientation != 1:
        notes.append("turned losslessly (DCT coefficients rotated, no re-encoding)")
    return _result(
        raw,
        out,
        fmt_out=fmt,
        scan=scan,
        out_scan=out_scan,
        facts=facts,
        orientation=orientation,
        kept_icc=kept_icc,
        source_icc=icc,
        lossless=True,
        notes=notes,
        faces=face_facts,
    )


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
    note = explained(exc.message, "damaged", "re-encoded from the pixels")
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
    w, h = _turned((scan.width, scan.height), orientation)
    return target_size(w, h, max_side=policy.max_side, max_pixels=policy.max_pixels) != (w, h)


def _look_only(
    raw: bytes, fmt: str, scan: Scan, policy: Policy, *, facts: Facts, stage: Stage
) -> FaceFacts | None:
    """Decode the picture upright and run the face stage on it without keeping the pixels
    (the consent rule needs to know about faces even when nothing will be changed)."""
    pic = decode(raw, fmt, policy)
    prepare(pic, policy, _first_orientation(scan, facts))
    return stage(pic)


def _first_orientation(scan: Scan, facts: Facts) -> int:
    """The orientation of the first frame (of its first page, where pages have their own)."""
    if "orientations" in scan.extra:
        return int(scan.extra["orientations"].get(0, 1))
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
        faces="off",
        require_consent_for_faces=False,
        max_side=None,
        max_pixels=None,
        output_format="png",
    )
    raw, fmt = _read(data, policy)
    rep = image.report
    upright_in = _turned((rep.width_in, rep.height_in), rep.orientation)
    out_size = (rep.width_out, rep.height_out)

    def stage(pic: Picture) -> None:
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

    via_decoder = FORMATS[fmt].via_decoder
    scan = _bmff_scan(raw, fmt) if via_decoder else scan_as(raw, fmt)
    if not via_decoder:
        check_scan(policy, scan)
    facts = Facts() if via_decoder else collect(scan)
    return _sanitize_pixels(
        raw, fmt, scan, policy, facts, notes=["mask: geometry of its image"], stage=stage
    )


def _bmff_scan(raw: bytes, fmt: str) -> Scan:
    try:
        return scan_as(raw, fmt)
    except CorruptImage:
        scan = Scan(fmt)  # the decoder decides; the listing is only for the report
        scan.extra["listing_incomplete"] = True
        return scan


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
        out_scan = verify(
            out, fmt, kept, _turned((scan.width, scan.height), orientation), decode=True
        )
        return _result(
            raw,
            out,
            fmt_out=fmt,
            scan=scan,
            out_scan=out_scan,
            facts=facts,
            orientation=orientation,
            kept_icc=kept,
            source_icc=scan.icc,
            lossless=False,
            notes=notes,
        )
    pic = decode(_decodable(raw, fmt, scan), fmt, policy)
    pic.lossless_source = bool(scan.extra.get("lossless"))
    if FORMATS[fmt].via_decoder or "repair" in scan.extra:  # facts from what the decoder read
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
    target = output_format(fmt, policy, len(pic.frames), alpha=has_alpha(pic.frames[0]))
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
    out_scan = verify(out, target, pic.icc, expect, decode=True)
    return _result(
        raw,
        out,
        fmt_out=target,
        scan=scan,
        out_scan=out_scan,
        facts=facts,
        orientation=orientation,
        kept_icc=pic.icc,
        source_icc=source_icc,
        lossless=False,
        notes=notes,
        icc_state=icc_state,
        faces=face_facts,
    )


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
    elif lossless and not FORMATS[scan.format].keeps_icc:
        icc = f"dropped: {describe(source_icc) or 'unnamed'} (GIF is sRGB)"
    else:
        icc = f"converted to sRGB from: {describe(source_icc) or 'unnamed profile'}"
    if orientation != 1:
        notes.insert(0, f"orientation {orientation} applied to the pixels")
    removed = removed_parts(scan, icc_kept=kept_icc is not None)
    if scan.format == "JPEG" and lossless and any(p.kind == IMAGE for p in scan.parts):
        notes.append("kept the first image only")
    media = FORMATS[fmt_out].media_type
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
