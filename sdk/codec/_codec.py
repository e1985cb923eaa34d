"""The request codec: find the images in an outbound HTTP request body, and rebuild the body.

Before a request leaves, the core decodes its body (:func:`decode_body`), finds every image
in it (multipart parts, data URIs and bare base64 in JSON), sanitizes each one and rebuilds
the body with the same meaning (:func:`build_multipart`, :func:`replace_at`,
:func:`dump_json`). Everything here is a pure function: bytes in, bytes out, no I/O and no
global state.

Every reader is bounded and fails closed. Hostile input (a decompression bomb, 100 000
multipart parts, an unterminated body, a header block without end, JSON nested 100 000 deep)
raises a :class:`~veilpix.RequestError` quickly, with a message that says what is wrong;
nothing here hangs, recurses without bound or allocates much more than the limits the caller
passes. Where two readers (veilpix and the vendor's server) could see a body differently, the
body is refused rather than guessed at, so what veilpix checked is what the vendor gets.

Limits (keyword arguments; the defaults are the module constants):

* ``max_bytes``: body size, compressed and decoded (:data:`DEFAULT_MAX_BYTES`, 128 MiB)
* ``max_parts``: multipart parts (:data:`DEFAULT_MAX_PARTS`, 256)
* ``max_depth``: JSON nesting (:data:`DEFAULT_MAX_DEPTH`, 256)
* fixed: 4 stacked content codings, a 70-character boundary (RFC 2046), 16 KiB and 32 lines
  of headers per multipart part, 8 MiB zstd window (RFC 9659)
"""

from __future__ import annotations

import base64
import functools
import importlib
import io
import json
import re
import secrets
import sys
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal, NamedTuple

from veilpix._errors import (
    MalformedMultipart,
    RequestError,
    RequestTooLarge,
    UnsupportedEncoding,
)
from veilpix.formats._sniff import MEDIA_TYPES, looks_like_image, sniff

__all__ = [
    "BASE64_MIN_LEN",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_PARTS",
    "DataUri",
    "JsonImage",
    "JsonPath",
    "JsonText",
    "JsonUrl",
    "Multipart",
    "Part",
    "build_data_uri",
    "build_multipart",
    "decode_body",
    "dump_json",
    "encode_body",
    "find_images_in_json",
    "find_urls_in_json",
    "get_at",
    "image_in_string",
    "iter_strings",
    "load_json",
    "looks_like_base64_image",
    "multipart_boundary",
    "parse_content_encoding",
    "parse_content_type",
    "parse_data_uri",
    "parse_multipart",
    "replace_at",
    "scan_json",
    "select",
    "split_multipart",
]

DEFAULT_MAX_BYTES = 128 << 20
DEFAULT_MAX_PARTS = 256
DEFAULT_MAX_DEPTH = 256
BASE64_MIN_LEN = 32  # characters; the smallest real images (a 1x1 GIF) are about 60

MAX_CODINGS = 4  # stacked Content-Encoding layers
MAX_BOUNDARY_LEN = 70  # RFC 2046 section 5.1.1
MAX_PART_HEADER_BYTES = 16 << 10
MAX_PART_HEADERS = 32
ZSTD_MAX_WINDOW = 8 << 20  # RFC 9659: the window a zstd content coding may use

_CHUNK = 1 << 20  # decompression output per step
_IN_CHUNK = 64 << 10  # decompression input per step
_SNIFF_CHARS = 344  # base64 characters decoded before the whole string (258 bytes)
_WS_SLACK = 64  # whitespace tolerated inside that prefix (line-wrapped base64)
_DATA_URI_HEADER_MAX = 1024  # characters between "data:" and the comma

JsonPath = tuple[str | int, ...]
"""A position in a parsed JSON document: object keys (str) and array indexes (int)."""

# Keys whose string values (or arrays of strings) are text a person, or the app for them,
# wrote: chat and message content, Gemini parts, prompts. Under SYSTEM_KEYS, or in a message
# whose role is in SYSTEM_ROLES, the text is instructions to the model rather than a prompt.
TEXT_KEYS = frozenset({
    "prompt", "negative_prompt", "text_prompt", "style_prompt", "search_prompt",
    "select_prompt", "background_prompt", "foreground_prompt", "text", "content", "input",
})  # fmt: skip
SYSTEM_KEYS = frozenset({"system", "instructions", "systemInstruction", "system_instruction"})
SYSTEM_ROLES = frozenset({"system", "developer"})


class JsonText(NamedTuple):
    """A string at a text key (see ``TEXT_KEYS``): ``system`` when it instructs the model."""

    path: JsonPath
    system: bool
    text: str


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PARAM_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(r'\\(["\\])')
_MEDIA_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_RFC2231_KEY = re.compile(r"([^*]+)\*(?:(0|[1-9][0-9]{0,2})(\*?))?")
_CTL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_LWSP = re.compile(rb"[ \t]*")
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31})://[^\s/?#]")
_WHITESPACE = re.compile(r"\s")
_B64_WS = str.maketrans("", "", " \t\r\n\f\v")
_URLSAFE = str.maketrans("-_", "+/")
_CHARSETS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "iso-8859-1": "latin-1",
    "us-ascii": "ascii",
    "": "utf-8",
}


# =========================================================================== content coding
class _Sink:
    """Collects decoded output and refuses to grow past ``limit`` bytes."""

    def __init__(self, limit: int, coding: str) -> None:
        self.limit = limit
        self.coding = coding
        self.size = 0
        self.chunks: list[bytes] = []

    def room(self) -> int:
        """How much one step may produce: the rest of the limit plus one byte (to notice
        going over), at most one chunk."""
        return min(self.limit - self.size + 1, _CHUNK)

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise RequestTooLarge(
                f"the {self.coding}-decoded request body is larger than {self.limit} bytes "
                "(a decompression bomb, or a body over the limit)"
            )
        if chunk:
            self.chunks.append(chunk)

    def value(self) -> bytes:
        return b"".join(self.chunks)


def _inflate(d: Any, data: memoryview, start: int, sink: _Sink, coding: str) -> int:
    """Run zlib decompressor ``d`` over ``data[start:]`` until its stream ends; returns the
    offset just after the stream. Input goes in 64 KiB at a time (so the unconsumed tail
    zlib copies stays small), output comes out ``sink.room()`` bytes at a time."""
    pos, buf = start, b""
    try:
        while not d.eof:
            if not buf and pos < len(data):
                buf = bytes(data[pos : pos + _IN_CHUNK])
                pos += len(buf)
            chunk = d.decompress(buf, sink.room())
            sink.add(chunk)
            buf = d.unconsumed_tail
            if not chunk and not buf and pos >= len(data) and not d.eof:
                raise RequestError(f"the {coding} request body is truncated")
    except zlib.error as exc:
        raise RequestError(f"the request body is not valid {coding} data: {exc}") from exc
    return pos - len(buf) - len(d.unused_data)


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    sink = _Sink(max_bytes, "gzip")
    view = memoryview(data)
    offset = 0
    while offset < len(data):  # gzip allows several members, one after the other
        if data[offset : offset + 2] != b"\x1f\x8b":
            if offset:
                raise RequestError("the gzip request body has trailing bytes after its end")
            raise RequestError("the request body says gzip but does not start like gzip data")
        offset = _inflate(zlib.decompressobj(16 + zlib.MAX_WBITS), view, offset, sink, "gzip")
    return sink.value()


