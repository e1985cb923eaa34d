"""Base64 and ``data:`` URIs (RFC 2397), and the test for a base64 string that is an image.

:func:`decode_base64` reads standard or URL-safe base64 with optional padding and ASCII
whitespace; :func:`parse_data_uri` and :func:`build_data_uri` read and write data URIs;
:func:`looks_like_base64_image` tells whether a string is base64 of an image while decoding
only a short prefix of anything that is not.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Iterable
from typing import NamedTuple

from veilpix._errors import RequestError
from veilpix.codec._limits import BASE64_MIN_LEN
from veilpix.codec._params import _TOKEN
from veilpix.formats._sniff import looks_like_image

__all__ = [
    "DataUri",
    "build_data_uri",
    "decode_base64",
    "looks_like_base64_image",
    "parse_data_uri",
]

_SNIFF_CHARS = 344  # base64 characters decoded before the whole string (258 bytes)
_WS_SLACK = 64  # whitespace tolerated inside that prefix (line-wrapped base64)
_DATA_URI_HEADER_MAX = 1024  # characters between "data:" and the comma

_MEDIA_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_B64_WS = str.maketrans("", "", " \t\r\n\f\v")
_URLSAFE = str.maketrans("-_", "+/")


def decode_base64(text: str) -> bytes:
    """Decode standard or URL-safe base64; padding optional, ASCII whitespace ignored.
    Raises ValueError for anything else (other characters, mixed alphabets, bad length)."""
    text = text.translate(_B64_WS)
    if "-" in text or "_" in text:
        if "+" in text or "/" in text:
            raise ValueError("mixes the standard and URL-safe base64 alphabets")
        text = text.translate(_URLSAFE)
    text = text.rstrip("=")
    if len(text) % 4 == 1:
        raise ValueError("base64 length is impossible")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


class DataUri(NamedTuple):
    """A parsed ``data:`` URI (RFC 2397)."""

    media_type: str  # lower-cased; "text/plain" when the URI names none
    params: tuple[tuple[str, str], ...]  # in order, as written ("name", "x.png")
    data: bytes


def parse_data_uri(s: str) -> DataUri | None:
    """Parse a ``data:`` URI (RFC 2397): base64 (whitespace, missing padding and the
    URL-safe alphabet tolerated) or percent-encoded.

    Returns None when ``s`` is not a data URI at all (no ``data:`` scheme, no comma within
    1024 characters, an invalid media type). Raises :class:`~veilpix.RequestError` when it
    is one but its base64 payload does not decode.
    """
    if s[:5].lower() != "data:":
        return None
    comma = s.find(",", 5, 5 + _DATA_URI_HEADER_MAX)
    if comma < 0:
        return None
    items = s[5:comma].split(";")
    is_base64 = len(items) > 1 and items[-1].strip().lower() == "base64"
    if is_base64:
        items.pop()
    media_type = items[0].strip().lower()
    if not media_type:
        media_type = "text/plain"
    elif _MEDIA_TYPE.fullmatch(media_type) is None:
        return None
    params = []
    for item in items[1:]:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or _TOKEN.fullmatch(key) is None:
            return None
        params.append((key, value.strip()))
    payload = s[comma + 1 :]
    if not is_base64:
        return DataUri(media_type, tuple(params), urllib.parse.unquote_to_bytes(payload))
    try:
        if "%" in payload:
            payload = urllib.parse.unquote_to_bytes(payload).decode("ascii")
        data = decode_base64(payload)
    except ValueError as exc:
        raise RequestError(
            f"a data: URI ({media_type}) has a base64 payload that does not decode: {exc}"
        ) from exc
    return DataUri(media_type, tuple(params), data)


def build_data_uri(media_type: str, data: bytes, params: Iterable[tuple[str, str]] = ()) -> str:
    """``data:<media_type>[;k=v]...;base64,<data>`` with standard, padded base64."""
    if _MEDIA_TYPE.fullmatch(media_type) is None:
        raise RequestError(f"cannot build a data: URI for the media type {media_type!r}")
    head = media_type
    for key, value in params:
        if _TOKEN.fullmatch(key) is None or key.lower() == "base64" or re.search(r"[,;\s]", value):
            raise RequestError(f"cannot put the parameter {key}={value!r} into a data: URI")
        head += f";{key}={value}"
    return f"data:{head};base64,{base64.b64encode(data).decode('ascii')}"


def looks_like_base64_image(s: str, *, min_len: int = BASE64_MIN_LEN) -> bytes | None:
    """The decoded bytes when ``s`` is base64 (standard or URL-safe, padding optional,
    whitespace ignored) of something that sniffs as an image; otherwise None.

    Cheap for anything else: a long string is decoded whole only after its first 344
    characters decoded and sniffed as an image, so a 10 MB non-image string costs one
    decode of 344 characters.
    """
    if len(s) < min_len:
        return None
    if len(s) > _SNIFF_CHARS + _WS_SLACK:
        head = s[: _SNIFF_CHARS + _WS_SLACK].translate(_B64_WS)[:_SNIFF_CHARS]
        try:
            prefix = decode_base64(head[: len(head) // 4 * 4])
        except ValueError:
            return None
        if not looks_like_image(prefix):
            return None
    try:
        data = decode_base64(s)
    except ValueError:
        return None
    return data if looks_like_image(data) else None
