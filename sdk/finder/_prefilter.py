"""The quick test run on every request body: can any layer of it hold an image at all?

Bodies with no trace of an image (no signature, no base64, hex or percent run, no byte array,
no container, no escapes) are recognised by a few C-speed passes over the bytes and returned
untouched; only the others are taken apart. Written for speed: it runs on every request.
"""

from __future__ import annotations

import re

from veilpix.finder._archives import _document_kind
from veilpix.finder._runs import (
    _BYTE_ARRAY_B,
    _HEXSEP_B,
    _HEXSEP_TABLE_B,
    _PCT_B,
    _PCT_CLUSTER_B,
    _RUN_B,
    _RUN_TABLE_B,
)
from veilpix.finder._signatures import _UTF8_SIGNATURES
from veilpix.formats._sniff import looks_like_image

_ASCII_STARTS = (b"PK", b"BZh", b"%PDF-", b"{\\rtf")  # zip, bzip2, documents
_RARE_B = re.compile(rb"[\x00%\\\[<]")


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