def _looks_zlib(data: bytes) -> bool:
    return (
        len(data) >= 2
        and data[0] & 0x0F == 8
        and data[0] >> 4 <= 7
        and (data[0] << 8 | data[1]) % 31 == 0
    )


def _undeflate(data: bytes, max_bytes: int) -> bytes:
    # RFC 9110 says zlib (RFC 1950); some clients send raw deflate (RFC 1951). Both decoders
    # are tried, zlib first when the header checks out.
    attempts = (zlib.MAX_WBITS, -zlib.MAX_WBITS) if _looks_zlib(data) else (-zlib.MAX_WBITS,)
    error: RequestError | None = None
    for wbits in attempts:
        sink = _Sink(max_bytes, "deflate")
        try:
            end = _inflate(zlib.decompressobj(wbits), memoryview(data), 0, sink, "deflate")
        except RequestTooLarge:
            raise
        except RequestError as exc:
            error = exc
            continue
        if end < len(data):
            raise RequestError("the deflate request body has trailing bytes after its end")
        return sink.value()
    assert error is not None
    raise error


def _optional(*names: str) -> ModuleType | None:
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _unbrotli(data: bytes, max_bytes: int) -> bytes:
    brotli: Any = _optional("brotli", "brotlicffi")
    if brotli is None:
        raise UnsupportedEncoding(
            "the request body is brotli-compressed (Content-Encoding: br) and the optional "
            "'brotli' package is not installed",
            hint="pip install 'brotli>=1.2', or send the body uncompressed; nothing was sent",
        )
    d = brotli.Decompressor()
    if not hasattr(d, "can_accept_more_data"):
        raise UnsupportedEncoding(
            "the installed brotli package is older than 1.2 and cannot bound its output, so "
            "a brotli body cannot be decoded safely",
            hint="pip install 'brotli>=1.2'; nothing was sent",
        )
    sink = _Sink(max_bytes, "brotli")
    try:
        sink.add(d.process(data, output_buffer_limit=sink.room()))
        while not d.is_finished():
            if d.can_accept_more_data():
                raise RequestError("the brotli request body is truncated")
            chunk = d.process(b"", output_buffer_limit=sink.room())
            if not chunk and not d.is_finished() and not d.can_accept_more_data():
                raise RequestError("the brotli decoder made no progress on the request body")
            sink.add(chunk)
    except brotli.error as exc:
        raise RequestError(f"the request body is not valid brotli data: {exc}") from exc
    return sink.value()


def _unzstd(data: bytes, max_bytes: int) -> bytes:
    zstd: Any = _optional("zstandard")
    if zstd is None:
        raise UnsupportedEncoding(
            "the request body is zstd-compressed (Content-Encoding: zstd) and the optional "
            "'zstandard' package is not installed",
            hint="pip install zstandard, or send the body uncompressed; nothing was sent",
        )
    sink = _Sink(max_bytes, "zstd")
    try:
        dctx = zstd.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        reader = dctx.stream_reader(io.BytesIO(data), read_across_frames=True)
        while chunk := reader.read(sink.room()):
            sink.add(chunk)
    except zstd.ZstdError as exc:
        raise RequestError(f"the request body is not valid zstd data: {exc}") from exc
    return sink.value()


_DECODERS = {"gzip": _gunzip, "deflate": _undeflate, "br": _unbrotli, "zstd": _unzstd}
_ALIASES = {"x-gzip": "gzip"}


def parse_content_encoding(value: str | None) -> list[str]:
    """The codings a ``Content-Encoding`` header lists, in the order they were applied,
    lower-cased, aliases resolved (``x-gzip`` is ``gzip``), ``identity`` left out.

    Raises :class:`~veilpix.UnsupportedEncoding` for a coding veilpix does not know
    (``compress``, ...) and :class:`~veilpix.RequestTooLarge` for more than four layers.
    """
    if value is None:
        return []
    codings = []
    for item in value.split(","):
        coding = item.strip().lower()
        coding = _ALIASES.get(coding, coding)
        if not coding or coding == "identity":
            continue
        if coding not in _DECODERS:
            raise UnsupportedEncoding(
                f"the request body uses Content-Encoding {coding!r}, which veilpix cannot decode",
                hint="send the body uncompressed, or as gzip, deflate, br or zstd; nothing was sent",
            )
        codings.append(coding)
    if len(codings) > MAX_CODINGS:
        raise RequestTooLarge(
            f"the request body is compressed {len(codings)} times over (Content-Encoding: "
            f"{value}); veilpix decodes at most {MAX_CODINGS} layers"
        )
    return codings


