"""Header parameters: ``type; a=b; c="d"`` values, quoted strings and RFC 2231 extensions.

Shared by the Content-Type of a request, the Content-Disposition and Content-Type of each
multipart part, and the finder's own multipart reader. Duplicate parameters are refused (two
readers could pick different ones), and :func:`quote_param` writes a value no reader can
break out of. Also holds the HTTP ``token`` and ``quoted-string`` grammar the other codec
modules reuse.
"""

from __future__ import annotations

import re
import urllib.parse

from veilpix._errors import RequestError

__all__ = ["decode_rfc2231", "parse_content_type", "quote_param", "split_params"]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PARAM_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(r'\\(["\\])')
_RFC2231_KEY = re.compile(r"([^*]+)\*(?:(0|[1-9][0-9]{0,2})(\*?))?")
_CTL = re.compile(r"[\x00-\x1f\x7f]")
_CHARSETS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "iso-8859-1": "latin-1",
    "us-ascii": "ascii",
    "": "utf-8",
}


def _unquote(text: str, pos: int, what: str, error: type[RequestError]) -> tuple[str, int]:
    match = _QUOTED.match(text, pos)
    if match is None:
        raise error(f"{what} has an unterminated quoted string")
    # "\x" stays "\x" unless x is a quote or a backslash: browsers do not escape the
    # backslashes of Windows paths, and HTTP libraries escape exactly these two.
    return _QUOTED_PAIR.sub(r"\1", match.group(1)), match.end()


def split_params(value: str, what: str, error: type[RequestError]) -> tuple[str, dict[str, str]]:
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


def decode_rfc2231(params: dict[str, str], what: str, error: type[RequestError]) -> dict[str, str]:
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
            # (the header's undecodable bytes arrive as surrogates: back to bytes first, so
            # that unquoting sees them as they came, not as text it cannot encode)
            raw_value = value.encode("utf-8", "surrogateescape")
            raw += urllib.parse.unquote_to_bytes(raw_value) if extended else raw_value
        try:
            out[base] = bytes(raw).decode(charset)
        except UnicodeDecodeError as exc:
            raise error(f"{what}: {base}* is not valid {charset}") from exc
    return out


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """A ``Content-Type`` value as (lower-cased ``type/subtype``, {lower-cased parameter
    name: value}); quoted values are unquoted. Raises :class:`~veilpix.RequestError` for a
    malformed or duplicated parameter."""
    return split_params(value, "Content-Type", RequestError)


def quote_param(value: str) -> str:
    """A quoted-string that no reader can break out of: backslash and quote are escaped,
    control characters (CR, LF, ...) percent-encoded as browsers do (WHATWG)."""
    value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _CTL.sub(lambda m: f"%{ord(m.group()):02X}", value) + '"'
