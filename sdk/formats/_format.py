"""``Format``: everything veilpix knows about one container format, in one declaration.

Each format module ends with the declaration of the format(s) it reads (``FORMATS``), and
:mod:`veilpix.formats._registry` collects them. The pipeline, the pixel path, the request
guard, the image finder, the file walker and the provenance reader ask the registry (which
scanner, which stripper, which media type and extensions, how the decoder treats it) instead
of branching on format names, so a format is added or fixed in its own module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from veilpix.formats._scan import Scan

__all__ = ["Format", "FormatName", "Stripper"]

# The formats veilpix sanitizes, by the name the report gives them ("MPO" is shown for a
# multi-picture JPEG, which is handled as JPEG).
FormatName = Literal["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF", "AVIF"]

# A lossless rebuild from kept structure: (input, its scan, the standard profile to keep or
# None) -> a new file holding nothing but what a decoder needs.
Stripper = Callable[[bytes, Scan, "bytes | None"], bytes]


@dataclass(frozen=True, eq=False)
class Format:
    """One container format. Content decides, never a name: ``signatures`` and ``accept``
    recognise the bytes; ``extensions`` only help to find files and to name outputs."""

    name: FormatName
    media_type: str
    # file name extensions, lower case; the first is the one veilpix names its output with
    extensions: tuple[str, ...]
    # byte strings one of which the file holds at ``offset`` (its magic number)
    signatures: tuple[bytes, ...]
    # the bounded container scanner (no pixels)
    scan: Callable[[bytes], Scan]
    offset: int = 0
    # extensions of files veilpix reads as this format but never names an output with
    # (a multi-picture ".mpo" comes out as a plain JPEG)
    read_extensions: tuple[str, ...] = ()
    # a further check of the first bytes when a signature alone is not enough
    accept: Callable[[bytes], bool] | None = None
    # the lossless strip; None: every output is re-encoded from the pixels
    strip: Stripper | None = None
    # why a lossless strip is never trusted for this format (said in the report)
    strip_refused: str | None = None
    # structural proof of a stripped file beyond the scan (what a decoder reads)
    prove: Callable[[bytes, Scan], None] | None = None
    # a stripped file is also decoded to prove it (TIFF: its tags can disagree in many ways)
    decode_to_prove: bool = False
    # Pillow's names for what may decode it (JPEG: also MPO); empty: decoded elsewhere
    decoders: tuple[str, ...] = ()
    # the pixel path can write it (output_format="auto" keeps it)
    writable: bool = True
    # an EXIF orientation may turn the picture (the decoder does not)
    exif_orientation: bool = False
    # several frames are one animation, composited on one canvas
    animated: bool = False
    # a standard colour profile can stay in a stripped file (GIF: sRGB by convention)
    keeps_icc: bool = True
    # always decoded and re-encoded: the scan lists boxes for the report only (HEIF, AVIF)
    via_decoder: bool = False

    def __repr__(self) -> str:
        return f"<Format {self.name}>"

    def accepts(self, data: bytes) -> bool:
        """Whether ``data`` starts like a file of this format."""
        if not data.startswith(self.signatures, self.offset):
            return False
        return self.accept is None or self.accept(data)

    @property
    def extension(self) -> str:
        """The extension veilpix names an output of this format with."""
        return self.extensions[0]
