"""Text runs that may carry an image: base64, base32, hex, percent-encoding, escapes.

The finder searches text (a JSON string, a form value, prose) for runs of each encoding with
C-speed passes (``bytes.translate`` through a one-byte-per-code table, then ``find``), and
writes a cleaned image back in the run's own style: :class:`_Base64Style` keeps the alphabet,
padding and line length, :func:`_hex_like` the prefix, case and width. Also here: text whose
characters are bytes in UTF-16/32, and images written out byte by byte (``\\xff\\xd8``,
``ff d8 ff``), which are found but cannot be rebuilt.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from veilpix.codec import decode_base64
from veilpix.finder._base import MIN_HEX, MIN_IMAGE, MIN_RUN
from veilpix.finder._raw import _media
from veilpix.finder._signatures import _B64_STARTS

RunKind = Literal["base64", "percent"]
"""How a run found in text is encoded (hex and base32 are tried on base64 runs)."""

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

# One byte per code: "A" for what may continue a run, "." for what ends it.
_RUN_TABLE_B = bytes(
    (0x41 if chr(i) in _B64_CHARS or chr(i) in "\\\r\n" else 0x2E) if i < 128 else 0x2E
    for i in range(256)
)
_PCT_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!*'()+/%"
_PCT_TABLE_B = bytes(0x41 if i < 128 and chr(i) in _PCT_SAFE else 0x2E for i in range(256))
_RUN = "A" * MIN_RUN
_RUN_B = _RUN.encode()

# Ascii85 between "<~" and "~>" (Adobe, PostScript, PDF tools)
_ASCII85 = re.compile(r"<~([!-uz\s]{5,}?)~>")


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
        return decode_base64(text)
    except ValueError:  # not base64, mixed alphabets, or characters outside ASCII
        return None


_MAX_GLUE = 16  # characters of a word that base64 may be glued to ("photo:+", "img=")


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
    0x68 if c in "0123456789abcdefABCDEF" else 0x78 if c in "xX" else 0x73 if c in " ,:" else 0x2E
    for c in map(chr, range(256))
)
_HEXSEP = ("hhs" * 6, "hxhhs" * 6, "hxhhss" * 6)
_HEXSEP_B = tuple(n.encode() for n in _HEXSEP)


def _byte_values_image(text: str) -> bool:
    """Does ``text`` write out an image (21 bytes or more) as escapes or separated hex?"""
    if "\\x" in text and _ESCAPED_IMAGE.search(text) is not None:
        return True
    mask = _mask(text, _HEXSEP_TABLE_B)
    return any(n in mask for n in _HEXSEP) and _SPACED_IMAGE.search(text) is not None


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


def _media_of_text(text: str) -> str | None:
    """The media type of the image a whole string now carries (a data URI or base64)."""
    text = text.strip()
    if text[:5].lower() == "data:":
        return text[5 : text.find(";")].lower() if ";" in text[:80] else None
    head = _decode_run(text[:64]) if len(text) >= MIN_RUN else None
    return _media(head) if head is not None else None


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


def _percent_runs(text: str) -> list[tuple[int, int, RunKind]]:
    mask = _mask(text, _PCT_TABLE_B)
    runs: list[tuple[int, int, RunKind]] = []
    for m in _PCT.finditer(text):
        if runs and m.start() < runs[-1][1]:
            continue
        start = mask.rfind(".", 0, m.start()) + 1
        end = mask.find(".", m.start())
        end = len(text) if end < 0 else end
        if end - start >= MIN_IMAGE:  # (percent-encoded base64 may have one escape in all)
            runs.append((start, end, "percent"))
    return runs


def _base64_runs(
    text: str, taken: list[tuple[int, int, RunKind]]
) -> Iterator[tuple[int, int, RunKind]]:
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


_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


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
