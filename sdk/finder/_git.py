"""``git diff --binary`` patches in text: binary hunks inflated, searched and written back.

A code-review prompt may quote a patch that adds an image. Each ``literal`` hunk (base85 of a
deflated file) is decoded, sent through the finder's walk and written back the way git writes
it, with the ``index`` line's blob id updated so the patch still applies; a ``delta`` hunk
that touches an image cannot be rebuilt and is refused.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from typing import TYPE_CHECKING

from veilpix.finder._base import _LEVEL, _unrewritable
from veilpix.finder._runs import _splice
from veilpix.finder._signatures import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from veilpix.finder._layers import Finder

_GIT_HUNK = re.compile(
    r"(?m)^(literal|delta) (\d+)\r?\n((?:[A-Za-z][0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]{5,65}\r?\n)+)"
)
_GIT_FILE = re.compile(r"(?m)^diff --git a/\S+ b/(\S+)")
_GIT_INDEX = re.compile(r"(?m)^index ([0-9a-f]{7,64})\.\.([0-9a-f]{7,64})")


def _git_new_blob(text: str, hunk: int, old: bytes, new: bytes) -> list[tuple[int, int, str]]:
    """The edit that makes the last ``index a..b`` line before ``hunk`` name the git blob id
    of ``new`` where it named ``old``'s (full or abbreviated, as it was); none otherwise."""
    found = list(_GIT_INDEX.finditer(text, 0, hunk))
    if not found or not _git_blob_id(old).startswith(found[-1].group(2)):
        return []  # no index line, or one that names something else: left as it is
    m = found[-1]
    return [(m.start(2), m.end(2), _git_blob_id(new)[: len(m.group(2))])]


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


def rewrite_git_patches(finder: Finder, text: str, where: str, depth: int) -> str:
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
        finder._charge(len(raw), at)
        if kind == "delta":
            # a delta holds the changed bytes of a file, not the file: when the file is
            # an image (its name says so, or the bytes show one) it cannot be cleaned
            name = _GIT_FILE.findall(text, 0, m.start())
            if (name and name[-1].lower().endswith(IMAGE_SUFFIXES)) or finder._probe(
                raw, at, depth
            ):
                raise _unrewritable("changed by a git binary delta", where)
            continue
        new, _ = finder._node(raw, None, at, depth + 1)
        if new == raw:
            continue
        if text[: m.start()].endswith(("GIT binary patch\n", "GIT binary patch\r\n")):
            edits += _git_new_blob(text, m.start(), raw, new)  # the file's new blob id
        eol = "\r\n" if lines.endswith("\r\n") else "\n"
        hunk = f"{kind} {len(new)}{eol}" + _git_lines(zlib.compress(new, _LEVEL), eol)
        edits.append((m.start(), m.end(), hunk))
    return _splice(text, edits)
