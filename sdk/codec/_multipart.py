"""Multipart bodies: parse, split and build ``multipart/form-data`` (RFC 7578, RFC 2046).

:func:`parse_multipart` reads a form upload into :class:`Part` values, refusing every
framing two readers could see differently (a boundary inside a part, mixed line ends,
folded or duplicated headers, nested multipart, a part-level transfer or content coding);
:func:`split_multipart` frames a multipart body of any subtype without interpreting its
headers; :func:`build_multipart` writes parts back with a fresh boundary and names no reader
can break out of.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from veilpix._errors import MalformedMultipart, RequestTooLarge
from veilpix.codec._limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PARTS
from veilpix.codec._params import _CTL, _TOKEN, decode_rfc2231, quote_param, split_params

__all__ = [
    "Multipart",
    "Part",
    "build_multipart",
    "check_boundary",
    "multipart_boundary",
    "parse_multipart",
    "split_multipart",
]

MAX_BOUNDARY_LEN = 70  # RFC 2046 section 5.1.1
MAX_PART_HEADER_BYTES = 16 << 10
MAX_PART_HEADERS = 32
_HEADER_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_LWSP = re.compile(rb"[ \t]*")


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
    media_type, params = split_params(content_type, "Content-Type", MalformedMultipart)
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
    check_boundary(boundary)
    return boundary


def check_boundary(boundary: str) -> None:
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
    kind, params = split_params(disposition, what, MalformedMultipart)
    params = decode_rfc2231(params, what, MalformedMultipart)
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
    media_type, _ = split_params(content_type, f"the Content-Type of {where}", MalformedMultipart)
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
    check_boundary(boundary)
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


def _header_value_ok(value: str) -> bool:
    return _CTL.search(value.replace("\t", " ")) is None and value == value.strip(" \t")


def _render_part(part: Part, index: int) -> bytes:
    where = f"part {index} ({part.name!r})"
    lines = ["Content-Disposition: form-data; name=" + quote_param(part.name)]
    if part.filename is not None:
        lines[0] += "; filename=" + quote_param(part.filename)
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
        check_boundary(boundary)
        if occurs(boundary):
            raise MalformedMultipart(f"the boundary {boundary!r} occurs inside a part")
    delim = b"--" + boundary.encode("ascii")
    out: list[bytes] = []
    for head, data in rendered:
        out += (delim, b"\r\n", head, b"\r\n", data, b"\r\n")
    out += (delim, b"--\r\n")
    shown = boundary if _TOKEN.fullmatch(boundary) else quote_param(boundary)
    return b"".join(out), f"multipart/form-data; boundary={shown}"
