"""The container summary every format scanner returns.

A scanner walks one container format (JPEG markers, PNG chunks, RIFF chunks, GIF blocks,
TIFF IFDs, ISO-BMFF boxes) without decoding pixels. It lists every element with a verdict
(structure that the picture needs, or something to drop) and hands the metadata payloads it
met to the report builder. The same scanners check veilpix's own output: an output is clean
when a fresh scan finds nothing but structure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from veilpix._errors import CorruptImage, ImageTooLarge, UnsafeOutput

if TYPE_CHECKING:
    from veilpix._policy import Policy

__all__ = [
    "Part",
    "PartKind",
    "Scan",
    "Unproved",
    "check_limits",
    "check_scan",
    "need",
    "proof_memo",
    "proved_once",
]

# Part kinds. Only STRUCTURE (and ICC when the profile is a standard one) survives a strip.
PartKind = Literal["structure", "metadata", "image", "icc", "trailer", "unknown"]
STRUCTURE: Final = "structure"
METADATA: Final = "metadata"
IMAGE: Final = "image"
ICC: Final = "icc"
TRAILER: Final = "trailer"
UNKNOWN: Final = "unknown"

T = TypeVar("T")
_MEMO: ContextVar[dict[bytes, Any] | None] = ContextVar("veilpix_proofs", default=None)


@contextmanager
def proof_memo() -> Iterator[None]:
    """Within one ``sanitize()`` call, remember what ``proved_once`` proved."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def proved_once(kind: str, data: bytes, params: tuple[Any, ...], prove: Callable[[], T]) -> T:
    """``prove()``, remembered within one ``sanitize()`` call (``proof_memo``) by a digest of
    ``data`` and ``params``: a strip walks or inflates the input's image data, and the
    verification of its output (the same bytes when nothing was hidden) would do it all
    again. The results are facts about bytes, so they hold wherever the same bytes come
    back."""
    memo = _MEMO.get()
    if memo is None:
        return prove()
    key = hashlib.sha256(f"{kind}{params!r}".encode() + b"\x00" + data).digest()
    if key not in memo:
        memo[key] = prove()
    return memo[key]  # type: ignore[no-any-return]


class Unproved(UnsafeOutput):
    """A stripped output holds bytes that cannot be proved to be structure or coded image
    data (``hidden``: bytes the picture does not need; else data that does not decode
    cleanly). The pipeline then re-codes or re-encodes the picture; the error itself reaches
    a caller only when that fails too.

    ``why``: "hidden" (bytes the picture does not need), "damaged" (data that does not decode
    cleanly) or "shape" (a valid layout the proof does not cover, e.g. progressive scans)."""

    default_hint = "the image was not sent; re-export it from the original source"

    def __init__(self, message: str, *, why: str) -> None:
        super().__init__(message)
        self.why = why


@dataclass(frozen=True)
class Part:
    """One element of a container: a JPEG segment, PNG chunk, RIFF chunk, GIF block, ..."""

    name: str
    offset: int
    length: int
    kind: PartKind
    detail: str = ""
    replacement: bytes | None = None  # a structure element rebuilt at its exact size

    def bytes_in(self, data: bytes) -> bytes:
        """What a strip writes for this part: the rebuilt element, or the original bytes."""
        if self.replacement is not None:
            return self.replacement
        return data[self.offset : self.offset + self.length]


