"""Content codings: undo (and redo) a request body's ``Content-Encoding``.

:func:`decode_body` undoes ``gzip`` (several members too), ``deflate`` (zlib or raw), ``br``
(the optional ``brotli>=1.2`` package) and ``zstd`` (the optional ``zstandard`` package),
stacked up to four deep. Every layer is decoded in steps into a :class:`_Sink` that refuses
to grow past ``max_bytes``, so a decompression bomb costs at most that much memory.
:func:`encode_body` is the inverse, for endpoints that require the coding.
"""

from __future__ import annotations

import importlib
import io
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal

from veilpix._errors import RequestError, RequestTooLarge, UnsupportedEncoding
from veilpix.codec._limits import DEFAULT_MAX_BYTES

__all__ = ["Coding", "decode_body", "encode_body", "parse_content_encoding"]

Coding = Literal["gzip", "deflate", "br", "zstd"]
"""A content coding veilpix decodes (``x-gzip`` is read as ``gzip``; ``identity`` is none)."""

MAX_CODINGS = 4  # stacked Content-Encoding layers

ZSTD_MAX_WINDOW = 8 << 20  # RFC 9659: the window a zstd content coding may use

_CHUNK = 1 << 20  # decompression output per step
_IN_CHUNK = 64 << 10  # decompression input per step


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


_DECODERS: dict[Coding, Callable[[bytes, int], bytes]] = {
    "gzip": _gunzip,
    "deflate": _undeflate,
    "br": _unbrotli,
    "zstd": _unzstd,
}
_CODINGS: dict[str, Coding] = {  # a header's token (lower-cased): the coding it names
    "gzip": "gzip",
    "x-gzip": "gzip",
    "deflate": "deflate",
    "br": "br",
    "zstd": "zstd",
}


def parse_content_encoding(value: str | None) -> list[Coding]:
    """The codings a ``Content-Encoding`` header lists, in the order they were applied,
    lower-cased, aliases resolved (``x-gzip`` is ``gzip``), ``identity`` left out.

    Raises :class:`~veilpix.UnsupportedEncoding` for a coding veilpix does not know
    (``compress``, ...) and :class:`~veilpix.RequestTooLarge` for more than four layers.
    """
    if value is None:
        return []
    codings: list[Coding] = []
    for item in value.split(","):
        name = item.strip().lower()
        if not name or name == "identity":
            continue
        coding = _CODINGS.get(name)
        if coding is None:
            raise UnsupportedEncoding(
                f"the request body uses Content-Encoding {name!r}, which veilpix cannot decode",
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
