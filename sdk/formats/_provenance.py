"""Provenance marks in an image, read without changing it: C2PA manifest stores and IPTC
digital source types (``veilpix.Client`` reports them on what vendors return).

Where a format keeps a C2PA manifest store (a JPEG APP11 JUMBF segment, a PNG ``caBX`` chunk,
a WebP ``C2PA`` chunk, a GIF ``C2PA`` application extension, an ISO-BMFF ``uuid`` box) is the
format's own knowledge: its scanner, found through the format registry, lists the element.
This module adds only what no container knows: whether a JUMBF box is a C2PA one, the
manifest store's signature, which it looks for in any file, and the digital source type
terms, in XMP or inside a manifest.
"""

from __future__ import annotations

import re
import struct
import zlib

from veilpix._errors import ImageError
from veilpix.formats._registry import format_of

__all__ = ["detect_provenance"]

# The IPTC NewsCodes digital source types (cv.iptc.org/newscodes/digitalsourcetype/). Matched
# as whole terms, longest first: in a CBOR-encoded C2PA manifest the next byte after a term
# can be a letter, so "any letters" would run on into the next key.
_SOURCE_TERMS = sorted(
    (
        "trainedAlgorithmicMedia",
        "compositeWithTrainedAlgorithmicMedia",
        "algorithmicMedia",
        "compositeSynthetic",
        "composite",
        "digitalCapture",
        "computationalCapture",
        "negativeFilm",
        "positiveFilm",
        "print",
        "humanEdits",
        "minorHumanEdits",
        "algorithmicallyEnhanced",
        "digitalCreation",
        "dataDrivenMedia",
        "screenCapture",
        "virtualRecording",
        "compositeCapture",
        "digitalArt",
    ),
    key=len,
    reverse=True,
)
_DIGITAL_SOURCE = re.compile(
    rb"digitalsourcetype/(" + b"|".join(t.encode() for t in _SOURCE_TERMS) + rb")"
)
# A C2PA manifest store box: a JUMBF description box ('jumd') whose type UUID begins "c2pa".
_MANIFEST_STORE = b"jumdc2pa"
# Formats whose scanner lists any JUMBF box (a JPEG APP11 segment, a HEIF 'jumb' item), which
# may be another kind of store (the older CAI ones): there the file must carry the C2PA label
# too. The other formats' elements (PNG caBX, WebP C2PA, GIF C2PA) are C2PA by their type.
_ANY_JUMBF = frozenset({"JPEG", "HEIF", "AVIF"})
_LABEL = b"c2pa"


def _in_container(data: bytes) -> bool:
    """Whether the scanner of ``data``'s format lists a C2PA element. A file its scanner
    cannot read (damaged, or no image format veilpix knows) counts as none here."""
    found = format_of(data)
    if found is None:
        return False
    try:
        listed = bool(found.scan(data).c2pa)
    except (ImageError, struct.error, IndexError, ValueError, zlib.error):
        return False
    return listed and (found.name not in _ANY_JUMBF or _LABEL in data)


def detect_provenance(data: bytes) -> list[str]:
    """The provenance marks in an image, as veilpix can see them without changing anything:

    * ``"c2pa"``: a C2PA manifest store (JUMBF in a JPEG APP11 segment, a PNG ``caBX``
      chunk, a RIFF/WebP ``C2PA`` chunk, a GIF ``C2PA`` extension, an ISO-BMFF ``uuid`` box,
      or a C2PA manifest store box anywhere in other formats);
    * ``"digital_source_type:<value>"``: an IPTC digital source type (in XMP or inside the
      C2PA manifest), e.g. ``trainedAlgorithmicMedia`` for generated images.

    Invisible watermarks (Google's SynthID) live in the pixels and cannot be detected here.
    """
    marks: list[str] = []
    if _MANIFEST_STORE in data or _in_container(data):
        marks.append("c2pa")
    values = dict.fromkeys(m.group(1).decode("ascii") for m in _DIGITAL_SOURCE.finditer(data))
    marks += [f"digital_source_type:{value}" for value in values]
    return marks