@dataclass
class Scan:
    """Everything a scanner learned about one file, without decoding its pixels."""

    format: str
    width: int = 0
    height: int = 0
    frames: int = 1
    parts: list[Part] = field(default_factory=list)
    exif: list[bytes] = field(default_factory=list)  # TIFF-structured EXIF (no "Exif\0\0")
    xmp: list[bytes] = field(default_factory=list)
    irb: list[bytes] = field(default_factory=list)  # Photoshop image resource blocks
    iptc: list[bytes] = field(default_factory=list)  # bare IPTC-IIM datasets
    icc: bytes | None = None
    comments: list[tuple[str, str]] = field(default_factory=list)  # (source, text)
    texts: list[tuple[str, str, str]] = field(default_factory=list)  # (source, key, text)
    timestamps: list[tuple[str, str]] = field(default_factory=list)  # (source, value)
    c2pa: list[str] = field(default_factory=list)
    thumbnails: list[tuple[str, int]] = field(default_factory=list)  # (what, bytes)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        name: str,
        offset: int,
        length: int,
        kind: PartKind,
        detail: str = "",
        *,
        replacement: bytes | None = None,
    ) -> None:
        self.parts.append(Part(name, offset, length, kind, detail, replacement))

    def add_exif(self, blob: bytes) -> None:
        """Keep an EXIF block for the report, without its optional "Exif\\0\\0" header."""
        if blob:
            self.exif.append(blob[6:] if blob.startswith(b"Exif\x00") else blob)

    def add_decoder_metadata(self, info: dict[str, Any]) -> None:
        """EXIF, XMP and colour profile as a decoder (Pillow, pillow-heif) exposes them: the
        HEIF/AVIF containers are listed by veilpix, their payloads read by the decoder."""
        for key in ("exif", "xmp", "icc_profile"):
            blob = info.get(key)
            if not isinstance(blob, bytes | bytearray) or not blob:
                continue
            if key == "exif":
                self.add_exif(bytes(blob))
            elif key == "xmp":
                self.xmp.append(bytes(blob))
            else:
                self.icc = bytes(blob)

    def dirty_parts(self, *, icc_ok: bool) -> list[Part]:
        """Parts that must not be in a clean file."""
        return [p for p in self.parts if p.kind != STRUCTURE and not (p.kind == ICC and icc_ok)]


def need(data: bytes, end: int, what: str, fmt: str) -> None:
    """Raise CorruptImage when ``end`` runs past the data (a truncated or lying length field)."""
    if end > len(data):
        raise CorruptImage(
            f"{fmt} is truncated or malformed: {what} runs past the end of the file "
            f"({end} > {len(data)} bytes)"
        )


def check_limits(
    policy: Policy,
    width: int,
    height: int,
    frames: int,
    *,
    largest: tuple[int, int] | None = None,
    total: int = 0,
) -> None:
    """Raise ImageTooLarge before any big allocation.

    ``largest`` is the biggest single frame or page when it can exceed the canvas (a GIF
    frame outside its logical screen, a later TIFF page); ``total`` the pixels of all frames
    when they differ in size."""
    if width <= 0 or height <= 0:
        raise CorruptImage(f"image declares an empty size {width}x{height}")
    big_w, big_h = width, height
    if largest is not None and largest[0] * largest[1] > width * height:
        big_w, big_h = largest
    pixels = big_w * big_h
    if pixels > policy.max_input_pixels:
        raise ImageTooLarge(
            f"image is {big_w}x{big_h} = {pixels:,} pixels, over the limit of {policy.max_input_pixels:,}",
            hint=_raise("max_input_pixels"),
        )
    if frames > policy.max_frames:
        raise ImageTooLarge(
            f"image has {frames} frames, over the limit of {policy.max_frames}",
            hint=_raise("max_frames"),
        )
    all_pixels = max(total, width * height * frames)
    if all_pixels > policy.max_total_pixels:
        raise ImageTooLarge(
            f"image has {frames} frames with {all_pixels:,} pixels in all frames, over the "
            f"limit of {policy.max_total_pixels:,}",
            hint=_raise("max_total_pixels"),
        )


def _raise(setting: str) -> str:
    """The hint of a limit: the setting that raises it, in code and in veilpix.toml."""
    return (
        f"downscale it first, or raise Policy({setting}=...) / [policy] {setting} in veilpix.toml"
    )


def check_scan(policy: Policy, scan: Scan) -> None:
    """check_limits for everything a scan learned about frame and page sizes."""
    check_limits(
        policy,
        scan.width,
        scan.height,
        scan.frames,
        largest=scan.extra.get("largest_frame"),
        total=scan.extra.get("total_pixels", 0),
    )
