"""The format registry: one declaration per format, and everyone asks it.

The registry must agree with the content (each format's own files are recognised as it and
nothing else), with Pillow (its decoders and extensions), and with the places that used to
keep their own lists (the file walker, the report's extensions, the sniffer).
"""

from __future__ import annotations

import contextlib
import io

import pytest
from PIL import Image, features

import factories
import veilpix
from veilpix.formats._registry import (
    FORMATS,
    IMAGE_EXTENSIONS,
    MEDIA_TYPES,
    extension_for,
    for_media_type,
    format_of,
    scan_as,
)
from veilpix.formats._sniff import looks_like_image, media_type, sniff


def _samples() -> dict[str, bytes]:
    out = {
        "JPEG": factories.jpeg(),
        "PNG": factories.png(),
        "WEBP": factories.webp(),
        "GIF": factories.gif(),
        "TIFF": factories.tiff(),
        "BMP": factories.bmp(),
    }
    if features.check("avif"):
        out["AVIF"] = factories.avif()
    with contextlib.suppress(ImportError):  # pillow_heif is the 'heif' extra
        out["HEIF"] = factories.heic()
    return out


SAMPLES = _samples()


def test_every_format_is_declared_once_with_distinct_names_types_and_extensions() -> None:
    names = [f.name for f in FORMATS.values()]
    assert sorted(names) == sorted(["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF", "AVIF"])
    media = [f.media_type for f in FORMATS.values()]
    assert len(set(media)) == len(media)
    extensions = [e for f in FORMATS.values() for e in (*f.extensions, *f.read_extensions)]
    assert len(set(extensions)) == len(extensions), "an extension names two formats"
    assert all(e.startswith(".") and e == e.lower() for e in extensions)
    assert {f.name: f.media_type for f in FORMATS.values()} == MEDIA_TYPES
    assert frozenset(extensions) == IMAGE_EXTENSIONS


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_format_recognises_its_own_files_and_no_other(name: str) -> None:
    data = SAMPLES[name]
    assert format_of(data) is FORMATS[name]
    assert sniff(data) == name and looks_like_image(data)
    assert media_type(data) == FORMATS[name].media_type
    assert [f.name for f in FORMATS.values() if f.accepts(data)] == [name]
    scan = scan_as(data, name)
    assert scan.format == name
    if not FORMATS[name].via_decoder:  # (HEIF/AVIF: the decoder gives the size)
        assert (scan.width, scan.height) == Image.open(io.BytesIO(data)).size


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_declared_decoders_open_the_format(name: str) -> None:
    form = FORMATS[name]
    if not form.decoders:  # HEIF: pillow_heif, not a Pillow plugin
        pytest.skip("decoded by pillow_heif")
    with Image.open(io.BytesIO(SAMPLES[name]), formats=list(form.decoders)) as im:
        assert im.format in form.decoders
        im.load()


def test_media_types_and_extensions_round_trip() -> None:
    for form in FORMATS.values():
        assert for_media_type(form.media_type) is form
        assert for_media_type(form.media_type.upper() + "; charset=x") is form
        assert extension_for(form.media_type) == form.extensions[0]
    assert for_media_type("image/apng") is FORMATS["PNG"]
    assert for_media_type("image/svg+xml") is None and extension_for("text/plain") is None


def test_a_sanitized_image_is_named_by_the_registry() -> None:
    clean = veilpix.sanitize(SAMPLES["TIFF"])
    assert clean.extension == ".tif" == FORMATS["TIFF"].extension


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",  # a JPEG signature cut short
        b"RIFF\x00\x00\x00\x00WAVEfmt ",  # RIFF, but not WebP
        b"BM" + b"\x00" * 12 + b"\x07\x00\x00\x00" + b"\x00" * 10,  # no DIB header size
        b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",  # an MP4 video
        b"GIF88a",
        b"%PDF-1.7\n",
    ],
)
def test_near_misses_are_no_format(data: bytes) -> None:
    assert format_of(data) is None and not looks_like_image(data)
    with pytest.raises(veilpix.UnsupportedImage):
        sniff(data)


def test_the_lossless_path_is_asked_not_named() -> None:
    """Which formats strip losslessly, prove, decode to prove or never keep a profile is
    declared once; the pipeline reads it (a format added with a strip gets the lossless path
    and the proofs without a change to the pipeline)."""
    strips = {f.name for f in FORMATS.values() if f.strip is not None}
    assert strips == {"JPEG", "PNG", "GIF", "TIFF"}
    assert FORMATS["WEBP"].strip_refused and FORMATS["BMP"].strip is None
    assert {f.name for f in FORMATS.values() if f.via_decoder} == {"HEIF", "AVIF"}
    assert {f.name for f in FORMATS.values() if not f.keeps_icc} == {"GIF"}
    assert {f.name for f in FORMATS.values() if not f.writable} == {"HEIF", "AVIF"}
    for name in ("JPEG", "PNG", "GIF", "TIFF"):
        clean = veilpix.sanitize(SAMPLES[name])
        assert clean.report.lossless, name
    for name in ("WEBP", "BMP"):
        assert not veilpix.sanitize(SAMPLES[name]).report.lossless, name


def test_the_finder_looks_for_every_registered_format_in_raw_bytes() -> None:
    """The finder searches raw bytes for short prefixes of its own; every format in the
    registry must start with one of them, or an image of it inside other bytes would pass."""
    from veilpix.finder._signatures import _RAW_SIGNATURES

    for form in FORMATS.values():
        for signature in form.signatures:
            assert any(signature.startswith(s) for s in _RAW_SIGNATURES), (form.name, signature)