def decode_body(
    body: bytes, content_encoding: str | None, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes:
    """The request body with its ``Content-Encoding`` undone.

    Handles ``identity``, ``gzip``/``x-gzip`` (several members too), ``deflate`` (zlib or
    raw), ``br`` (needs the optional ``brotli>=1.2`` package) and ``zstd`` (needs the
    optional ``zstandard`` package). Stacked codings (``"gzip, br"``) are undone in reverse
    order. Every layer is decoded in steps and stops as soon as it would produce more than
    ``max_bytes``: a bomb costs at most ``max_bytes`` of memory and the time to produce it.

    Raises :class:`~veilpix.RequestTooLarge` (over ``max_bytes``),
    :class:`~veilpix.UnsupportedEncoding` (unknown coding, library missing) or
    :class:`~veilpix.RequestError` (corrupt, truncated, trailing bytes).
    """
    if len(body) > max_bytes:
        raise RequestTooLarge(f"the request body is larger than {max_bytes} bytes")
    for coding in reversed(parse_content_encoding(content_encoding)):
        if not body:  # nothing to decode, and nothing can hide in it
            break
        body = _DECODERS[coding](body, max_bytes)
    return body


def encode_body(body: bytes, content_encoding: str | None, *, level: int = 6) -> bytes:
    """``body`` compressed with the codings ``content_encoding`` lists, in order (the inverse
    of :func:`decode_body`); ``level`` is zlib's, for gzip and deflate.

    Recommended instead: send the rebuilt body uncompressed, without a ``Content-Encoding``
    header (and with a fresh ``Content-Length``). Request compression is rare, every vendor
    API accepts identity bodies, and re-encoding only reproduces the coding, not the original
    compressed bytes. Use this when an endpoint requires the coding.
    """
    for coding in parse_content_encoding(content_encoding):
        if coding == "gzip":
            c = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            body = c.compress(body) + c.flush()
        elif coding == "deflate":
            body = zlib.compress(body, level)
        elif coding == "br":
            brotli: Any = _optional("brotli", "brotlicffi")
            if brotli is None:
                raise UnsupportedEncoding(
                    "cannot re-encode as brotli: the optional 'brotli' package is not installed",
                    hint="pip install 'brotli>=1.2', or send the body uncompressed",
                )
            body = brotli.compress(body)
        else:
            zstd: Any = _optional("zstandard")
            if zstd is None:
                raise UnsupportedEncoding(
                    "cannot re-encode as zstd: the optional 'zstandard' package is not installed",
                    hint="pip install zstandard, or send the body uncompressed",
                )
            body = zstd.ZstdCompressor().compress(body)
    return body


# =========================================================================== header parameters
def _unquote(text: str, pos: int, what: str, error: type[RequestError]) -> tuple[str, int]:
    match = _QUOTED.match(text, pos)
    if match is None:
        raise error(f"{what} has an unterminated quoted string")
    # "\x" stays "\x" unless x is a quote or a backslash: browsers do not escape the
    # backslashes of Windows paths, and HTTP libraries escape exactly these two.
    return _QUOTED_PAIR.sub(r"\1", match.group(1)), match.end()


def _split_params(value: str, what: str, error: type[RequestError]) -> tuple[str, dict[str, str]]:
    """``type; a=b; c="d"`` as (lower-cased ``type``, {lower-cased name: value}). Duplicate
    parameters are refused: two readers could pick different ones."""
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    pos, n = 0, len(rest)
    while pos < n:
        while pos < n and rest[pos] in " \t;":
            pos += 1
        if pos >= n:
            break
        match = _PARAM_NAME.match(rest, pos)
        if match is None:
            # (where, not what: the text may be a file name, which is personal data)
            raise error(f"{what} has a malformed parameter at character {pos + 1}")
        name, pos = match.group().lower(), match.end()
        while pos < n and rest[pos] in " \t":
            pos += 1
        if pos >= n or rest[pos] != "=":
            raise error(f"{what} has a parameter {name!r} without a value")
        pos += 1
        while pos < n and rest[pos] in " \t":
            pos += 1
        if pos < n and rest[pos] == '"':
            param, pos = _unquote(rest, pos, what, error)
            while pos < n and rest[pos] in " \t":
                pos += 1
            if pos < n and rest[pos] != ";":
                raise error(f"{what} has text after the quoted value of {name!r}")
        else:
            end = rest.find(";", pos)
            end = n if end < 0 else end
            param, pos = rest[pos:end].strip(" \t"), end
            if '"' in param:
                raise error(f"{what} has a stray quote in the value of {name!r}")
        if name in params:
            raise error(f"{what} has two {name!r} parameters; refusing to guess which one counts")
        params[name] = param
    return head.strip(" \t").lower(), params


def _rfc2231(params: dict[str, str], what: str, error: type[RequestError]) -> dict[str, str]:
    """Decode RFC 2231 / RFC 5987 parameters (``filename*=UTF-8''%E2%82%AC.png``, also split
    into ``filename*0*=...; filename*1*=...``). The extended value replaces the plain one of
    the same name (RFC 6266 section 4.3)."""
    if not any("*" in key for key in params):
        return params
    out = {k: v for k, v in params.items() if "*" not in k}
    pieces: dict[str, dict[int, tuple[str, bool]]] = {}
    for key, value in params.items():
        if "*" not in key:
            continue
        match = _RFC2231_KEY.fullmatch(key)
        if match is None:
            raise error(f"{what} has a malformed parameter name {key!r}")
        base, index, star = match.groups()
        group = pieces.setdefault(base, {})
        slot = -1 if index is None else int(index)
        if slot in group or (slot == -1 and group) or (slot != -1 and -1 in group):
            raise error(f"{what} has conflicting {base}* parameters")
        group[slot] = (value, index is None or bool(star))
    for base, group in pieces.items():
        order = sorted(group)
        if order != [-1] and order != list(range(len(order))):
            raise error(f"{what} has {base}*N continuations that do not count up from 0")
        charset = "utf-8"
        raw = bytearray()
        for slot in order:
            value, extended = group[slot]
            if extended and slot in (-1, 0):
                parts = value.split("'", 2)
                if len(parts) != 3:
                    raise error(f"{what}: {base}* lacks the charset'language' prefix")
                charset = _CHARSETS.get(parts[0].strip().lower(), "")
                if not charset:
                    raise error(
                        f"{what}: {base}* uses charset {parts[0]!r}; only UTF-8 and ISO-8859-1 are accepted"
                    )
                value = parts[2]
            raw += (
                urllib.parse.unquote_to_bytes(value)
                if extended
                else value.encode("utf-8", "surrogateescape")
            )
        try:
            out[base] = bytes(raw).decode(charset)
        except UnicodeDecodeError as exc:
            raise error(f"{what}: {base}* is not valid {charset}") from exc
    return out


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """A ``Content-Type`` value as (lower-cased ``type/subtype``, {lower-cased parameter
    name: value}); quoted values are unquoted. Raises :class:`~veilpix.RequestError` for a
    malformed or duplicated parameter."""
    return _split_params(value, "Content-Type", RequestError)


# =========================================================================== multipart
@dataclass(frozen=True)
class Part:
    """One part of a multipart/form-data body.

    ``name``, ``filename`` and ``content_type`` come from (and are written back as) the
    part's ``Content-Disposition`` and ``Content-Type`` headers; ``headers`` holds every
    *other* header of the part, in order and with the case it had. ``Content-Length`` is
    checked against the data and then dropped (:func:`build_multipart` frames by boundary).
    """

    name: str
    filename: str | None = None
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    data: bytes = field(default=b"", repr=False)

    @property
    def media_type(self) -> str | None:
        """``content_type`` without parameters, lower-cased (``image/png``), or None."""
        if self.content_type is None:
            return None
        return self.content_type.partition(";")[0].strip().lower()

    @property
    def is_file(self) -> bool:
        """True for a file field (the part has a ``filename``, even an empty one)."""
        return self.filename is not None


@dataclass(frozen=True)
class Multipart:
    """A parsed multipart/form-data body: its boundary and its parts, in order. The
    preamble and epilogue (text before the first and after the last boundary, which no
    reader uses) are dropped."""

    boundary: str
    parts: tuple[Part, ...]
    line_ending: Literal["\r\n", "\n"] = "\r\n"

    def named(self, name: str) -> tuple[Part, ...]:
        """Every part called ``name`` (``image[]`` can occur many times)."""
        return tuple(p for p in self.parts if p.name == name)


def multipart_boundary(content_type: str) -> str:
    """The boundary of a ``multipart/form-data`` Content-Type, checked (1 to 70 visible
    ASCII characters or inner spaces, RFC 2046). Raises :class:`~veilpix.MalformedMultipart`."""
    media_type, params = _split_params(content_type, "Content-Type", MalformedMultipart)
    if media_type != "multipart/form-data":
        if media_type.startswith("multipart/"):
            raise MalformedMultipart(
                f"the request is {media_type}, not multipart/form-data; veilpix rebuilds "
                "only form uploads (RFC 7578)"
            )
        raise MalformedMultipart(f"the Content-Type is {media_type!r}, not multipart/form-data")
    boundary = params.get("boundary")
    if boundary is None:
        raise MalformedMultipart("the multipart/form-data Content-Type has no boundary")
    _check_boundary(boundary)
    return boundary


def _check_boundary(boundary: str) -> None:
    if not boundary:
        raise MalformedMultipart("the multipart boundary is empty")
    if len(boundary) > MAX_BOUNDARY_LEN:
        raise MalformedMultipart(
            f"the multipart boundary is {len(boundary)} characters long; RFC 2046 allows "
            f"at most {MAX_BOUNDARY_LEN}"
        )
    if not boundary.isascii() or not boundary.isprintable() or boundary.endswith(" "):
        raise MalformedMultipart(
            f"the multipart boundary {boundary!r} has characters RFC 2046 does not allow "
            "(control characters, non-ASCII, or a trailing space)"
        )


def _delimiter_tail(body: bytes, pos: int, after: str) -> tuple[bool, int, bytes]:
    """Read what follows ``--boundary`` at ``pos``: (closing?, position after the line end,
    the line end used: CRLF, LF, or empty at the end of the body)."""
    close = body.startswith(b"--", pos)
    if close:
        pos += 2
    padding = _LWSP.match(body, pos)
    pos = pos if padding is None else padding.end()
    for eol in (b"\r\n", b"\n"):
        if body.startswith(eol, pos):
            return close, pos + len(eol), eol
    if close and pos == len(body):
        return close, pos, b""
    junk = body[pos : pos + 20]
    raise MalformedMultipart(
        f"the boundary occurs {after} followed by {junk!r} instead of a line end: the "
        "boundary string appears inside the data, so readers could split the body differently"
    )


def _part_headers(block: bytes, eol: bytes, index: int) -> list[tuple[str, str]]:
    lines = block.split(eol) if block else []
    if len(lines) > MAX_PART_HEADERS:
        raise RequestTooLarge(
            f"multipart part {index} has {len(lines)} header lines; at most "
            f"{MAX_PART_HEADERS} are accepted"
        )
    headers = []
    for line in lines:
        if _HEADER_CTL.search(line) is not None:
            raise MalformedMultipart(
                f"multipart part {index} has a control character (a stray CR or LF, NUL, ...) "
                "in its headers: mixed line endings or header injection"
            )
        if line[:1] in (b" ", b"\t"):
            raise MalformedMultipart(
                f"multipart part {index} has a folded header line (obsolete line folding); "
                "readers disagree on it"
            )
        raw_name, colon, raw_value = line.partition(b":")
        name = raw_name.decode("latin-1")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise MalformedMultipart(
                f"multipart part {index} has a malformed header line {line[:60]!r}"
            )
        value = raw_value.strip(b" \t").decode("utf-8", "surrogateescape")
        headers.append((name, value))
    return headers


def _make_part(headers: list[tuple[str, str]], data: bytes, index: int) -> Part:
    disposition: str | None = None
    content_type: str | None = None
    extra: list[tuple[str, str]] = []
    where = f"multipart part {index}"
    for name, value in headers:
        key = name.lower()
        if key == "content-disposition":
            if disposition is not None:
                raise MalformedMultipart(
                    f"{where} has two Content-Disposition headers; refusing to guess which counts"
                )
            disposition = value
        elif key == "content-type":
            if content_type is not None:
                raise MalformedMultipart(
                    f"{where} has two Content-Type headers; refusing to guess which counts"
                )
            content_type = value
        elif key == "content-length":
            if not (value.isascii() and value.isdigit() and len(value) <= 20) or int(value) != len(
                data
            ):
                raise MalformedMultipart(
                    f"{where} declares Content-Length {value!r} but carries {len(data)} bytes"
                )
        else:
            _check_part_header(key, value, where)
            extra.append((name, value))
    if disposition is None:
        raise MalformedMultipart(
            f"{where} has no Content-Disposition header (RFC 7578 requires one)"
        )
    what = f"the Content-Disposition of {where}"
    kind, params = _split_params(disposition, what, MalformedMultipart)
    params = _rfc2231(params, what, MalformedMultipart)
    if kind != "form-data":
        raise MalformedMultipart(f"{what} is {kind!r}, not form-data")
    if "name" not in params:
        raise MalformedMultipart(f"{what} has no name parameter (RFC 7578 requires one)")
    if content_type is not None:
        _check_part_type(content_type, where)
    return Part(
        name=params["name"],
        filename=params.get("filename"),
        content_type=content_type,
        headers=tuple(extra),
        data=data,
    )


def _check_part_type(content_type: str, where: str) -> None:
    media_type, _ = _split_params(content_type, f"the Content-Type of {where}", MalformedMultipart)
    if media_type.startswith("multipart/"):
        raise MalformedMultipart(
            f"{where} is itself {media_type} (nested multipart); RFC 7578 deprecates it and "
            "veilpix does not look inside",
            hint="send each file as its own part with the same field name; nothing was sent",
        )


def _check_part_header(key: str, value: str, where: str) -> None:
    if key == "content-transfer-encoding" and value.lower() not in ("7bit", "8bit", "binary"):
        raise MalformedMultipart(
            f"{where} uses Content-Transfer-Encoding {value!r}; RFC 7578 deprecates it and it "
            "would hide the part's bytes from veilpix",
            hint="send the file's bytes as they are (binary); nothing was sent",
        )
    if key == "content-encoding" and value.lower() != "identity":
        raise MalformedMultipart(
            f"{where} has its own Content-Encoding {value!r}, which would hide the part's "
            "bytes from veilpix"
        )


def split_multipart(
    body: bytes, boundary: str, *, max_parts: int = DEFAULT_MAX_PARTS
) -> tuple[list[tuple[list[tuple[str, str]], bytes]], bytes]:
    """The parts of a multipart body of any subtype (RFC 2046) as (headers, data) pairs, in
    order, and the line end it uses (CRLF or LF). Header lines are checked (no folding,
    control characters or malformed names) but not interpreted. Refuses what
    :func:`parse_multipart` refuses about framing: a boundary inside a part, a missing
    closing boundary, mixed line ends, a boundary again after the end."""
    _check_boundary(boundary)
    delim = b"--" + boundary.encode("ascii")
    first = body.find(delim)
    if first < 0:
        raise MalformedMultipart(
            "the body never contains the boundary its Content-Type announces (wrong "
            "boundary, or not a multipart body)"
        )
    if first > 0 and body[first - 1] != 0x0A:
        raise MalformedMultipart("the boundary first occurs in the middle of a line")
    close, pos, eol = _delimiter_tail(body, first + len(delim), "on the first boundary line")
    parts: list[tuple[list[tuple[str, str]], bytes]] = []
    while not close:
        index = len(parts) + 1
        start = pos
        nxt = body.find(delim, pos)
        if nxt < 0:
            raise MalformedMultipart(
                f"the multipart body ends inside part {index}, without its closing boundary "
                f"(--{boundary}--): truncated?"
            )
        if body[nxt - len(eol) : nxt] != eol:
            if body[nxt - 1] == 0x0A:
                raise MalformedMultipart(
                    "the multipart body mixes CRLF and bare LF line ends around its boundaries"
                )
            raise MalformedMultipart(
                f"the boundary string occurs inside part {index}, not on a line of its own; "
                "readers could split the body differently"
            )
        end = nxt - len(eol)
        if end < start:
            raise MalformedMultipart(f"multipart part {index} is empty: it has no header block")
        if len(parts) >= max_parts:
            raise RequestTooLarge(f"the multipart body has more than {max_parts} parts")
        if body.startswith(eol, start):
            block, data_start = b"", start + len(eol)
        else:
            sep = eol + eol
            stop = body.find(sep, start, min(end, start + MAX_PART_HEADER_BYTES + len(sep)))
            if stop < 0:
                if end - start > MAX_PART_HEADER_BYTES:
                    raise RequestTooLarge(
                        f"multipart part {index} has no end of headers (a blank line) within "
                        f"{MAX_PART_HEADER_BYTES} bytes"
                    )
                blank = "LF LF" if eol == b"\n" else "CRLF CRLF"
                raise MalformedMultipart(
                    f"multipart part {index}'s headers do not end with a blank line ({blank})"
                )
            block, data_start = body[start:stop], stop + len(sep)
        headers = _part_headers(block, eol, index)
        parts.append((headers, body[data_start:end]))
        close, pos, line_end = _delimiter_tail(body, nxt + len(delim), f"after part {index}")
        if line_end and line_end != eol:
            raise MalformedMultipart(
                "the multipart body mixes CRLF and bare LF line ends around its boundaries"
            )
    if body.find(delim, pos) >= 0:
        raise MalformedMultipart(
            "the boundary occurs again after the closing boundary; readers could disagree "
            "on where the body ends"
        )
    return parts, eol


def parse_multipart(
    body: bytes,
    content_type: str,
    *,
    max_parts: int = DEFAULT_MAX_PARTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Multipart:
    """Parse a multipart/form-data body (RFC 7578, RFC 2046).

    Accepted: a preamble and an epilogue (dropped), quoted and unquoted boundaries, transport
    padding after a boundary, parts without Content-Type, ``filename*=`` (RFC 2231/5987),
    bodies whose last line end is missing, and bodies that use bare LF line ends throughout
    (not RFC-conformant, but unambiguous; the line end of the first boundary line decides,
    and a body that mixes CRLF and LF is refused).

    Refused (:class:`~veilpix.MalformedMultipart`): a missing, empty or overlong boundary; a
    body without its closing boundary; the boundary string anywhere but on a boundary line
    (inside a part, the preamble or the epilogue, or mid-line); header blocks without a blank
    line, folded or malformed header lines, stray CR/LF/NUL; a missing or duplicated
    Content-Disposition, a duplicated Content-Type or parameter; a disposition other than
    ``form-data`` or without ``name``; nested multipart (``multipart/mixed``); a
    Content-Transfer-Encoding other than 7bit/8bit/binary or a part-level Content-Encoding
    (both would hide the bytes); a Content-Length that does not match. Over the limits:
    :class:`~veilpix.RequestTooLarge` (``max_bytes``, ``max_parts``, 16 KiB or 32 lines of
    headers per part).
    """
    if len(body) > max_bytes:
        raise RequestTooLarge(f"the multipart body is larger than {max_bytes} bytes")
    boundary = multipart_boundary(content_type)
    raw, eol = split_multipart(body, boundary, max_parts=max_parts)
    parts = [_make_part(headers, data, i) for i, (headers, data) in enumerate(raw, 1)]
    return Multipart(boundary, tuple(parts), "\r\n" if eol != b"\n" else "\n")


def _quote_param(value: str) -> str:
    """A quoted-string that no reader can break out of: backslash and quote are escaped,
    control characters (CR, LF, ...) percent-encoded as browsers do (WHATWG)."""
    value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _CTL.sub(lambda m: f"%{ord(m.group()):02X}", value) + '"'


def _header_value_ok(value: str) -> bool:
    return _CTL.search(value.replace("\t", " ")) is None and value == value.strip(" \t")


def _render_part(part: Part, index: int) -> bytes:
    where = f"part {index} ({part.name!r})"
    lines = ["Content-Disposition: form-data; name=" + _quote_param(part.name)]
    if part.filename is not None:
        lines[0] += "; filename=" + _quote_param(part.filename)
    if part.content_type is not None:
        if not _header_value_ok(part.content_type) or not part.content_type:
            raise MalformedMultipart(f"{where} has an invalid Content-Type {part.content_type!r}")
        _check_part_type(part.content_type, where)
        lines.append("Content-Type: " + part.content_type)
    for name, value in part.headers:
        key = name.lower()
        if key in ("content-disposition", "content-type", "content-length"):
            raise MalformedMultipart(
                f"{where} lists {name} among its extra headers; set Part.name, .filename or "
                ".content_type instead (Content-Length is never written)"
            )
        if _TOKEN.fullmatch(name) is None or not _header_value_ok(value):
            raise MalformedMultipart(f"{where} has an invalid header {name!r}: {value!r}")
        _check_part_header(key, value, where)
        lines.append(f"{name}: {value}")
    try:
        return "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise MalformedMultipart(f"{where} has a name or header that is not encodable") from exc


def _new_boundary() -> str:
    return "veilpix-" + secrets.token_hex(16)


def build_multipart(parts: Iterable[Part], boundary: str | None = None) -> tuple[bytes, str]:
    """Encode ``parts`` as a multipart/form-data body; returns (body, Content-Type header).

    The boundary is fresh and random unless given, and is checked not to occur anywhere in
    any part (headers or data); a given boundary that occurs raises
    :class:`~veilpix.MalformedMultipart`. Names and filenames are written as quoted strings
    with ``\\`` and ``"`` backslash-escaped and control characters (CR, LF, ...)
    percent-encoded, so no name can inject a header or a part; those control characters are
    the only ones that do not survive a round trip. Line ends are CRLF. Parsing the result
    gives back ``parts``.
    """
    rendered = [(_render_part(part, i), part.data) for i, part in enumerate(parts, 1)]

    def occurs(candidate: str) -> bool:
        needle = candidate.encode("ascii")
        return any(needle in head or needle in data for head, data in rendered)

    if boundary is None:
        for _ in range(8):
            candidate = _new_boundary()
            if not occurs(candidate):
                boundary = candidate
                break
        else:  # 8 random 128-bit boundaries all occurring in the data: not by chance
            raise MalformedMultipart("could not find a boundary that does not occur in the data")
    else:
        _check_boundary(boundary)
        if occurs(boundary):
            raise MalformedMultipart(f"the boundary {boundary!r} occurs inside a part")
    delim = b"--" + boundary.encode("ascii")
    out: list[bytes] = []
    for head, data in rendered:
        out += (delim, b"\r\n", head, b"\r\n", data, b"\r\n")
    out += (delim, b"--\r\n")
    shown = boundary if _TOKEN.fullmatch(boundary) else _quote_param(boundary)
    return b"".join(out), f"multipart/form-data; boundary={shown}"


# =========================================================================== base64, data URIs
def _b64decode(text: str) -> bytes:
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
        data = _b64decode(payload)
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
            prefix = _b64decode(head[: len(head) // 4 * 4])
        except ValueError:
            return None
        if not looks_like_image(prefix):
            return None
    try:
        data = _b64decode(s)
    except ValueError:
        return None
    return data if looks_like_image(data) else None


# =========================================================================== JSON
def load_json(
    body: bytes | str, *, max_depth: int = DEFAULT_MAX_DEPTH, max_bytes: int = DEFAULT_MAX_BYTES
) -> Any:
    """Parse a JSON request body, refusing what two readers could see differently.

    Raises :class:`~veilpix.RequestError` for invalid JSON and for an object with a
    duplicate key (veilpix would check one value, the vendor might use the other), and
    :class:`~veilpix.RequestTooLarge` for nesting deeper than ``max_depth`` or a body over
    ``max_bytes``.
    """
    if len(body) > max_bytes:
        raise RequestTooLarge(f"the JSON body is larger than {max_bytes} bytes")

    try:
        # json.loads(body, object_pairs_hook=...) but with one decoder for all calls (loads
        # would build a decoder and its scanner every time)
        if isinstance(body, str):
            if body.startswith("\ufeff"):
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", body, 0)
            text = body
        else:
            text = body.decode(json.detect_encoding(body), "surrogatepass")
        doc = _JSON_DECODER.decode(text)
    except RecursionError as exc:
        raise RequestTooLarge(f"the JSON body is nested more than {max_depth} levels deep") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise RequestError(f"the request body is not valid JSON: {exc}") from exc
    opened = (
        body.count("[") + body.count("{")
        if isinstance(body, str)
        else (body.count(b"[") + body.count(b"{"))
    )
    if opened >= max_depth:  # fewer brackets than that cannot nest that deep
        _strings_to_check(doc, max_depth=max_depth, min_len=None)
    return doc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise RequestError(
            f"the JSON body has the key {key!r} twice in one object; refusing to "
            "guess which one the vendor reads"
        )
    return out


_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def dump_json(doc: Any) -> bytes:
    """``doc`` as compact UTF-8 JSON (the form to send after :func:`replace_at`).

    Raises :class:`~veilpix.RequestError` when a string holds a lone surrogate
    (``"\\ud800"``), which UTF-8 cannot carry: the body is malformed text."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(
            "the JSON body holds a lone UTF-16 surrogate (such as \\ud800), which is not "
            "valid Unicode text; refusing to rebuild it"
        ) from exc


def _too_deep(max_depth: int) -> RequestTooLarge:
    return RequestTooLarge(f"the JSON body is nested more than {max_depth} levels deep")


def iter_strings(doc: Any, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Iterator[tuple[JsonPath, str]]:
    """Every string value in ``doc`` (not keys) with its path, in document order.

    Iterative (no recursion); raises :class:`~veilpix.RequestTooLarge` when containers nest
    deeper than ``max_depth``.
    """
    stack: list[tuple[JsonPath, Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            yield path, node
        elif isinstance(node, dict | list):
            if len(path) >= max_depth:
                raise _too_deep(max_depth)
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend(reversed([((*path, k), v) for k, v in items]))


def _strings_to_check(
    doc: Any, *, max_depth: int, min_len: int | None, texts: list[JsonText] | None = None
) -> list[tuple[JsonPath, str]]:
    """The strings in ``doc`` that may be an image or a URL (at least ``min_len`` characters
    long, or holding a colon as ``data:`` and ``https://`` do), with their paths, in document
    order; none when ``min_len`` is None. Checks nesting like :func:`iter_strings`, and
    builds no path for anything else (most of a request's strings are short prose). With
    ``texts``, the strings at text keys are added to it in the same walk."""

    shortest = sys.maxsize if min_len is None else min_len
    strings = min_len is not None
    if not isinstance(doc, dict | list):
        keep = strings and isinstance(doc, str) and (len(doc) >= shortest or ":" in doc)
        return [((), doc)] if keep else []
    if texts is not None:
        return _strings_and_texts(doc, max_depth, shortest if strings else None, texts)
    found: list[tuple[JsonPath, str]] = []
    stack: list[tuple[JsonPath, Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            found.append((path, node))
            continue
        if len(path) >= max_depth:
            raise _too_deep(max_depth)
        items = node.items() if isinstance(node, dict) else enumerate(node)
        kids = [
            ((*path, k), v)
            for k, v in items
            if (
                (strings and (len(v) >= shortest or ":" in v))
                if isinstance(v, str)
                else isinstance(v, dict | list)
            )
        ]
        kids.reverse()
        stack.extend(kids)
    return found


# Flags of a node on the walk of _strings_and_texts.
_SYSTEM, _TEXT_ITEMS, _IS_TEXT, _CANDIDATE = 1, 2, 4, 8


def _strings_and_texts(
    doc: Any, max_depth: int, shortest: int | None, texts: list[JsonText]
) -> list[tuple[JsonPath, str]]:
    """:func:`_strings_to_check` that also lists the strings at text keys in ``texts``, in
    document order. ``shortest`` None: no image or URL candidates."""
    found: list[tuple[JsonPath, str]] = []
    stack: list[tuple[JsonPath, Any, int]] = [((), doc, 0)]
    while stack:
        path, node, flags = stack.pop()
        if isinstance(node, str):
            if flags & _CANDIDATE:
                found.append((path, node))
            if flags & _IS_TEXT:
                texts.append(JsonText(path, bool(flags & _SYSTEM), node))
            continue
        if len(path) >= max_depth:
            raise _too_deep(max_depth)
        inherited = flags & _SYSTEM
        kids: list[tuple[JsonPath, Any, int]] = []
        if isinstance(node, dict):
            role = node.get("role")
            if isinstance(role, str) and role in SYSTEM_ROLES:
                inherited = _SYSTEM
            for k, v in node.items():
                system = inherited | (_SYSTEM if k in SYSTEM_KEYS else 0)
                textual = k in TEXT_KEYS or k in SYSTEM_KEYS
                if isinstance(v, str):
                    f = system | (_IS_TEXT if textual else 0)
                    if shortest is not None and (len(v) >= shortest or ":" in v):
                        f |= _CANDIDATE
                    if f & (_IS_TEXT | _CANDIDATE):
                        kids.append(((*path, k), v, f))
                elif isinstance(v, dict | list):
                    items = _TEXT_ITEMS if textual and isinstance(v, list) else 0
                    kids.append(((*path, k), v, system | items))
        else:
            for i, v in enumerate(node):
                if isinstance(v, str):
                    f = inherited | (_IS_TEXT if flags & _TEXT_ITEMS else 0)
                    if shortest is not None and (len(v) >= shortest or ":" in v):
                        f |= _CANDIDATE
                    if f & (_IS_TEXT | _CANDIDATE):
                        kids.append(((*path, i), v, f))
                elif isinstance(v, dict | list):
                    kids.append(((*path, i), v, inherited))
        kids.reverse()
        stack.extend(kids)
    return found


def _steppable(node: Any, step: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(step, str)
    return isinstance(node, list) and isinstance(step, int) and not isinstance(step, bool)


def get_at(doc: Any, path: JsonPath) -> Any:
    """The value at ``path``. Raises KeyError, IndexError or TypeError when it is absent."""
    node = doc
    for step in path:
        if _steppable(node, step):
            node = node[step]
        else:
            raise TypeError(f"cannot step into {type(node).__name__} with {step!r}")
    return node


def replace_at(doc: Any, path: JsonPath, new_value: Any) -> Any:
    """A copy of ``doc`` with the value at ``path`` replaced by ``new_value``.

    ``doc`` itself is not modified: the containers along ``path`` are copied (shallow), the
    rest is shared. Raises KeyError, IndexError or TypeError when ``path`` does not exist.
    """
    if not path:
        return new_value
    step, rest = path[0], path[1:]
    if isinstance(doc, dict) and isinstance(step, str):
        out_dict = dict(doc)
        out_dict[step] = replace_at(doc[step], rest, new_value)
        return out_dict
    if isinstance(doc, list) and isinstance(step, int) and not isinstance(step, bool):
        out_list = list(doc)
        out_list[step] = replace_at(doc[step], rest, new_value)
        return out_list
    raise TypeError(f"cannot step into {type(doc).__name__} with {step!r}")


@dataclass(frozen=True)
class _Step:
    kind: Literal["key", "index", "child", "items", "deep", "filter"]
    key: str = ""
    index: int = 0
    value: str | None = None  # filter: the value to match, None to test presence
    quoted: bool = False  # filter: the value was quoted, so it matches strings only


def _bracket_end(expr: str, pos: int) -> int:
    """The index of the ``]`` closing the ``[`` at ``pos`` (quotes may contain ``]``)."""
    i, quoted = pos + 1, False
    while i < len(expr):
        c = expr[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "]" and not quoted:
            return i
        i += 1
    raise ValueError(f"JSON path {expr!r}: '[' at {pos} is not closed")


def _path_string(expr: str, text: str) -> str:
    match = _QUOTED.fullmatch(text)
    if match is None:
        raise ValueError(f"JSON path {expr!r}: malformed quoted string {text!r}")
    return _QUOTED_PAIR.sub(r"\1", match.group(1))


@functools.lru_cache(maxsize=512)  # the adapters' few paths, compiled once
def _compile_path(expr: str) -> tuple[_Step, ...]:
    """Parse the adapters' path language; raises ValueError for a malformed expression."""
    steps: list[_Step] = []
    pos, n = 0, len(expr)
    need_segment = False  # after a dot
    while pos < n:
        c = expr[pos]
        if c == ".":
            if not steps or need_segment:
                raise ValueError(f"JSON path {expr!r}: empty segment at {pos}")
            need_segment, pos = True, pos + 1
            continue
        if c == "[":
            end = _bracket_end(expr, pos)
            inner = expr[pos + 1 : end]
            if inner == "*":
                steps.append(_Step("items"))
            elif inner.isascii() and inner.isdigit():
                steps.append(_Step("index", index=int(inner)))
            elif inner.startswith('"'):
                steps.append(_Step("key", key=_path_string(expr, inner)))
            elif inner.startswith("?"):
                name, eq, value = inner[1:].partition("=")
                name, value = name.strip(), value.strip()
                if _TOKEN.fullmatch(name) is None:
                    raise ValueError(f"JSON path {expr!r}: filter without a valid key at {pos}")
                quoted = value.startswith('"')
                if quoted:
                    value = _path_string(expr, value)
                steps.append(_Step("filter", key=name, value=value if eq else None, quoted=quoted))
            else:
                raise ValueError(f"JSON path {expr!r}: cannot read [{inner}]")
            need_segment, pos = False, end + 1
            continue
        if steps and not need_segment:
            raise ValueError(f"JSON path {expr!r}: missing '.' before position {pos}")
        end = pos
        while end < n and expr[end] not in ".[":
            end += 1
        name = expr[pos:end]
        if name == "**":
            steps.append(_Step("deep"))
        elif name == "*":
            steps.append(_Step("child"))
        else:
            steps.append(_Step("key", key=name))
        need_segment, pos = False, end
    if need_segment:
        raise ValueError(f"JSON path {expr!r} ends with a dot")
    return tuple(steps)


def _filter_matches(item: Any, step: _Step) -> bool:
    if not isinstance(item, dict) or step.key not in item:
        return False
    if step.value is None:
        return True
    found = item[step.key]
    if isinstance(found, str):
        return found == step.value
    if step.quoted or isinstance(found, dict | list):
        return False
    return json.dumps(found) == step.value


class _Found:
    """Selected nodes in order, each path once."""

    def __init__(self) -> None:
        self.items: list[tuple[JsonPath, Any]] = []
        self.seen: set[JsonPath] = set()

    def add(self, path: JsonPath, node: Any) -> bool:
        if path in self.seen:
            return False
        self.seen.add(path)
        self.items.append((path, node))
        return True


def select(doc: Any, path_expr: str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> list[JsonPath]:
    """The paths in ``doc`` that ``path_expr`` (the adapters' path language) selects.

    ``a.b`` walks object keys; ``*`` is every member or item; ``[*]`` every array item;
    ``[2]`` one array item; ``[?type=image_url]`` the array items (or the object itself)
    whose ``type`` is that value (``[?type="a.b"]`` quoted; unquoted values also match
    numbers, ``true``, ``false`` and ``null``; ``[?inlineData]`` tests presence);
    ``["a.b"]`` a key with dots in it; ``**`` any depth, including none (``**.inlineData``
    finds ``inlineData`` keys anywhere). The empty expression selects the root. Paths come
    in document order, each once. Raises ValueError for a malformed expression and
    :class:`~veilpix.RequestTooLarge` when ``**`` meets nesting deeper than ``max_depth``.
    """
    current: list[tuple[JsonPath, Any]] = [((), doc)]
    for step in _compile_path(path_expr):
        found = _Found()
        emit = found.add
        for path, node in current:
            if step.kind == "key":
                if isinstance(node, dict) and step.key in node:
                    emit((*path, step.key), node[step.key])
            elif step.kind == "index":
                if isinstance(node, list) and step.index < len(node):
                    emit((*path, step.index), node[step.index])
            elif step.kind in ("child", "items"):
                if isinstance(node, list):
                    for i, item in enumerate(node):
                        emit((*path, i), item)
                elif isinstance(node, dict) and step.kind == "child":
                    for key, item in node.items():
                        emit((*path, key), item)
            elif step.kind == "filter":
                if isinstance(node, list):
                    for i, item in enumerate(node):
                        if _filter_matches(item, step):
                            emit((*path, i), item)
                elif _filter_matches(node, step):
                    emit(path, node)
            else:  # deep: the node and everything below it, each subtree walked once
                stack = [(path, node)]
                while stack:
                    sub_path, sub = stack.pop()
                    if not emit(sub_path, sub):
                        continue
                    if isinstance(sub, dict | list):
                        if len(sub_path) >= max_depth:
                            raise _too_deep(max_depth)
                        items = sub.items() if isinstance(sub, dict) else enumerate(sub)
                        stack.extend(reversed([((*sub_path, k), v) for k, v in items]))
        current = found.items
    return [path for path, _ in current]


@dataclass(frozen=True)
class JsonImage:
    """An image found in a JSON string.

    ``media_type`` is what the bytes are (sniffed); for a data URI whose bytes veilpix does
    not recognise, it is the declared type, so ``sanitize()`` refuses it (fail closed).
    ``declared_type`` and ``params`` are the data URI's own, to rebuild it alike.
    """

    path: JsonPath
    kind: Literal["data_uri", "base64"]
    media_type: str
    data: bytes = field(repr=False)
    declared_type: str | None = None
    params: tuple[tuple[str, str], ...] = ()


def _sniffed_type(data: bytes) -> str | None:
    return MEDIA_TYPES[sniff(data)] if looks_like_image(data) else None


def image_in_string(
    path: JsonPath, value: str, *, min_len: int = BASE64_MIN_LEN
) -> JsonImage | None:
    """The image ``value`` carries (a data URI, or bare base64 of an image), or None.

    A data URI counts when its bytes sniff as an image or it declares an ``image/*`` type
    (then an unrecognised image such as SVG is still reported, and refused downstream). A
    ``data:image/...`` string that does not parse raises :class:`~veilpix.RequestError`:
    an image veilpix cannot read must not leave unchecked.
    """
    if value[:5].lower() == "data:":
        try:
            uri = parse_data_uri(value)
        except RequestError:
            if value[5:11].lower() == "image/":
                raise
            return None
        if uri is None:
            if value[5:11].lower() == "image/":
                raise RequestError(f"a data:image URI at {list(path)} is malformed")
            return None
        sniffed = _sniffed_type(uri.data)
        if sniffed is None and not uri.media_type.startswith("image/"):
            return None
        return JsonImage(
            path, "data_uri", sniffed or uri.media_type, uri.data, uri.media_type, uri.params
        )
    data = looks_like_base64_image(value, min_len=min_len)
    if data is None:
        return None
    return JsonImage(path, "base64", MEDIA_TYPES[sniff(data)], data)


def find_images_in_json(
    doc: Any, *, min_len: int = BASE64_MIN_LEN, max_depth: int = DEFAULT_MAX_DEPTH
) -> list[JsonImage]:
    """Every image carried in a JSON string anywhere in ``doc``, in document order (see
    :func:`image_in_string`). URLs are not fetched; see :func:`find_urls_in_json`."""
    return scan_json(doc, min_len=min_len, url_schemes=(), max_depth=max_depth)[0]


def scan_json(
    doc: Any,
    *,
    min_len: int | None = BASE64_MIN_LEN,
    url_schemes: Iterable[str] = ("http", "https", "gs", "s3"),
    max_depth: int = DEFAULT_MAX_DEPTH,
    texts: list[JsonText] | None = None,
) -> tuple[list[JsonImage], list[JsonUrl]]:
    """:func:`find_images_in_json` and :func:`find_urls_in_json` in one walk; with
    ``min_len=None`` it looks for URLs only. ``texts`` (a list) also gets, in the same walk,
    every string at a text key (``TEXT_KEYS``: prompts, message content, Gemini parts)."""
    wanted = {s.lower() for s in url_schemes}
    images: list[JsonImage] = []
    urls: list[JsonUrl] = []
    candidates = _strings_to_check(
        doc,
        max_depth=max_depth,
        min_len=sys.maxsize if min_len is None else min_len,
        texts=texts,
    )
    for path, value in candidates:
        if min_len is not None:
            image = image_in_string(path, value, min_len=min_len)
            if image is not None:
                images.append(image)
        if wanted and "://" in value:
            url = _as_url(path, value, wanted)
            if url is not None:
                urls.append(url)
    return images, urls


class JsonUrl(NamedTuple):
    """A JSON string that is a URL (a vendor may download what it points to)."""

    path: JsonPath
    url: str
    scheme: str  # lower-cased


def find_urls_in_json(
    doc: Any,
    *,
    schemes: Iterable[str] = ("http", "https", "gs", "s3"),
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> list[JsonUrl]:
    """Every JSON string that is, as a whole (surrounding whitespace aside), an absolute URL
    with one of ``schemes`` (``gs://`` and ``s3://`` are how Gemini/Vertex and Bedrock name
    stored files). URLs inside prose are not reported; ``data:`` URIs are images, see
    :func:`find_images_in_json`."""
    return scan_json(doc, min_len=None, url_schemes=schemes, max_depth=max_depth)[1]


def _as_url(path: JsonPath, value: str, wanted: set[str]) -> JsonUrl | None:
    url = value.strip()
    match = _URL_SCHEME.match(url)
    if match is None or match.group(1).lower() not in wanted or _WHITESPACE.search(url):
        return None
    return JsonUrl(path, url, match.group(1).lower())
