"""The image finder: every image in an outbound body, whatever its shape, or a refusal.

The guard hands every request body to a :class:`Finder`. The finder takes the body apart
layer by layer, whatever its Content-Type says (or when it says nothing), and at each layer
looks for images in every encoding apps and SDKs really use:

* containers: multipart of every subtype (nested too, parts with a Content-Transfer-Encoding
  or a Content-Encoding), JSON, JSON Lines, JSON inside JSON strings, text, form values,
  zip and tar archives, gzip / zstd / bzip2 / xz streams;
* encodings: raw bytes (an image signature at any offset), standard and URL-safe base64 with
  or without padding or line breaks, ``data:`` URIs in any letter case and with parameters,
  percent-encoding, hex strings, JSON arrays of byte values (Node's ``Buffer``), and text
  whose characters are bytes (``"\\u00ff\\u00d8..."``).

Each image found goes to the ``clean`` callback (the guard's sanitizer) and the cleaned bytes
are put back in the same place, in the same encoding and container: base64 stays base64 of
the same alphabet, padding and line length; a zip member is replaced in a rebuilt zip; a
JSON Lines line stays one line. Where an image is found in a place the finder cannot rebuild
(an encrypted zip member, a TIFF or HEIF inside other bytes, JSON with escapes that do not
parse), it raises :class:`Refused` and nothing is sent. Non-image files that may carry
personal data (PDF, Office documents, audio, video) go to the ``document`` callback, which
records or refuses them.

Fail closed and bounded: every decoded layer is charged against one byte budget for the
whole request (decompression bombs stop there), nesting stops at :data:`MAX_LAYERS`, and no
error path returns the original bytes. Bodies with no trace of an image are recognised by a
few C-speed passes (``bytes.translate``, ``bytes.find``) and returned untouched.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import hashlib
import io
import json
import lzma
import re
import secrets
import tarfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from veilpix._errors import MalformedMultipart, RequestError, RequestTooLarge
from veilpix.codec._codec import (
    _JSON_DECODER,
    DEFAULT_MAX_DEPTH,
    _b64decode,
    _check_boundary,
    _quote_param,
    _rfc2231,
    _split_params,
    decode_body,
    dump_json,
    encode_body,
    load_json,
    split_multipart,
)
from veilpix.formats._sniff import MEDIA_TYPES, looks_like_image, sniff

__all__ = ["MAX_LAYERS", "Finder", "Refused", "Role", "neutral_name_for"]

Role = Literal["image", "mask"]
Clean = Callable[[bytes, str, Role], bytes]
"""``clean(data, where, role)``: the sanitized image (raises to block the request)."""
Document = Callable[[str, str], None]
"""``document(kind, where)``: a non-image file was found (raises to block the request)."""

MAX_LAYERS = 24  # encodings and containers inside one another
MAX_MEMBERS = 10_000  # archive members, multipart parts per layer
# The smallest file of any image format is over 21 bytes (a 1x1 QOI is 23, a GIF 26, a BMP
# 26), so nothing shorter than what 21 bytes take in an encoding can carry one.
MIN_IMAGE = 21
MIN_RUN = 28  # base64 characters: 21 bytes
MIN_HEX = 2 * MIN_IMAGE
_LEVEL = 1  # zlib level for rebuilt gzip/deflate layers: mostly images, which do not shrink

_B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
_PCT = re.compile(r"%[0-9A-Fa-f]{2}")
_RUN_BREAK = re.compile(r"\\(?:u[0-9a-fA-F]{4}|.)?|[\r\n]+", re.DOTALL)
_PCT_B = re.compile(rb"%[0-9A-Fa-f]{2}")
# in binary data, only a cluster of escapes is text worth decoding (a percent-encoded image
# escapes most of its bytes; a lone "%41" in random bytes is noise)
_PCT_CLUSTER_B = re.compile(rb"%[0-9A-Fa-f]{2}(?:[^%]{0,16}%[0-9A-Fa-f]{2}){3}")
_BYTE_ARRAY_B = re.compile(rb"\[\s*(?:-?\d{1,3}(?:\.0+)?\s*,\s*){20}")
_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|(.))", re.DOTALL)
_DATA_HEAD = re.compile(
    r"data:([!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+|)((?:;[^;,\s\"'<>]*)*),\Z",
    re.IGNORECASE,
)
_MAX_WRAP = 120  # the widest line a base64 encoder wraps at
_PRINTABLE = re.compile(rb"[\t\n\r\x20-\x7e]*")

# One byte per code: "A" for what may continue a run, "." for what ends it.
_RUN_TABLE_B = bytes(
    (0x41 if chr(i) in _B64_CHARS or chr(i) in "\\\r\n" else 0x2E) if i < 128 else 0x2E
    for i in range(256)
)
_PCT_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!*'()+/%"
_PCT_TABLE_B = bytes(0x41 if i < 128 and chr(i) in _PCT_SAFE else 0x2E for i in range(256))
_RUN = "A" * MIN_RUN
_RUN_B = _RUN.encode()

# Signatures that may sit anywhere in raw bytes. Each candidate is confirmed by
# _image_at before it counts, and the image's extent is found by _image_end.
_RAW_SIGNATURES = (
    b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"RIFF", b"II*\x00", b"MM\x00*", b"BM",
    b"ftyp", b"8BPS", b"\x00\x00\x00\x0c", b"\xff\x4f\xff\x51", b"qoif",
)  # fmt: skip
# in ASCII data: those without bytes over 127 (and all but GIF's and RIFF's hold a NUL)
_ASCII_SIGNATURES = tuple(s for s in _RAW_SIGNATURES if s.isascii())
# what a byte string read as latin-1 and written as UTF-8 looks like ("\u00ff\u00d8\u00ff")
_UTF8_SIGNATURES = tuple(
    s.decode("latin-1").encode("utf-8")
    for s in (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"II*\x00", b"MM\x00*")
)
_OTHER_IMAGES = {
    b"8BPS": "a Photoshop document (PSD)",
    b"\x00\x00\x01\x00": "an ICO icon",
    b"\x00\x00\x00\x0cJXL \r\n\x87\n": "a JPEG XL image",
    b"\xff\x4f\xff\x51": "a JPEG 2000 codestream",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n": "a JPEG 2000 image",
    b"qoif": "a QOI image",
    b"\x76\x2f\x31\x01": "an OpenEXR image",
    b"#?RADIANCE\n": "a Radiance HDR image",
}
_OTHER_MAGICS = tuple(_OTHER_IMAGES)
_JPEG_MARKERS = frozenset([*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xD0),
                           0xC4, 0xDA, 0xDB, 0xDD, 0xFE, *range(0xE0, 0xF0)])  # fmt: skip
_BMP_HEADERS = (12, 40, 52, 56, 64, 108, 124)
_IMAGE_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs",
                 b"avif", b"avis", b"mif1", b"msf1", b"mif2", b"miaf"}  # fmt: skip
_EXTENSIONS = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif",
    "image/tiff": ".tif", "image/bmp": ".bmp", "image/heif": ".heic", "image/avif": ".avif",
}  # fmt: skip


class Refused(RequestError):
    """An image (or a file the policy refuses) sits where veilpix cannot make it clean:
    the request is blocked under ``rule``."""

    def __init__(self, rule: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.rule = rule


def _unrewritable(what: str, where: str) -> Refused:
    return Refused(
        "image.unrewritable",
        f"{where} holds an image ({what}) that veilpix cannot put back cleaned, so the "
        "request cannot be proved clean",
        hint="send the image as a file part, a data: URI or base64 in JSON; nothing was sent",
    )


# =========================================================================== raw images
def _image_at(data: bytes, k: int) -> str | None:
    """The format of an image whose signature starts at ``k`` inside other bytes, or None.

    Short signatures are confirmed by the structure that follows, so random data (a
    compressed file, audio) almost never counts: a JPEG needs its first segments to chain up
    (or to run to the end of the data: a truncated image still counts), a TIFF a sane first
    directory, a BMP zero reserved bytes and a known header size."""
    head = data[k : k + 32]
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG" if _jpeg_chains(data, k) else None
    if _PRINTABLE.fullmatch(data, k, k + 24) is not None:
        return None  # all text: a word in prose ("the file starts with GIF89a"), no image
    if head[:4] == b"RIFF":
        return "WEBP" if head[8:12] == b"WEBP" and head[12:15] == b"VP8" else None
    if head[:8] == b"\x89PNG\r\n\x1a\n":  # a real PNG starts with its IHDR chunk
        return "PNG" if head[8:16] == b"\x00\x00\x00\rIHDR" else None
    if head[:6] in (b"GIF87a", b"GIF89a"):  # a screen, then a block where one must be
        table = 3 << ((head[10] & 7) + 1) if len(head) > 10 and head[10] & 0x80 else 0
        block = data[k + 13 + table : k + 14 + table]
        sized = head[6:8] != b"\x00\x00" and head[8:10] != b"\x00\x00"
        return "GIF" if sized and block in (b"\x21", b"\x2c", b"\x3b") else None
    if head[:2] == b"BM":
        if len(head) < 26 or head[6:10] != b"\x00\x00\x00\x00":
            return None
        ok = int.from_bytes(head[14:18], "little") in _BMP_HEADERS
        return "BMP" if ok and 26 <= int.from_bytes(head[2:6], "little") <= len(data) - k else None
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        order: Literal["little", "big"] = "little" if head[:2] == b"II" else "big"
        ifd = int.from_bytes(head[4:8], order)
        count = int.from_bytes(data[k + ifd : k + ifd + 2], order)
        kind = int.from_bytes(data[k + ifd + 4 : k + ifd + 6], order)
        sane = 8 <= ifd < len(data) - k and 0 < count <= 1000 and 1 <= kind <= 18
        return "TIFF" if sane else None
    return sniff(data[k : k + 64]) if looks_like_image(head) else None


def _other_image(data: bytes, k: int) -> str | None:
    """What image veilpix cannot sanitize starts at ``k``, confirmed beyond its magic (short
    magics such as ICO's ``00 00 01 00`` also start prose decoded as base64, or a 0/1 mask),
    or None. A bare JPEG XL codestream (``ff 0a``, two bytes) is not looked for."""
    head = data[k : k + 40]
    if not head.startswith(_OTHER_MAGICS):
        return None
    for magic, what in _OTHER_IMAGES.items():
        if not head.startswith(magic):
            continue
        if magic == b"8BPS":  # version 1 or 2, six reserved zero bytes, 1-56 channels
            ok = head[4:6] in (b"\x00\x01", b"\x00\x02") and head[6:12] == bytes(6)
            ok = ok and 1 <= int.from_bytes(head[12:14], "big") <= 56
        elif magic == b"\x00\x00\x01\x00":  # 1-255 entries; the first one's image inside
            count = int.from_bytes(head[4:6], "little")
            size = int.from_bytes(head[14:18], "little")
            offset = int.from_bytes(head[18:22], "little")
            ok = 0 < count < 256 and head[9] == 0 and head[10:12] in (b"\x00\x00", b"\x01\x00")
            ok = ok and int.from_bytes(head[12:14], "little") in (0, 1, 4, 8, 16, 24, 32)
            ok = ok and 6 + 16 * count <= offset and size > 0 and k + offset + size <= len(data)
        elif magic == b"qoif":  # non-zero size, 3 or 4 channels, colour space 0 or 1
            ok = head[4:8] != bytes(4) and head[8:12] != bytes(4) and head[12] in (3, 4)
            ok = ok and head[13] in (0, 1)
        elif magic == b"\x76\x2f\x31\x01":  # version 2, then named attributes
            ok = head[4] == 2 and head[5:6].isalpha()
        elif magic == b"\xff\x4f\xff\x51":  # SIZ segment with a sane length
            ok = 41 <= int.from_bytes(head[4:6], "big") <= 49190
        else:
            ok = True
        if ok:
            return what
    return None


def _jpeg_chains(data: bytes, k: int) -> bool:
    """Is there a JPEG at ``k``: two segments after SOI that fit and chain up (audio samples
    and machine code hold ``ff d8 ff`` too, rarely followed by that), or a first segment
    that names itself (JFIF, Exif, XMP), which counts even when the data ends inside it?"""
    pos = k + 2
    first = data[pos + 1 : pos + 2]
    if first in (b"\xe0", b"\xe1") and data[pos + 4 : pos + 8] in (
        b"JFIF",
        b"JFXX",
        b"Exif",
        b"http",
    ):
        return True
    for _ in range(2):
        if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] not in _JPEG_MARKERS:
            return False
        if data[pos + 1] == 0xDA:  # scan data before any table or frame: not a JPEG
            return False
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > len(data):
            return False
        pos += 2 + length
    return pos + 2 <= len(data) and data[pos] == 0xFF and data[pos + 1] in _JPEG_MARKERS


def _image_end(data: bytes, k: int, fmt: str) -> int | None:
    """Where the image starting at ``k`` ends, by walking its own structure; None when the
    format gives no end (TIFF, HEIF, AVIF) or the structure does not hold."""
    n = len(data)
    try:
        if fmt == "PNG":
            pos = k + 8
            while pos + 12 <= n:
                size = int.from_bytes(data[pos : pos + 4], "big")
                kind = data[pos + 4 : pos + 8]
                pos += 12 + size
                if kind == b"IEND":
                    return pos if pos <= n else None
            return None
        if fmt == "WEBP":
            end = k + 8 + int.from_bytes(data[k + 4 : k + 8], "little")
            end += (end - k) & 1
            return min(end, n) if end <= n + 1 else None
        if fmt == "BMP":
            return k + int.from_bytes(data[k + 2 : k + 6], "little")
        if fmt == "GIF":
            return _gif_end(data, k)
        if fmt == "JPEG":
            return _jpeg_end(data, k)
    except IndexError:
        return None
    return None


def _gif_end(data: bytes, k: int) -> int | None:
    n = len(data)
    flags = data[k + 10]
    pos = k + 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while pos < n:
        block = data[pos]
        if block == 0x3B:
            return pos + 1
        if block == 0x21:
            pos += 2
        elif block == 0x2C:
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:
            return None
        while pos < n and data[pos]:  # data sub-blocks up to the terminator
            pos += data[pos] + 1
        pos += 1
    return None


def _jpeg_end(data: bytes, k: int) -> int | None:
    n = len(data)
    pos = k + 2
    while pos + 1 < n:
        if data[pos] != 0xFF:
            return None
        while pos + 1 < n and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos + 1]
        if marker == 0xD9:
            return pos + 2
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # entropy-coded data up to the next marker that is not RSTn
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return None
                nxt = data[pos + 1]
                if nxt == 0 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    pos += 1 if nxt == 0xFF else 2
                    continue
                break
    return None


def _raw_candidates(data: bytes) -> list[int]:
    """Offsets (after 0) where an image signature occurs, in order: C-speed finds only.
    ASCII data can hold only the signatures without high bytes, and those (but GIF's and
    RIFF's) need a NUL byte somewhere."""
    sigs: tuple[bytes, ...]
    if not data.isascii():
        sigs = _RAW_SIGNATURES
    elif b"\x00" in data:
        sigs = _ASCII_SIGNATURES
    else:
        return []  # every image file holds a NUL
    hits: list[int] = []
    for sig in sigs:
        back = 4 if sig == b"ftyp" else 0  # a box type: the file starts 4 bytes earlier
        pos = data.find(sig, 1)
        while pos >= 0:
            if pos - back >= 1:
                hits.append(pos - back)
            pos = data.find(sig, pos + 1)
    return sorted(set(hits))


# =========================================================================== documents
def _document_kind(data: bytes) -> str | None:
    """What kind of non-image file ``data`` is, when it is one that may carry personal data."""
    head = data[:64]
    if head[:5] == b"%PDF-":
        return "PDF"
    if head[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        return "Office document"
    if (
        head[:3] == b"ID3"
        or head[:4] in (b"OggS", b"fLaC", b"caff")
        or (head[:4] == b"RIFF" and head[8:12] in (b"WAVE", b"AVI "))
    ):
        return "audio or video"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio or video"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "audio or video"
    if head[4:8] == b"ftyp" and head[8:12] not in _IMAGE_BRANDS:
        return "audio or video"
    if head[:5] == b"{\\rtf":
        return "Office document"
    return None


def _zip_document(names: list[str]) -> str | None:
    if "[Content_Types].xml" in names or "mimetype" in names:
        return "Office document"
    return None


# =========================================================================== text helpers
@dataclass(frozen=True)
class _Base64Style:
    urlsafe: bool
    padded: bool
    line: int  # characters per line, 0 for one line
    eol: str

    @classmethod
    def of(cls, run: str) -> _Base64Style:
        line, eol, size = 0, "\n", len(run)
        first = run.find("\n")
        if first >= 0:
            eol = "\r\n" if run[first - 1 : first] == "\r" else "\n"
            line = first - len(eol) + 1
            size -= run.count("\n") * len(eol)
        urlsafe = "-" in run or "_" in run
        # A run whose length needs no padding tells nothing: standard base64 is padded
        # (every encoder pads it), URL-safe base64 mostly not (JWT, base64url in Node).
        padded = run.endswith("=") or (size % 4 == 0 and not urlsafe)
        return cls(urlsafe, padded, line, eol)

    def encode(self, data: bytes) -> str:
        text = (base64.urlsafe_b64encode if self.urlsafe else base64.b64encode)(data).decode()
        if not self.padded:
            text = text.rstrip("=")
        if self.line > 0:
            text = self.eol.join(text[i : i + self.line] for i in range(0, len(text), self.line))
        return text


def _decode_run(run: str) -> bytes | None:
    """The bytes a base64 run spells (the codec's decoder), or None; a run that swallowed
    one letter after the base64 (prose) is read without it."""
    text = run.rstrip("=")
    if (len(text) - text.count("\n") - text.count("\r")) % 4 == 1:
        text = text[:-1]
    try:
        return _b64decode(text)
    except ValueError:  # not base64, mixed alphabets, or characters outside ASCII
        return None


# How the base64 of each image format starts, at the three alignments of its first byte
_B64_STARTS = ("/9j/", "_9j_", "iVBORw0KGgo", "R0lGODlh", "R0lGODdh", "UklGR", "SUkqA", "TU0AK")


_MAX_GLUE = 16  # characters of a word that base64 may be glued to ("photo:+", "img=")


def _whole_image(data: bytes | None) -> bool:
    """Is ``data`` one image from its first byte to (about) its last, by its own structure?"""
    if not data or not looks_like_image(data):
        return False
    fmt = sniff(data)
    end = _image_end(data, 0, fmt) if _image_at(data, 0) == fmt else None
    return end is not None and end >= len(data) - 3


def _image_b64_start(run: str) -> int:
    """Where inside ``run`` the base64 of an image starts (0 when it does not, or at 0)."""
    best = 0
    for start in _B64_STARTS:
        at = run.find(start, 1)
        if at > 0 and (best == 0 or at < best):
            best = at
    return best


# An image written out byte by byte: Python/C escapes (repr(bytes) sent by mistake), hex
# dumps with separators, C arrays. Found, not rewritten: refused. A signature alone (code
# that tests for one: b"\xff\xd8\xff") is not an image; 21 bytes or more in a row are.
_ESCAPED_IMAGE = re.compile(
    r"(?i)(?:\\xff\\xd8\\xff|\\x89PNG|GIF8[79]a\\x|RIFF(?:\\x[0-9a-f]{2}|[^\\'\"]){4}WEBP"
    r"|II\*\\x00|MM\\x00\*|\\x00\\x00\\x00.ftyp)"
    r"(?:\\x[0-9a-f]{2}|\\[nrt0\\'\"]|[^\\'\"]){16}"
)
_SPACED_IMAGE = re.compile(
    r"(?i)(?:(?:0x)?ff[ ,:]\s*(?:0x)?d8[ ,:]\s*(?:0x)?ff|(?:0x)?89[ ,:]\s*(?:0x)?50[ ,:]\s*"
    r"(?:0x)?4e[ ,:]\s*(?:0x)?47|(?:0x)?47[ ,:]\s*(?:0x)?49[ ,:]\s*(?:0x)?46[ ,:]\s*(?:0x)?38"
    r"|(?:0x)?52[ ,:]\s*(?:0x)?49[ ,:]\s*(?:0x)?46[ ,:]\s*(?:0x)?46)"
    r"(?:[ ,:]\s*(?:0x)?[0-9a-f]{2}){17}"
)
# Hex dumps and C arrays seen through one table: a hex digit is "h", "x"/"X" is "x", a
# separator (space, comma, colon) is "s". Six pairs in a row in one of the three layouts
# ("ff d8 ff e0 00 10", "0xff,0xd8,...", "0xFF, 0xD8, ...") are worth the regex.
_HEXSEP_TABLE_B = bytes(
    0x68 if chr(i) in "0123456789abcdefABCDEF" else 0x78 if chr(i) in "xX"
    else 0x73 if chr(i) in " ,:" else 0x2E
    for i in range(256)
)  # fmt: skip
_HEXSEP = ("hhs" * 6, "hxhhs" * 6, "hxhhss" * 6)
_HEXSEP_B = tuple(n.encode() for n in _HEXSEP)


def _byte_values_image(text: str) -> bool:
    """Does ``text`` write out an image (21 bytes or more) as escapes or separated hex?"""
    if "\\x" in text and _ESCAPED_IMAGE.search(text) is not None:
        return True
    mask = _mask(text, _HEXSEP_TABLE_B)
    return any(n in mask for n in _HEXSEP) and _SPACED_IMAGE.search(text) is not None


_GIT_HUNK = re.compile(
    r"(?m)^(literal|delta) (\d+)\r?\n((?:[A-Za-z][0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]{5,65}\r?\n)+)"
)
_ASCII85 = re.compile(r"<~([!-uz\s]{5,}?)~>")
_GIT_FILE = re.compile(r"(?m)^diff --git a/\S+ b/(\S+)")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".apng", ".gif", ".webp", ".tif", ".tiff",
                   ".bmp", ".heic", ".heif", ".avif", ".mpo")  # fmt: skip
_GIT_INDEX = re.compile(r"(?m)^index ([0-9a-f]{7,64})\.\.([0-9a-f]{7,64})")


def _git_new_blob(text: str, hunk: int, old: bytes, new: bytes) -> list[tuple[int, int, str]]:
    """The edit that makes the last ``index a..b`` line before ``hunk`` name the git blob id
    of ``new`` where it named ``old``'s (full or abbreviated, as it was); none otherwise."""
    found = list(_GIT_INDEX.finditer(text, 0, hunk))
    if not found or not _git_blob_id(old).startswith(found[-1].group(2)):
        return []  # no index line, or one that names something else: left as it is
    m = found[-1]
    return [(m.start(2), m.end(2), _git_blob_id(new)[: len(m.group(2))])]


def _splice(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` with each (start, end, new text) edit made (in order, not overlapping);
    ``text`` itself when there is none."""
    if not edits:
        return text
    out: list[str] = []
    pos = 0
    for start, end, new in sorted(edits):
        out += [text[pos:start], new]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data, usedforsecurity=False).hexdigest()


_GIT_LENGTHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _git_base85(lines: str) -> bytes:
    """The bytes of git's binary-patch lines: a length letter, then base85 (RFC 1924)."""
    out = bytearray()
    for raw_line in lines.split("\n"):
        line = raw_line.rstrip("\r")
        if not line:
            continue
        size = _GIT_LENGTHS.index(line[0]) + 1
        out += base64.b85decode(line[1:])[:size]
    return bytes(out)


def _git_lines(data: bytes, eol: str) -> str:
    """``data`` as git writes binary-patch lines: 52 bytes a line, and an empty line after."""
    lines = []
    for i in range(0, len(data), 52):
        chunk = data[i : i + 52]
        lines.append(_GIT_LENGTHS[len(chunk) - 1] + base64.b85encode(chunk, pad=True).decode())
    return "".join(line + eol for line in lines)


_B32 = re.compile(r"[A-Z2-7]+=*")


def _b32decode(run: str) -> bytes | None:
    if "\n" in run or _B32.fullmatch(run) is None:
        return None
    text = run.rstrip("=")
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        return None


def _unhex(run: str) -> bytes | None:
    """The bytes a run of hex digits spells (``0x`` prefix allowed; lines of one width, as
    ``xxd -p`` writes them)."""
    digits = run[2:] if run[:2] in ("0x", "0X") else run
    if "\n" in digits:
        if not _wrapped(digits, multiple=2):
            return None
        digits = digits.replace("\r", "").replace("\n", "")
    if len(digits) < MIN_HEX or len(digits) % 2:
        return None
    try:
        return bytes.fromhex(digits)
    except ValueError:
        return None


def _hex_like(run: str, data: bytes) -> str:
    """``data`` in hex written as ``run`` was: prefix, letter case, line width and ends."""
    prefix = run[:2] if run[:2] in ("0x", "0X") else ""
    digits = data.hex()
    if run[len(prefix) : len(prefix) + 64].isupper():
        digits = digits.upper()
    first = run.find("\n")
    if first >= 0:
        eol = "\r\n" if run[first - 1 : first] == "\r" else "\n"
        width = first - len(eol) + 1 - len(prefix)
        digits = eol.join(digits[i : i + width] for i in range(0, len(digits), width))
    return prefix + digits


def _json_unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return chr(int(m.group(1), 16))
        return {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}.get(m.group(2), m.group(2))

    return _JSON_ESCAPE.sub(one, text)


def neutral_filename(kind: str, index: int, extension: str) -> str:
    """The file name veilpix sends instead of the app's: ``image.jpg``, ``file-2.pdf``."""
    return f"{kind}{'' if index <= 1 else f'-{index}'}{extension}"


def neutral_name_for(data: bytes, original: str | None, index: int = 1) -> str:
    """The neutral name of file number ``index`` holding ``data`` (sent as ``original``):
    ``image.jpg`` for an image (its extension from the bytes), else ``file`` with the
    original's extension when that is a plain one (``file-2.pdf``)."""
    media = _media(data)
    if media is not None:
        return neutral_filename("image", index, _EXTENSIONS.get(media, ""))
    return neutral_filename("file", index, _extension(original or ""))


def _extension(filename: str) -> str:
    """The original's extension when it is a common file type's; anything else could be a
    part of the name ("anna.schmidt"), and the file goes as ``file`` without one."""
    dot = filename.rfind(".")
    ext = filename[dot:].lower() if dot >= 0 else ""
    return ext if ext in _COMMON_EXTENSIONS else ""


_COMMON_EXTENSIONS = frozenset({
    ".pdf", ".txt", ".csv", ".tsv", ".json", ".jsonl", ".xml", ".html", ".htm", ".md", ".rtf",
    ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".odt", ".ods", ".odp", ".zip", ".gz",
    ".tar", ".mp3", ".wav", ".ogg", ".oga", ".flac", ".m4a", ".aac", ".opus", ".webm", ".mp4",
    ".m4v", ".mov", ".avi", ".mkv", ".mpeg", ".mpg", ".srt", ".vtt", ".jpg", ".jpeg", ".png",
    ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".svg", ".ico", ".psd",
    ".dng", ".raw", ".cr2", ".nef", ".arw", ".bin",
})  # fmt: skip


# =========================================================================== the finder
class Finder:
    """Finds and cleans every image in one request (see the module docstring).

    ``clean(data, where, role)`` sanitizes one image; ``document(kind, where)`` hears of
    non-image files; ``renamed(where, filename)`` hears the neutral name each multipart file
    part is sent under; ``max_bytes`` is the budget of decoded bytes (all layers together);
    ``max_parts`` caps the parts of one multipart layer. One finder serves one request.
    """

    def __init__(
        self,
        clean: Clean,
        *,
        document: Document | None = None,
        renamed: Callable[[str, str], None] | None = None,
        max_bytes: int = 256 << 20,
        max_parts: int = 1000,
    ) -> None:
        self._clean = clean
        self._document = document
        self._renamed = renamed
        self._room = max_bytes
        self.max_parts = max_parts
        self.files = 0  # file parts renamed so far (for neutral names)
        self.images = 0
        self._probing = False  # a probe (see _probe) starts no probes of its own

    # -- public entry points ---------------------------------------------------------------

    def rewrite_body(
        self, body: bytes, content_type: str | None, where: str = "body"
    ) -> tuple[bytes, str | None]:
        """``body`` with every image cleaned, and the new Content-Type when it changed."""
        return self._node(body, content_type, where, 0)

    def rewrite_multipart(
        self,
        body: bytes,
        content_type: str,
        where: str = "body",
        *,
        masks: frozenset[str] | set[str] = frozenset(),
        on_field: Callable[[str, bytes], None] | None = None,
        depth: int = 0,
    ) -> tuple[bytes, str]:
        """A multipart body of any subtype with its parts cleaned and rebuilt; parts named in
        ``masks`` are cleaned last with the ``mask`` role; ``on_field(name, data)`` hears each
        form field that is not a file. Returns (body, Content-Type)."""
        return self._multipart(body, content_type, where, depth, masks=masks, on_field=on_field)

    def rewrite_doc(
        self, doc: Any, where: str = "body", *, skip: frozenset[tuple[Any, ...]] = frozenset()
    ) -> tuple[Any, bool]:
        """A parsed JSON document with every image in its strings and byte arrays cleaned
        (paths in ``skip`` were handled by the caller). Returns (doc, changed)."""
        return self._doc(doc, where, 0, skip)

    @staticmethod
    def might_hold_image(body: bytes) -> bool:
        """False only when no layer of ``body`` can hold an image: no signature, no base64,
        hex or percent run, no byte array, no container. C-speed passes over the bytes."""
        return _might_hold(body)

    # -- layers ----------------------------------------------------------------------------

    def _enter(self, depth: int, where: str) -> None:
        if depth > MAX_LAYERS:
            raise RequestTooLarge(
                f"{where} nests encodings and containers more than {MAX_LAYERS} deep; "
                "refusing to look further"
            )

    def _charge(self, size: int, where: str) -> int:
        """Take ``size`` decoded bytes from the request's budget; the room left."""
        self._room -= size
        if self._room < 0:
            raise RequestTooLarge(
                f"{where} decodes to more data than the request may hold (a decompression "
                "bomb, or nested encodings over the limit)"
            )
        return self._room

    def _image(self, data: bytes, where: str, role: Role) -> bytes:
        self.images += 1
        return self._clean(data, where, role)

    def _node(
        self, data: bytes, ctype: str | None, where: str, depth: int, role: Role = "image"
    ) -> tuple[bytes, str | None]:
        """One layer of bytes: (new bytes, new Content-Type or None when it did not change)."""
        if not data:
            return data, None
        self._enter(depth, where)
        media = (ctype or "").partition(";")[0].strip().lower()
        if looks_like_image(data):
            out = self._image(data, where, role)
            new_type = MEDIA_TYPES[sniff(out)] if looks_like_image(out) else None
            return out, new_type if media and new_type != media else None
        other = _other_image(data, 0)
        if other is not None:
            raise Refused(
                "image.unsupported",
                f"{where} is {other}, which veilpix cannot sanitize",
                hint="convert it to JPEG or PNG first; nothing was sent",
            )
        if media.startswith("multipart/"):
            return self._multipart(data, ctype or "", where, depth)
        container = self._container(data, where, depth)
        if container is not None:
            return container, None
        kind = _document_kind(data)
        if kind is not None:
            self._doc_found(kind, where)
            return data, None
        sniffed = _sniff_multipart(data)
        if sniffed is not None:
            try:
                out, new_ctype = self._multipart(data, f"multipart/mixed; boundary={sniffed}",
                                                 where, depth)  # fmt: skip
            except MalformedMultipart:
                pass  # not multipart after all: searched as bytes below
            else:
                return out, None if new_ctype.endswith(f"={sniffed}") else new_ctype
        if not _might_hold(data):
            return data, None
        wide = _wide_text(data, media, ctype or "")
        if wide is not None:  # UTF-16 or UTF-32 text: searched as text, written back alike
            text, codec, bom = wide
            new_text = self._text(text, where, depth)
            return (
                data if new_text is text else bom + new_text.encode(codec, "surrogatepass")
            ), None
        return self._bytes(data, where, depth), None

    def _doc_found(self, kind: str, where: str) -> None:
        if self._document is not None:
            self._document(kind, where)

    # -- raw bytes and text ------------------------------------------------------------------

    def _bytes(self, data: bytes, where: str, depth: int) -> bytes:
        """Bytes of no known container: JSON, JSON Lines, text, or binary with images inside."""
        head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
        if head[:1] in (b"{", b"[", b'"'):
            doc = self._try_json(data, where)
            if doc is not _NOT_JSON:
                new, changed = self._doc(doc, where, depth + 1, frozenset())
                return dump_json(new) if changed else data
            if b"\n" in data:
                lines = self._lines(data, where, depth)
                if lines is not None:
                    return lines
        pieces: list[bytes] = []
        pos = 0
        for k in _raw_candidates(data):
            if k < pos:
                continue
            fmt = _image_at(data, k)
            if fmt is None:
                other = _other_image(data, k)
                if other is not None:
                    raise Refused(
                        "image.unsupported",
                        f"{where} holds {other} at byte {k}, which veilpix cannot sanitize",
                        hint="convert it to JPEG or PNG first; nothing was sent",
                    )
                continue
            end = _image_end(data, k, fmt)
            if end is None or end <= k:
                raise _unrewritable(f"{fmt} at byte {k}", where)
            if _length_prefixed(data, k, end):
                # a length field before it (protobuf, msgpack, gRPC, a custom frame) would
                # be wrong once the cleaned image has another size
                raise _unrewritable(f"{fmt} at byte {k}, inside a length-prefixed frame", where)
            pieces.append(self._text_bytes(data[pos:k], where, depth))
            pieces.append(self._image(data[k:end], f"{where}[{k}:]", "image"))
            pos = end
        if not data.isascii():
            self._streams_inside(data, where, depth)
        if not pieces:
            return self._text_bytes(data, where, depth)
        pieces.append(self._text_bytes(data[pos:], where, depth))
        return b"".join(pieces)

    def _streams_inside(self, data: bytes, where: str, depth: int) -> None:
        """Compressed streams and zip archives that start inside binary data (a gRPC frame,
        a self-extracting archive) cannot be rebuilt in place: refused when they hold an
        image."""
        if self._probing:
            return
        for magic in (b"\x1f\x8b\x08", b"\x28\xb5\x2f\xfd", b"PK\x03\x04"):
            k = data.find(magic, 1)
            while k >= 0:
                if _container_kind(data[k : k + 4096]) is not None and self._probe(
                    data[k:], f"{where}[{k}:]", depth
                ):
                    raise _unrewritable(f"a compressed stream at byte {k} holding one", where)
                k = data.find(magic, k + 1)

    def _text_bytes(self, data: bytes, where: str, depth: int) -> bytes:
        """Text carriers (base64, hex, percent, data URIs, JSON inside prose) in bytes: read
        as UTF-8 when they are, else as latin-1 so every byte maps to one character and back."""
        if not data:
            return data
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:  # binary: JSON cannot be inside, carriers still can
            if not _carrier_runs_in(data, binary=True):
                return data
            text, encoding = data.decode("latin-1"), "latin-1"
        else:
            if not (_text_might_hold(data) or _byte_array_in(data)):
                return data
        new = self._prose(text, where, depth, json_inside=encoding == "utf-8")
        if new is text:
            if encoding == "utf-8" and b"\\" in data:
                self._escaped(text, where, depth)
            return data
        return new.encode(encoding, "surrogatepass")

    def _prose(self, text: str, where: str, depth: int, *, json_inside: bool = True) -> str:
        """Text that may hold JSON values among other words (a prompt quoting a tool call, a
        log line with a Buffer): each JSON value is searched as JSON, the words between them
        for carriers. Returns ``text`` itself when nothing changed."""
        if json_inside and _byte_values_image(text):  # (text, not binary read as latin-1)
            raise _unrewritable("written out as escaped or separated byte values", where)
        if "GIT binary patch" in text:  # the patch rewritten; the words around it below
            text = self._git_patches(text, where, depth)
        if "<~" in text:  # Ascii85 (Adobe, PostScript, PDF tools)
            text = self._ascii85(text, where, depth)
        spans = _json_spans(text) if json_inside and ("{" in text or "[" in text) else []
        if not spans:
            return self._carriers(text, where, depth)
        out: list[str] = []
        pos = 0
        changed = False
        for start, end, value in spans:
            try:
                new, found = self._doc(value, f"{where}(json)", depth + 1, frozenset())
            except _TooDeep:
                continue  # searched with the text around it
            gap = text[pos:start]
            new_gap = self._carriers(gap, where, depth)
            out.append(new_gap)
            out.append(dump_json(new).decode("utf-8") if found else text[start:end])
            changed |= found or new_gap is not gap
            pos = end
        tail = text[pos:]
        new_tail = self._carriers(tail, where, depth)
        out.append(new_tail)
        if not changed and new_tail is tail:
            return text
        return "".join(out)

    def _lines(self, data: bytes, where: str, depth: int) -> bytes | None:
        """JSON Lines: each line that parses is rewritten as one line; None when no line is
        JSON (then the body is searched as text)."""
        lines = data.split(b"\n")
        out: list[bytes] = []
        any_json = False
        for i, line in enumerate(lines):
            body = line.rstrip(b"\r")
            stripped = body.strip()
            if stripped[:1] in (b"{", b"[") and _might_hold(stripped):
                doc = self._try_json(stripped, f"{where} line {i + 1}")
                if doc is not _NOT_JSON:
                    any_json = True
                    new, changed = self._doc(doc, f"{where} line {i + 1}", depth + 1, frozenset())
                    out.append(dump_json(new) + line[len(body) :] if changed else line)
                    continue
            elif stripped[:1] in (b"{", b"["):
                any_json = True
            out.append(self._text_bytes(line, f"{where} line {i + 1}", depth))
        return b"\n".join(out) if any_json else None

    def _try_json(self, data: bytes | str, where: str) -> Any:
        stripped = data.strip()
        if isinstance(stripped, bytes) and stripped.startswith(b"\xef\xbb\xbf"):
            stripped = stripped[3:]
        try:
            return load_json(stripped, max_depth=DEFAULT_MAX_DEPTH)
        except RequestTooLarge:
            raise
        except RequestError as exc:
            if "twice in one object" in exc.message and _whole_json(stripped):
                raise  # JSON that readers would see differently: refused, not guessed at
            return _NOT_JSON

    def _text(self, text: str, where: str, depth: int) -> str:
        """A string (a JSON value, a form value, a text part) with every image cleaned."""
        if len(text) < MIN_IMAGE:
            return text
        self._enter(depth, where)
        stripped = text.strip()
        if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
            doc = self._try_json(stripped, where)
            if doc is not _NOT_JSON:
                new, changed = self._doc(doc, f"{where}(json)", depth + 1, frozenset())
                if not changed:
                    return text
                start = text.find(stripped[0])
                return text[:start] + dump_json(new).decode("utf-8") + text[start + len(stripped) :]
            if "\n" in stripped:
                raw = stripped.encode("utf-8", "surrogatepass")
                lines = self._lines(raw, where, depth)
                if lines is not None:
                    if lines == raw:
                        return text
                    start = text.find(stripped[0])
                    return (
                        text[:start]
                        + lines.decode("utf-8", "surrogatepass")
                        + text[start + len(stripped) :]
                    )
        if not text.isascii():
            try:
                raw = text.encode("latin-1")
            except UnicodeEncodeError:
                pass
            else:  # characters that are bytes ("\u00ff\u00d8\u00ff..."): raw images inside
                if _raw_candidates(raw) or looks_like_image(raw):
                    new_raw = self._node(raw, None, where, depth)[0]
                    if new_raw != raw:
                        return new_raw.decode("latin-1")
        new = self._prose(text, where, depth)
        if new is text and "\\" in text:
            self._escaped(text, where, depth)
        return new

    def _git_patches(self, text: str, where: str, depth: int) -> str:
        """``git diff --binary`` output (a code review prompt): each ``literal`` hunk (the
        new file, and the old one git adds for reversing) is inflated, searched and written
        back the way git writes it, with the ``index`` line's new blob id updated so the
        patch still applies; a ``delta`` hunk that holds an image cannot be rebuilt and is
        refused. Returns ``text`` itself when nothing changed."""
        edits: list[tuple[int, int, str]] = []
        for m in _GIT_HUNK.finditer(text):
            kind, lines = m.group(1), m.group(3)
            at = f"{where}(git {kind})"
            try:
                raw = zlib.decompress(_git_base85(lines), bufsize=1 << 16)
            except (zlib.error, ValueError):
                continue  # not a hunk git could apply either
            self._charge(len(raw), at)
            if kind == "delta":
                # a delta holds the changed bytes of a file, not the file: when the file is
                # an image (its name says so, or the bytes show one) it cannot be cleaned
                name = _GIT_FILE.findall(text, 0, m.start())
                if (name and name[-1].lower().endswith(_IMAGE_SUFFIXES)) or self._probe(
                    raw, at, depth
                ):
                    raise _unrewritable("changed by a git binary delta", where)
                continue
            new, _ = self._node(raw, None, at, depth + 1)
            if new == raw:
                continue
            if text[: m.start()].endswith(("GIT binary patch\n", "GIT binary patch\r\n")):
                edits += _git_new_blob(text, m.start(), raw, new)  # the file's new blob id
            eol = "\r\n" if lines.endswith("\r\n") else "\n"
            hunk = f"{kind} {len(new)}{eol}" + _git_lines(zlib.compress(new, _LEVEL), eol)
            edits.append((m.start(), m.end(), hunk))
        return _splice(text, edits)

    def _ascii85(self, text: str, where: str, depth: int) -> str:
        """Ascii85 between ``<~`` and ``~>``, searched and written back alike (same line
        width); ``text`` itself when nothing changed."""
        edits: list[tuple[int, int, str]] = []
        for m in _ASCII85.finditer(text):
            try:
                raw = base64.a85decode(m.group(0), adobe=True, ignorechars=b" \t\r\n")
            except ValueError:
                continue
            if len(raw) < MIN_IMAGE:
                continue
            self._charge(len(raw), where)
            new, _ = self._node(raw, None, f"{where}(ascii85)", depth + 1)
            if new == raw:
                continue
            first = m.group(1).find("\n")
            wrap = first if first > 0 else 0
            edits.append(
                (m.start(), m.end(), base64.a85encode(new, adobe=True, wrapcol=wrap).decode())
            )
        return _splice(text, edits)

    def _escaped(self, text: str, where: str, depth: int) -> None:
        """Text with JSON-style escapes that did not parse as JSON: if undoing the escapes
        shows an image, it cannot be put back cleaned, so the request is refused."""
        if self._probing:
            return
        plain = _json_unescape(text)
        if plain != text and self._probe(plain.encode("utf-8", "surrogatepass"), where, depth):
            raise _unrewritable("behind backslash escapes", where)

    def _carriers(self, text: str, where: str, depth: int) -> str:
        """Base64, hex and percent-encoded runs and data URIs in ``text``, each decoded,
        searched and, when it held an image, put back in its own encoding. Returns ``text``
        itself when nothing changed."""
        spans: list[tuple[int, int, str]] = []
        if "%" in text and _PCT.search(text) is not None:
            spans.extend(_percent_runs(text))
        spans.extend(list(_base64_runs(text, spans)))
        if not spans:
            return text
        spans.sort()
        edits: list[tuple[int, int, str]] = []
        for start, end, kind in spans:
            run = text[start:end]
            new = self._run(run, kind, f"{where}({kind})", depth + 1)
            pieces = [(start, end, new)]
            if new is _UNDECODABLE:
                # a run that swallowed neighbouring lines ("...base64\n--boundary--") or
                # escapes: its lines, or blocks of equal-length lines, one by one
                pieces = [
                    (a, b, self._run(text[a:b], kind, f"{where}({kind})", depth + 1))
                    for a, b in _sub_runs(text, start, end)
                ]
            if kind == "base64" and not any(isinstance(r, tuple) for _, _, r in pieces):
                # base64 of an image glued to a word ("photo:+/9j/4AAQ..."): from where an
                # image's base64 starts
                at = _image_b64_start(run)
                if 0 < at <= _MAX_GLUE and _whole_image(_decode_run(run[at:])):
                    a = start + at
                    pieces = [(a, end, self._run(text[a:end], kind, f"{where}({kind})", depth + 1))]
            for a, b, result in pieces:
                if isinstance(result, tuple):
                    edits += _data_head(text, edits[-1][1] if edits else 0, a, result[1])
                    edits.append((a, b, result[0]))
        return _splice(text, edits)

    def _run(self, run: str, kind: str, where: str, depth: int) -> tuple[str, str | None] | object:
        """A decoded and searched run: (its new text, the media type of the image it now is),
        None when it did not change, or ``_UNDECODABLE`` when it is not base64 as a whole."""
        if kind == "percent":
            safe = "/" if "/" in run else ""
            # In a form body "+" is a space; in a URI it is itself. Both readings are tried.
            for plus in (" ", "+") if "+" in run else ("+",):
                raw = urllib.parse.unquote_to_bytes(run.replace("+", plus) if plus == " " else run)
                if len(raw) < MIN_IMAGE:
                    return None
                self._charge(len(raw), where)
                new, _ = self._node(raw, None, where, depth)
                if new != raw:
                    text = urllib.parse.quote(new, safe=safe)
                    return (text.replace("%20", "+") if plus == " " else text), _media(new)
            return None
        unhexed = _unhex(run)
        if unhexed is not None:
            self._charge(len(unhexed), where)
            new, _ = self._node(unhexed, None, f"{where}(hex)", depth)
            if new != unhexed:
                return _hex_like(run, new), _media(new)
        if "\\" in run:
            return _UNDECODABLE  # its pieces between escapes are tried; see also _escaped
        # A run over several lines may have swallowed the words around a wrapped block
        # ("base64\r\n\r\n<lines>\r\n--boundary--"): when it does not decode whole to
        # something that changed, its lines and blocks are tried one by one.
        pieces = _UNDECODABLE if "\n" in run else None
        if pieces is not None and not _wrapped(run):
            return pieces  # lines of different widths: words around base64, not a block
        raw_b64 = _decode_run(run) if "=" not in run.rstrip("=") else None
        if raw_b64 is not None and len(raw_b64) >= MIN_IMAGE:
            self._charge(len(raw_b64), where)
            new, _ = self._node(raw_b64, None, where, depth)
            if new != raw_b64:
                return _Base64Style.of(run).encode(new), _media(new)
        unb32 = _b32decode(run)  # RFC 4648 base32: upper-case letters and 2-7 only
        if unb32 is not None and len(unb32) >= MIN_IMAGE:
            self._charge(len(unb32), where)
            new, _ = self._node(unb32, None, f"{where}(base32)", depth)
            if new != unb32:
                text = base64.b32encode(new).decode()
                return (text if run.endswith("=") else text.rstrip("=")), _media(new)
        return pieces

    # -- JSON --------------------------------------------------------------------------------

    def _doc(
        self, doc: Any, where: str, depth: int, skip: frozenset[tuple[Any, ...]]
    ) -> tuple[Any, bool]:
        changed = False
        found = list(_walk(doc, depth))
        # object keys last, the deepest first, so no renamed key breaks a path still to come
        found.sort(key=_keys_last)
        for path, value in found:
            if path in skip:
                continue
            at = where + _dotted(path)
            if isinstance(path[-1:] and path[-1], _Key):
                new_key = self._text(value, at + "(key)", depth + 1)
                if new_key is not value:
                    _rename(doc, path, new_key)
                    changed = True
                continue
            if isinstance(value, str):
                new: Any = self._text(value, at, depth + 1)
                if new is value:
                    continue
                media = _media_of_text(new)
            else:
                raw = bytes(int(v) % 256 for v in value)
                out, _ = self._node(raw, None, at, depth + 1)
                if out == raw:
                    continue
                new, media = _same_numbers(value, out), _media(out)
            doc = _replace(doc, path, new)
            if media is not None:
                _fix_mime(doc, path, media)
            changed = True
        return doc, changed

    # -- containers --------------------------------------------------------------------------

    def _container(self, data: bytes, where: str, depth: int) -> bytes | None:
        """Compressed streams and archives: rebuilt with their members cleaned, or None when
        ``data`` is neither (its structure does not hold beyond the magic)."""
        kind = _container_kind(data)
        if kind is None:
            return None
        if kind == "zip":
            return self._zip(data, where, depth)
        if kind == "tar":
            return self._tar(data, where, depth)
        if kind in ("bzip2", "xz"):
            return self._stream(data, where, depth, kind)
        try:
            inner = decode_body(data, "deflate" if kind == "zlib" else kind,
                                max_bytes=max(self._room, 0))  # fmt: skip
        except RequestTooLarge:
            raise
        except RequestError:
            # Not a whole stream. Whatever part of it does decode must hold no image (a
            # reader could stream that much out); otherwise it was not a stream at all.
            if self._probe(_partial_inflate(data, kind, max(self._room, 0)), where, depth):
                raise _unrewritable(f"a damaged {kind} stream", where) from None
            return None
        self._charge(len(inner), where)
        new, _ = self._node(inner, None, f"{where}({kind})", depth + 1)
        header_extras = kind == "gzip" and data[3] & 0x1C  # FEXTRA, FNAME, FCOMMENT: dropped
        if new == inner and not header_extras:
            return data
        coding = "deflate" if kind == "zlib" else kind
        return encode_body(new, coding, level=_LEVEL)

    def _probe(self, data: bytes, where: str, depth: int) -> bool:
        """Does ``data`` hold an image anywhere (searched as a body, nothing rebuilt)? Shares
        this finder's budget; the probe itself does not start probes of its own."""
        if not data or not _might_hold(data):
            return False
        probe = Finder(_seen, max_bytes=max(self._room, 0))
        probe._probing = True
        try:
            probe._node(data, None, where, depth + 1)
        except (_Seen, Refused):
            return True  # an image, or one that could not be put back
        except RequestTooLarge:
            raise
        except RequestError:
            return False  # what does not parse as anything is not an image either
        finally:
            self._room = min(self._room, probe._room)
        return False

    def _stream(self, data: bytes, where: str, depth: int, kind: str) -> bytes:
        d: Any = bz2.BZ2Decompressor() if kind == "bzip2" else lzma.LZMADecompressor()
        chunks: list[bytes] = []
        size = 0
        try:
            chunk = d.decompress(data, max_length=1 << 20)
            while True:
                size += len(chunk)
                self._charge(len(chunk), where)
                chunks.append(chunk)
                if d.eof:
                    break
                if d.needs_input:
                    raise RequestError(f"{where} is a truncated {kind} stream")
                chunk = d.decompress(b"", max_length=1 << 20)
        except (OSError, lzma.LZMAError, EOFError) as exc:
            raise RequestError(f"{where} is not a valid {kind} stream: {exc}") from exc
        if d.unused_data:
            raise _unrewritable(f"data after the {kind} stream", where)
        inner = b"".join(chunks)
        new, _ = self._node(inner, None, f"{where}({kind})", depth + 1)
        if new == inner:
            return data
        return bz2.compress(new, 1) if kind == "bzip2" else lzma.compress(new, preset=1)

    def _zip(self, data: bytes, where: str, depth: int) -> bytes:
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            infos = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
                IndexError, KeyError) as exc:  # fmt: skip
            raise _unrewritable(f"a zip archive that does not open: {exc}", where) from exc
        if len(infos) > MAX_MEMBERS:
            raise RequestTooLarge(f"{where} is a zip archive of more than {MAX_MEMBERS} members")
        kind = _zip_document([i.filename for i in infos])
        if kind is not None:
            self._doc_found(kind, where)
        members: list[tuple[zipfile.ZipInfo, bytes]] = []
        # comments and extra fields are not rebuilt: when one could hold an image, the
        # archive is written anew without them
        changed = any(
            self._probe(i.comment, where, depth) or self._probe(i.extra, where, depth)
            for i in infos
        )
        if self._probe(archive.comment, where, depth):
            archive.comment = b""
            changed = True
        for info in infos:
            at = f"{where}[{_label(info.filename)}]"
            if info.filename.endswith("/"):  # a folder (is_dir() fails on an empty name)
                members.append((info, b""))
                continue
            if info.flag_bits & 0x1:
                raise _unrewritable("an encrypted zip member, which cannot be looked into", at)
            try:
                with archive.open(info) as member:
                    inner = member.read(max(self._room, 0) + 1)
            except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError,
                    EOFError, RuntimeError) as exc:  # fmt: skip
                raise _unrewritable(f"a zip member that does not read: {exc}", at) from exc
            new = self._member(inner, at, depth)
            changed |= new != inner
            members.append((info, new))
        if not changed:
            return data
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compresslevel=_LEVEL) as rebuilt:
            rebuilt.comment = archive.comment
            for info, content in members:
                copy = zipfile.ZipInfo(info.filename, info.date_time)
                copy.compress_type = info.compress_type
                copy.external_attr = info.external_attr
                copy.create_system = info.create_system
                if info.filename.endswith("/"):
                    rebuilt.writestr(copy, b"")
                else:
                    rebuilt.writestr(copy, content)
        return out.getvalue()

    def _member(self, inner: bytes, at: str, depth: int) -> bytes:
        """An archive member: charged to the budget, searched as a body of its own."""
        self._charge(len(inner), at)
        return self._node(inner, None, at, depth + 1)[0]

    def _tar(self, data: bytes, where: str, depth: int) -> bytes:
        try:
            archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")  # noqa: SIM115
            infos = archive.getmembers()
        except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
            raise _unrewritable(f"a tar archive that does not open: {exc}", where) from exc
        if len(infos) > MAX_MEMBERS:
            raise RequestTooLarge(f"{where} is a tar archive of more than {MAX_MEMBERS} members")
        members: list[tuple[tarfile.TarInfo, bytes | None]] = []
        changed = False
        for info in infos:
            if not info.isfile():
                members.append((info, None))
                continue
            at = f"{where}[{_label(info.name)}]"
            extracted = archive.extractfile(info)
            if extracted is None:
                raise _unrewritable("a tar member that does not read", at)
            inner = extracted.read()
            new = self._member(inner, at, depth)
            changed |= new != inner
            members.append((info, new))
        if not changed:
            return data
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:", format=archive.format) as rebuilt:
            for info, content in members:
                if content is None:
                    rebuilt.addfile(info)
                else:
                    info.size = len(content)
                    rebuilt.addfile(info, io.BytesIO(content))
        return out.getvalue()

    # -- multipart ---------------------------------------------------------------------------

    def _multipart(
        self,
        body: bytes,
        content_type: str,
        where: str,
        depth: int,
        *,
        masks: frozenset[str] | set[str] = frozenset(),
        on_field: Callable[[str, bytes], None] | None = None,
    ) -> tuple[bytes, str]:
        media, params = _split_params(content_type, "Content-Type", MalformedMultipart)
        boundary = params.get("boundary")
        if boundary is None:
            raise MalformedMultipart(f"the {media} Content-Type of {where} has no boundary")
        _check_boundary(boundary)
        form = media == "multipart/form-data"
        raw, eol = split_multipart(body, boundary, max_parts=self.max_parts)
        parts = [_MimePart.read(h, d, i, form, where) for i, (h, d) in enumerate(raw, 1)]
        order = sorted(range(len(parts)), key=lambda i: parts[i].name in masks)  # images first
        # the preamble and epilogue (outside every part, read by no one) are dropped when
        # they could hold anything: the body is rebuilt without them
        marker = b"--" + boundary.encode("ascii")
        first, last = body.find(marker), body.rfind(marker + b"--")
        changed = _might_hold(body[:first]) or _might_hold(body[last + len(marker) + 2 :])
        for i in order:
            part = parts[i]
            at = f"{where}[{_label(part.name or str(i + 1))}]" if form else f"{where}[part {i + 1}]"
            if on_field is not None and part.filename is None and part.name is not None:
                on_field(part.name, part.data)
            inner = part.decoded(at, self)
            role: Role = "mask" if part.name in masks else "image"
            new, new_type = self._node(inner, part.content_type, at, depth + 1, role)
            if new != inner:
                part.replace(new, new_type or _media(new))
                changed = True
            if part.filename is not None:
                changed |= part.rename(self)
                if self._renamed is not None and part.filename is not None:
                    self._renamed(at, part.filename)
        if not changed:
            return body, content_type
        delim = b"--" + boundary.encode("ascii")
        if any(delim in p.data or delim in p.render(eol) for p in parts):
            boundary = "veilpix-" + secrets.token_hex(16)
            delim = b"--" + boundary.encode("ascii")
            content_type = f"{media}; " + "; ".join(
                f"{k}={_token_or_quoted(v)}" for k, v in {**params, "boundary": boundary}.items()
            )
        out = b"".join(delim + p.render(eol) + eol for p in parts) + delim + b"--" + eol
        return out, content_type


_NOT_JSON = object()
_UNDECODABLE = object()


def _wrapped(run: str, multiple: int = 4) -> bool:
    """Is a run over several lines one line-wrapped block: every line but the last of one
    width (a multiple of 4 for base64, of 2 for hex; at most 120), the last no longer?"""
    widths = [len(line.rstrip("\r")) for line in run.split("\n")]
    width = widths[0]
    return (
        width <= _MAX_WRAP
        and width % multiple == 0
        and all(w == width for w in widths[:-1])
        and 0 < widths[-1] <= width
    )


def _sub_runs(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The pieces of a run that did not decode whole: split at backslashes and line ends,
    with consecutive lines of one length (and a shorter last line) kept together as one
    line-wrapped block. Pieces shorter than a run are left out."""
    lines: list[tuple[int, int]] = []
    pos = start
    for m in _RUN_BREAK.finditer(text, start, end):
        if m.start() > pos:
            lines.append((pos, m.start()))
        pos = m.end()
    if pos < end:
        lines.append((pos, end))
    blocks: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        a, b = lines[i]
        width = b - a
        j = i + 1
        wraps = width <= _MAX_WRAP and width % 4 == 0  # 64 (PEM), 76 (MIME), ...
        while (
            wraps
            and j < len(lines)
            and lines[j][1] - lines[j][0] == width
            and text[lines[j - 1][1]] != "\\"
        ):
            j += 1
        if wraps and j < len(lines) and 0 < lines[j][1] - lines[j][0] < width:
            j += 1  # the shorter last line of a wrapped block
        blocks.append((a, lines[j - 1][1]))
        i = j
    return [(a, b) for a, b in blocks if b - a >= MIN_RUN]


class _Seen(Exception):
    """Raised by the probe finder of :meth:`Finder._escaped` at the first image."""


def _seen(data: bytes, where: str, role: Role) -> bytes:
    raise _Seen


def _label(name: str) -> str:
    """A name from the request (a form field, an archive member) as it may appear in a
    record: printable, valid UTF-8 (escapes for the rest), at most 100 characters."""
    shown = name.encode("utf-8", "backslashreplace").decode("utf-8")
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)
    return shown if len(shown) <= 100 else shown[:97] + "..."


def _whole_json(data: bytes | str) -> bool:
    """Is ``data`` one JSON document (duplicate keys allowed)?"""
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


def _media(data: bytes) -> str | None:
    return MEDIA_TYPES[sniff(data)] if looks_like_image(data) else None


def _media_of_text(text: str) -> str | None:
    """The media type of the image a whole string now carries (a data URI or base64)."""
    text = text.strip()
    if text[:5].lower() == "data:":
        return text[5 : text.find(";")].lower() if ";" in text[:80] else None
    head = _decode_run(text[:64]) if len(text) >= MIN_RUN else None
    return _media(head) if head is not None else None


def _token_or_quoted(value: str) -> str:
    return value if re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value) else _quote_param(value)


def _data_head(text: str, after: int, start: int, media: str | None) -> list[tuple[int, int, str]]:
    """When the run at ``start`` is the payload of a ``data:`` URI (whose head lies after
    ``after``) and the URI's media type no longer names the image it now carries, the edit
    that makes it name ``media``; none otherwise."""
    if media is None or start == 0 or text[start - 1] != ",":
        return []
    window_start = max(after, start - 1100)
    window = text[window_start:start]
    at = window.lower().rfind("data:")
    head = _DATA_HEAD.match(window, at) if at >= 0 else None
    if head is None or head.group(1).lower() == media:
        return []
    return [(window_start + head.start(1), window_start + head.end(1), media)]


def _mask(text: str, table: bytes) -> str:
    """``text`` mapped through ``table`` one character for one (characters outside latin-1
    become "?" first; both tables map every non-ASCII code to "."): C-speed, indexes kept."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raw = text.encode("ascii", "replace")
    return raw.translate(table).decode("ascii")


def _percent_runs(text: str) -> list[tuple[int, int, str]]:
    mask = _mask(text, _PCT_TABLE_B)
    runs: list[tuple[int, int, str]] = []
    for m in _PCT.finditer(text):
        if runs and m.start() < runs[-1][1]:
            continue
        start = mask.rfind(".", 0, m.start()) + 1
        end = mask.find(".", m.start())
        end = len(text) if end < 0 else end
        if end - start >= MIN_IMAGE:  # (percent-encoded base64 may have one escape in all)
            runs.append((start, end, "percent"))
    return runs


def _base64_runs(text: str, taken: list[tuple[int, int, str]]) -> Iterator[tuple[int, int, str]]:
    """Runs of at least 16 base64 characters (line breaks and backslash escapes kept inside,
    up to two '=' of padding after), outside the ``taken`` spans."""
    if len(text) < MIN_RUN:
        return
    mask = _mask(text, _RUN_TABLE_B)
    taken = sorted(taken)
    taken_at = 0
    pos = mask.find(_RUN)
    while pos >= 0:
        end = mask.find(".", pos)
        end = len(text) if end < 0 else end
        padding = 0
        while end < len(text) and text[end] == "=" and padding < 6:  # (base32 pads to 6)
            end += 1
            padding += 1
        start = pos
        while start < end and text[start] in "\r\n\\":
            start += 1
        stop = end
        while stop > start and text[stop - 1] in "\r\n":
            stop -= 1
        while taken_at < len(taken) and taken[taken_at][1] <= start:
            taken_at += 1  # both in order: the spans that end before this run are past
        clash = taken_at < len(taken) and taken[taken_at][0] < stop
        if stop - start >= MIN_RUN and not clash:
            yield start, stop, "base64"
        pos = mask.find(_RUN, end)


def _json_spans(text: str) -> list[tuple[int, int, Any]]:
    """JSON objects and arrays of at least 12 characters inside ``text``, with their spans;
    at most :data:`MAX_MEMBERS` attempts (what is not tried is still searched as text)."""
    spans: list[tuple[int, int, Any]] = []
    pos = 0
    for _ in range(MAX_MEMBERS):
        brace, bracket = text.find("{", pos), text.find("[", pos)
        start = min(brace, bracket) if brace >= 0 and bracket >= 0 else max(brace, bracket)
        if start < 0:
            break
        try:
            value, end = _JSON_DECODER.raw_decode(text, start)
        except RecursionError:
            pos = start + 1  # nested past any reader's limit: prose, searched as text
            continue
        except json.JSONDecodeError as exc:
            # an opener inside the part that did not parse fails at the same place: skip
            # them all (what they hold is still searched as text)
            pos = max(start + 1, exc.pos)
            continue
        except (ValueError, RequestError):
            pos = start + 1
            continue
        if end - start >= 12 and not (start == 0 and end == len(text)):
            spans.append((start, end, value))
            pos = end
        else:
            pos = start + 1
    return spans


def _length_prefixed(data: bytes, k: int, end: int) -> bool:
    """Does a length field right before ``k`` give the image's size (a 2- or 4-byte integer
    either way round, a protobuf varint, a msgpack bin8 header)?"""
    size = end - k
    for width in (4, 2):
        if k >= width:
            field = data[k - width : k]
            if size in (int.from_bytes(field, "big"), int.from_bytes(field, "little")):
                return True
    if k >= 2 and data[k - 2] == 0xC4 and data[k - 1] == size:
        return True
    value, shift, i = 0, 0, k - 1  # a varint ends at k - 1: read it backwards
    while i >= 0 and k - i <= 5 and (i == k - 1 or data[i] & 0x80):
        i -= 1
    for start in range(i + 1, k):
        value, shift = 0, 0
        for b in data[start:k]:
            value |= (b & 0x7F) << shift
            shift += 7
        if value == size and all(b & 0x80 for b in data[start : k - 1]) and not data[k - 1] & 0x80:
            return True
    return False


def _container_kind(data: bytes) -> str | None:
    """Which compressed stream or archive ``data`` is, its magic confirmed by what follows."""
    head = data[:32]
    if head[:3] == b"\x1f\x8b\x08" and not head[3] & 0xE0 and len(data) >= 18:
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd" and len(data) >= 9:
        return "zstd"
    if head[:3] == b"BZh" and head[4:10] == b"1AY&SY":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"PK\x03\x04" and len(data) >= 30:
        name, extra = int.from_bytes(head[26:28], "little"), int.from_bytes(head[28:30], "little")
        if 30 + name + extra <= len(data) and head[4] <= 63 and b"PK\x05\x06" in data[-65_600:]:
            return "zip"  # a sane first member, and the end-of-archive record a reader needs
    if head[:4] == b"PK\x05\x06" and len(data) == 22 + int.from_bytes(data[20:22], "little"):
        return "zip"
    if len(data) >= 512 and data[257:262] == b"ustar" and _tar_checksum_ok(data[:512]):
        return "tar"
    if len(data) >= 8 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:
        return "zlib"  # (pako, zlib.compress): checked further by decoding
    return None


def _tar_checksum_ok(block: bytes) -> bool:
    try:
        stored = int(block[148:156].split(b"\x00")[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(block[:148]) + 8 * 32 + sum(block[156:])


def _partial_inflate(data: bytes, kind: str, limit: int) -> bytes:
    """What a streaming reader would get out of a damaged gzip/zlib/zstd stream."""
    out: list[bytes] = []
    size = 0
    try:
        if kind == "zstd":
            return b""  # zstd frames carry checksums and sizes: a damaged one yields nothing
        d = zlib.decompressobj(16 + zlib.MAX_WBITS if kind == "gzip" else zlib.MAX_WBITS)
        for i in range(0, len(data), 4096):
            chunk = d.decompress(data[i : i + 4096], max(limit - size, 1))
            size += len(chunk)
            out.append(chunk)
            if size >= limit or d.eof:
                break
    except zlib.error:
        pass
    return b"".join(out)


_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
)  # fmt: skip


def _wide_text(data: bytes, media: str, ctype: str) -> tuple[str, str, bytes] | None:
    """(text, codec, byte-order mark) when ``data`` is UTF-16 or UTF-32 text: by its mark,
    its charset parameter, or ASCII characters with NULs between them."""
    bom, codec = next(((m, c) for m, c in _BOMS if data.startswith(m)), (b"", ""))
    if not bom:
        charset = ctype.lower().partition("charset=")[2].split(";")[0].strip().strip('"')
        if charset.startswith(("utf-16", "utf-32")):
            codec = charset if charset[-2:] in ("le", "be") else charset + "-le"
        elif len(data) >= 4 and data[1:64:2].count(0) == len(data[1:64:2]) and data[0]:
            codec = "utf-16-le"
        elif len(data) >= 4 and data[0:64:2].count(0) == len(data[0:64:2]) and data[1]:
            codec = "utf-16-be"
        if not codec or media.startswith(("image/", "multipart/")):
            return None
    try:
        return data[len(bom) :].decode(codec, "surrogatepass"), codec, bom
    except UnicodeDecodeError:
        return None


def _byte_array_in(data: bytes) -> bool:
    return b"[" in data and _BYTE_ARRAY_B.search(data) is not None


def _carrier_runs_in(data: bytes, *, binary: bool = False) -> bool:
    """A base64/hex run or percent escapes (a cluster of them in binary) in ``data``?"""
    if data.translate(_RUN_TABLE_B).find(_RUN_B) >= 0:
        return True
    return b"%" in data and (_PCT_CLUSTER_B if binary else _PCT_B).search(data) is not None


def _text_might_hold(data: bytes) -> bool:
    if _carrier_runs_in(data) or b"\\x" in data or b"<~" in data or b"GIT binary patch" in data:
        return True
    mask = data.translate(_HEXSEP_TABLE_B)
    return any(n in mask for n in _HEXSEP_B)


def _might_hold(data: bytes) -> bool:
    """False only when no layer of ``data`` can hold an image (see Finder.might_hold_image).
    Written for speed: it runs on every request body."""
    if data.isascii():
        # every image file holds a NUL (a GIF's block terminator, a WebP's size field, ...)
        if data.startswith(_ASCII_STARTS) or data[257:262] == b"ustar":
            return True
        if data.translate(_RUN_TABLE_B).find(_RUN_B) >= 0:
            return True
        # NUL, "%", "\\x", "[": one regex pass for a small body is cheaper than four searches;
        # for a large one, four memchr-speed searches are cheaper than the regex
        if len(data) > 4096 or _RARE_B.search(data) is not None:
            # NUL, escapes, Ascii85 (one byte first: memchr speed; two-byte needles are not)
            if b"\x00" in data or (b"\\" in data and b"\\x" in data):
                return True
            if b"<" in data and b"<~" in data:
                return True
            if b"%" in data and _PCT_B.search(data) is not None:
                return True
            if b"[" in data and _BYTE_ARRAY_B.search(data) is not None:
                return True
        if b"GIT binary patch" in data:
            return True
        hexsep = data.translate(_HEXSEP_TABLE_B)
        if len(data) <= 4096 and hexsep.count(b"hhs") < 6:
            return False  # fewer than six separated hex pairs in all
        return _HEXSEP_B[0] in hexsep or _HEXSEP_B[1] in hexsep or _HEXSEP_B[2] in hexsep
    if looks_like_image(data) or _document_kind(data) is not None:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True  # binary: looked at whole by _bytes, which finds signatures anyway
    if any(s in data for s in _UTF8_SIGNATURES):
        return True
    return _text_might_hold(data) or _byte_array_in(data)


_ASCII_STARTS = (b"PK", b"BZh", b"%PDF-", b"{\\rtf")  # zip, bzip2, documents
_RARE_B = re.compile(rb"[\x00%\\\[<]")


def _sniff_multipart(data: bytes) -> str | None:
    """The boundary when ``data`` starts like a multipart body sent without its header."""
    if not data.startswith(b"--"):
        return None
    eol = data.find(b"\n", 0, 80)
    if eol < 0:
        return None
    line = data[2:eol].rstrip(b"\r \t")
    try:
        boundary = line.decode("ascii")
        _check_boundary(boundary)
    except (UnicodeDecodeError, MalformedMultipart):
        return None
    return boundary if b"\n--" + line + b"--" in data else None


def _walk(doc: Any, depth: int) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Strings that may carry something, and arrays of byte values, with their paths."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if len(node) >= MIN_IMAGE:
                yield path, node
            continue
        if isinstance(node, list):
            if len(node) >= MIN_IMAGE and _byte_array(node):
                yield path, node
                continue
            if len(path) + depth > DEFAULT_MAX_DEPTH:
                raise _TooDeep("the JSON is nested too deep to search")
            stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, dict):
            if len(path) + depth > DEFAULT_MAX_DEPTH:
                raise _TooDeep("the JSON is nested too deep to search")
            for key in node:
                if len(key) >= MIN_IMAGE:  # an image can be an object key, too
                    yield (*path, _Key(key)), key
            stack.extend(((*path, k), v) for k, v in reversed(list(node.items())))


class _TooDeep(RequestTooLarge):
    """JSON nested deeper than veilpix searches (inside prose: searched as text instead)."""


class _Key(str):
    """A path step naming an object key itself (not the value under it)."""

    __slots__ = ()


def _keys_last(item: tuple[tuple[Any, ...], Any]) -> tuple[int, int]:
    path = item[0]
    return (1, -len(path)) if path and isinstance(path[-1], _Key) else (0, 0)


def _byte_array(node: list[Any]) -> bool:
    """Bytes as JSON numbers: 0..255 (Node's Buffer), -128..127 (Java's byte[] through Gson),
    or either written as floats (255.0)."""
    first = node[0]
    if type(first) not in (int, float) or not -128 <= first <= 255:
        return False
    return all(
        type(v) in (int, float) and -128 <= v <= 255 and (type(v) is int or v.is_integer())
        for v in node
    )


def _same_numbers(original: list[Any], data: bytes) -> list[Any]:
    """``data`` as numbers written the way ``original`` wrote them (signed, floats)."""
    signed = any(v < 0 for v in original)
    values = [b - 256 if signed and b > 127 else b for b in data]
    return [float(v) for v in values] if type(original[0]) is float else values


def _rename(doc: Any, path: tuple[Any, ...], new_key: str) -> None:
    """Rename the key ``path[-1]`` of the object at ``path[:-1]``, keeping the order."""
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    items = [(new_key if k == path[-1] else k, v) for k, v in parent.items()]
    if new_key in parent:
        raise RequestError("an object key holding an image would collide with another key")
    parent.clear()
    parent.update(items)


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


_MIME_KEYS = ("mimeType", "mime_type", "media_type", "mediaType", "content_type", "contentType")


def _fix_mime(doc: Any, path: tuple[Any, ...], media_type: str) -> None:
    """Update the media-type field beside a string that is now an image (Gemini
    ``inlineData.mimeType``, Anthropic ``source.media_type``) so it names the format sent."""
    if not path:
        return
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict):
        for key in _MIME_KEYS:
            if isinstance(parent.get(key), str):
                parent[key] = media_type


def _dotted(path: tuple[Any, ...]) -> str:
    return "".join(
        f"[{p}]" if isinstance(p, int) else f"[key {len(p)} chars]" if isinstance(p, _Key)
        else f".{_label(p)}"
        for p in path
    )  # fmt: skip


# =========================================================================== MIME parts
@dataclass
class _MimePart:
    """One part of a multipart body: its headers as sent (order and case kept) and data."""

    headers: list[tuple[str, str]]
    data: bytes
    name: str | None
    filename: str | None
    content_type: str | None
    transfer: str
    coding: str | None
    plain: bytes | None = None  # the data with its transfer encodings undone

    @classmethod
    def read(
        cls, headers: list[tuple[str, str]], data: bytes, index: int, form: bool, where: str
    ) -> _MimePart:
        seen: dict[str, str] = {}
        for key, value in headers:
            low = key.lower()
            if low in ("content-disposition", "content-type", "content-transfer-encoding",
                       "content-encoding", "content-length"):  # fmt: skip
                if low in seen:
                    raise MalformedMultipart(
                        f"part {index} of {where} has two {key} headers; refusing to guess "
                        "which counts"
                    )
                seen[low] = value
        length = seen.get("content-length")
        digits = (length or "").strip()
        if length is not None and (
            not (digits.isascii() and digits.isdigit()) or int(digits) != len(data)
        ):
            raise MalformedMultipart(
                f"part {index} of {where} declares Content-Length {length!r} but carries "
                f"{len(data)} bytes"
            )
        name = filename = None
        disposition = seen.get("content-disposition")
        if disposition is not None:
            what = f"the Content-Disposition of part {index} of {where}"
            kind, params = _split_params(disposition, what, MalformedMultipart)
            params = _rfc2231(params, what, MalformedMultipart)
            name = params.get("name")
            filename = params.get("filename")
            if form and (kind != "form-data" or name is None):
                raise MalformedMultipart(f"{what} is not form-data with a name (RFC 7578)")
        elif form:
            raise MalformedMultipart(
                f"part {index} of {where} has no Content-Disposition header (RFC 7578)"
            )
        transfer = seen.get("content-transfer-encoding", "binary").strip().lower()
        if transfer not in ("7bit", "8bit", "binary", "base64", "quoted-printable"):
            raise Refused(
                "image.unrewritable",
                f"part {index} of {where} uses Content-Transfer-Encoding {transfer!r}, which "
                "veilpix cannot read, so it cannot prove the part clean",
            )
        coding = seen.get("content-encoding")
        if coding is not None and coding.strip().lower() in ("", "identity"):
            coding = None
        return cls(headers, data, name, filename, seen.get("content-type"), transfer, coding)

    def decoded(self, where: str, finder: Finder) -> bytes:
        data = self.data
        try:
            if self.transfer == "base64":
                data = base64.b64decode(re.sub(rb"\s+", b"", data), validate=True)
            elif self.transfer == "quoted-printable":
                data = binascii.a2b_qp(data)
        except binascii.Error as exc:
            raise RequestError(f"{where} is not valid {self.transfer}: {exc}") from exc
        if self.coding is not None:
            data = decode_body(data, self.coding, max_bytes=max(finder._room, 0))
            finder._charge(len(data), where)
        self.plain = data
        return data

    def replace(self, data: bytes, media_type: str | None) -> None:
        self.plain = data
        if self.coding is not None:
            data = encode_body(data, self.coding, level=_LEVEL)
        if self.transfer == "base64":
            text = base64.encodebytes(data).replace(b"\n", b"\r\n")
            data = text[:-2] if text.endswith(b"\r\n") else text
        elif self.transfer == "quoted-printable":
            data = binascii.b2a_qp(data)
        elif self.transfer == "7bit" and not data.isascii():
            self.transfer = "binary"
            self._set("Content-Transfer-Encoding", "binary")
        self.data = data
        if media_type is not None and self.content_type is not None:
            self.content_type = media_type
            self._set("Content-Type", media_type)
        self._set("Content-Length", None)

    def rename(self, finder: Finder) -> bool:
        """Give a file part a neutral name that keeps the right extension (``image.jpg``,
        ``file.pdf``): file names often carry a person's name. True when it changed."""
        finder.files += 1
        data = self.plain if self.plain is not None else self.data
        new = neutral_name_for(data, self.filename, finder.files)
        if new == self.filename:
            return False
        self.filename = new
        for i, (key, value) in enumerate(self.headers):
            if key.lower() == "content-disposition":
                kind, params = _split_params(value, "Content-Disposition", MalformedMultipart)
                # every spelling of the name: filename, filename*, and RFC 2231's
                # continuations (filename*0*, filename*1, ...), which receivers prefer
                params = {
                    k: v for k, v in params.items() if k.lower().split("*", 1)[0] != "filename"
                }
                params["filename"] = new
                rendered = "; ".join([kind, *(f"{k}={_quote_param(v)}" for k, v in params.items())])
                self.headers[i] = (key, rendered)
        return True

    def _set(self, name: str, value: str | None) -> None:
        low = name.lower()
        found = False
        out: list[tuple[str, str]] = []
        for key, old in self.headers:
            if key.lower() == low:
                if value is not None and not found:
                    out.append((key, value))
                found = True
            else:
                out.append((key, old))
        if value is not None and not found:
            out.append((name, value))
        self.headers = out

    def render(self, eol: bytes) -> bytes:
        lines = b"".join(
            f"{k}: {v}".encode("utf-8", "surrogateescape") + eol for k, v in self.headers
        )
        return eol + lines + eol + self.data
