"""Terminal output with no markup language: what the commands print is data.

Every value (a file name, a metadata value, a field of the transfer log) goes out character
for character, except control characters, which are made visible (:func:`visible`: ``\\x1b``,
``\\n``, ``\\u202e``), so that a value can never move the cursor, change colours, clear the
screen or reorder the text after it. Nothing is interpreted: ``[bold]`` prints as ``[bold]``.

Styles (bold, dim, red, green, yellow, magenta) are ANSI codes the code puts around whole
pieces it chooses (:func:`styled`), and only when the stream is a terminal, ``NO_COLOR`` is
unset or empty and ``TERM`` is not ``dumb``; a non-empty ``FORCE_COLOR`` (other than ``0``)
turns them on anywhere, ``NO_COLOR`` still winning.

Nothing is wrapped: in a pipe or a file a line is as long as it is. On a terminal narrower
than a table, the columns marked ``fold`` are folded (at spaces where possible) so the rows
fit; other columns, and lines printed on their own (URLs, paths), are never broken.

The progress indicator (:class:`Progress`) draws on standard error only when that is a
terminal: one line updated in place, at most ten times a second, cleared at the end.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TextIO

from veilpix._words import plural  # (the CLI takes it from here with the rest)

__all__ = [
    "Column",
    "Piece",
    "Progress",
    "Table",
    "Term",
    "color_enabled",
    "json_text",
    "plural",
    "styled",
    "visible",
    "width",
]

Style = Literal["bold", "dim", "red", "green", "yellow", "magenta"]
_CODES: dict[str, str] = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "magenta": "35",
}
_RESET = "\x1b[0m"

# What a terminal acts on rather than shows: C0 and C1 controls and DEL, the bidirectional
# controls (U+202E turns the rest of the line around), the line and paragraph separators, and
# lone surrogates (bytes of a file name that are not UTF-8, which no stream can encode).
# what a terminal acts on (C0, DEL, C1, line and paragraph separators, bidi controls), lone
# surrogates, and the invisible format characters that make two names look alike (soft
# hyphen, zero-width space, word joiner, BOM, Hangul fillers, tag characters; the zero-width
# joiners U+200C/D stay: scripts and emoji sequences need them)
_INVISIBLE = (
    "\u00ad\u034f\u115f\u1160\u180e\u200b\u200e\u200f\u2060-\u2064\u206a-\u206f\u3164\ufeff"
    "\uffa0\ufff9-\ufffb\U000e0000-\U000e007f"
)
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u2028-\u202e\u2066-\u2069\ud800-\udfff" + _INVISIBLE + "]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _shown(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def visible(value: object) -> str:
    """``str(value)`` with every control character written out as an escape (``\\x1b``,
    ``\\n``, ``\\u202e``): safe to print, on one line, and still readable."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_shown, text) if _UNSAFE.search(text) else text


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0  # accents, variation selectors, zero-width joiners: drawn on the previous cell
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def width(text: str) -> int:
    """How many terminal cells ``text`` takes (CJK and emoji two, combining marks none)."""
    if text.isascii():
        return len(text)
    return sum(_char_width(ch) for ch in text)


_JSON_UNSAFE = re.compile(
    "[\x7f-\x9f\u061c\u2028-\u202e\u2066-\u2069\ud800-\udfff" + _INVISIBLE + "]"
)


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON writes a character beyond the BMP as its surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_text(obj: Any, *, indent: int | None = None) -> str:
    """``obj`` as JSON (UTF-8 kept readable) in which the characters a terminal would act on
    are ``\\uXXXX`` escapes as well: the same JSON to a parser, harmless on a screen. A file
    name's undecodable bytes (lone surrogates) come out as ``\\udcXX``, which Python's json
    reads back to the same name."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    if _JSON_UNSAFE.search(text):  # these only ever occur inside strings
        text = _JSON_UNSAFE.sub(_json_escape, text)
    return text


def color_enabled(stream: TextIO) -> bool:
    """Whether ANSI styles go to ``stream`` (see the module docstring)."""
    if os.environ.get("NO_COLOR"):
        return False
    force = os.environ.get("FORCE_COLOR")
    if force:
        return force.strip().lower() not in ("0", "false", "no")
    if os.environ.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def _terminal_width(stream: TextIO) -> int:
    """The terminal's width, 0 (no limit) when ``stream`` is not a terminal."""
    if not _isatty(stream):
        return 0
    try:
        return os.get_terminal_size(stream.fileno()).columns or 0
    except (OSError, ValueError, AttributeError):
        return 0


class Piece(NamedTuple):
    """A piece of text and the styles the code chose for it."""

    text: str
    styles: tuple[str, ...] = ()


def styled(value: object, *styles: Style) -> Piece:
    """``value`` printed with ``styles`` (when the stream takes styles)."""
    return Piece(str(value), styles)


Cell = str | Piece


def _piece(cell: Cell) -> Piece:
    return cell if isinstance(cell, Piece) else Piece(cell)


@dataclass(frozen=True)
class Column:
    """A table column: its header, alignment, whether a terminal may fold its cells, and
    styles for all of its cells."""

    header: str
    align: Literal["left", "right"] = "left"
    fold: bool = False
    styles: tuple[Style, ...] = ()


@dataclass
class Table:
    """Rows under a header, columns padded to their widest cell (like ``docker ps``)."""

    columns: list[Column]
    title: Cell | None = None
    caption: Cell | None = None
    header: bool = True
    indent: int = 0
    gap: int = 2
    rows: list[tuple[list[Piece], tuple[str, ...]]] = field(default_factory=list)

    def add_row(self, *cells: Cell, styles: Iterable[Style] = ()) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(([_piece(c) for c in cells], tuple(styles)))


class Term:
    """Where a command prints: a stream, whether it takes styles, and its width (0: none)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        color: bool | None = None,
        columns: int | None = None,
    ) -> None:
        self.stream = sys.stdout if stream is None else stream
        self.color = color_enabled(self.stream) if color is None else color
        self.columns = _terminal_width(self.stream) if columns is None else columns

    # -- pieces and lines ------------------------------------------------------------------

    def _paint(self, text: str, styles: Iterable[str]) -> str:
        codes = [_CODES[s] for s in styles if s in _CODES]
        if not (self.color and codes and text):
            return text
        return f"\x1b[{';'.join(dict.fromkeys(codes))}m{text}{_RESET}"

    def render(self, *pieces: Cell) -> str:
        """The pieces as one line: each made :func:`visible`, styled ones painted."""
        out = []
        for cell in pieces:
            p = _piece(cell)
            out.append(self._paint(visible(p.text), p.styles))
        return "".join(out)

    def print(self, *pieces: Cell) -> None:
        """Print the pieces as one line (no pieces: an empty line)."""
        self.write(self.render(*pieces) + "\n")

    def write(self, text: str) -> None:
        """Write ``text`` as is (callers pass rendered text); characters the stream's
        encoding cannot take are written as escapes rather than failing."""
        try:
            self.stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self.stream, "encoding", None) or "ascii"
            self.stream.write(text.encode(encoding, "backslashreplace").decode(encoding))

    # -- tables ----------------------------------------------------------------------------

    def table(self, table: Table) -> None:
        """Print ``table``: title, header, rows, caption."""
        if table.title is not None:
            self.print(table.title)
        texts = [[visible(p.text) for p in cells] for cells, _ in table.rows]
        heads = [visible(c.header) for c in table.columns]
        widths = [max([width(h)] + [width(row[i]) for row in texts]) for i, h in enumerate(heads)]
        widths = self._fit(table, widths)
        if table.header:
            header = [Piece(h, ("bold",)) for h in heads]
            self._row(table, widths, header, heads, header=True)
        for (cells, row_styles), row in zip(table.rows, texts, strict=True):
            self._row(table, widths, cells, row, row_styles=row_styles)
        if table.caption is not None:
            self.print(table.caption)

    def _fit(self, table: Table, widths: list[int]) -> list[int]:
        """Narrow the foldable columns so the table fits the terminal, if it can."""
        total = table.indent + sum(widths) + table.gap * (len(widths) - 1)
        foldable = [i for i, c in enumerate(table.columns) if c.fold]
        if not self.columns or total <= self.columns or not foldable:
            return widths
        fixed = total - sum(widths[i] for i in foldable)
        room = self.columns - fixed
        floor = {
            i: min(widths[i], max(10, width(visible(table.columns[i].header)))) for i in foldable
        }
        if room <= sum(floor.values()):
            return [floor.get(i, w) for i, w in enumerate(widths)]
        # the widest columns give way first: the largest cap with sum(min(w, cap)) <= room
        cap = max(widths[i] for i in foldable)
        while sum(max(floor[i], min(widths[i], cap)) for i in foldable) > room:
            cap -= 1
        return [max(floor[i], min(w, cap)) if i in floor else w for i, w in enumerate(widths)]

    def _row(
        self,
        table: Table,
        widths: list[int],
        cells: list[Piece],
        texts: list[str],
        *,
        row_styles: tuple[str, ...] = (),
        header: bool = False,
    ) -> None:
        pad, gap = " " * table.indent, " " * table.gap
        lines = [_fold(t, w) if width(t) > w else [t] for t, w in zip(texts, widths, strict=True)]
        last = len(widths) - 1
        for n in range(max(len(ls) for ls in lines)):
            parts = []
            for i, (col, cell) in enumerate(zip(table.columns, cells, strict=True)):
                text = lines[i][n] if n < len(lines[i]) else ""
                room = widths[i] - width(text)
                styles = cell.styles if header else (*row_styles, *col.styles, *cell.styles)
                painted = self._paint(text, styles)
                if col.align == "right":
                    parts.append(" " * room + painted)
                elif i == last:
                    parts.append(painted)
                else:
                    parts.append(painted + " " * room)
            self.write((pad + gap.join(parts)).rstrip(" ") + "\n")


def _fold(text: str, limit: int) -> list[str]:
    """``text`` in lines of at most ``limit`` cells: broken at spaces, and within a word only
    when the word alone is wider than a line."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if width(candidate) <= limit:
            line = candidate
            continue
        if line:
            lines.append(line)
        *full, line = _pieces(word, limit)
        lines.extend(full)
    lines.append(line)
    return lines


def _pieces(word: str, limit: int) -> list[str]:
    """``word`` cut into pieces of at most ``limit`` cells, in one pass (a piece holds at
    least one character, however wide)."""
    pieces: list[str] = []
    start = used = 0
    for i, ch in enumerate(word):
        w = _char_width(ch)
        if used + w > limit and i > start:
            pieces.append(word[start:i])
            start, used = i, 0
        used += w
    pieces.append(word[start:])
    return pieces


class Progress:
    """A one-line progress indicator on standard error, drawn only when that is a terminal
    (``enabled=False`` turns it off anyway): updated in place at most every ``interval``
    seconds, cleared by :meth:`close`. Nothing at all is written otherwise."""

    def __init__(
        self,
        total: int,
        label: str,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 0.1,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.total, self.label, self.done = total, label, 0
        self.active = enabled and total > 0 and _isatty(self.stream)
        self.clock, self.interval = clock, interval
        self.started = clock()
        self.last = float("-inf")
        self.drawn = False
        encoding = (getattr(self.stream, "encoding", "") or "").lower().replace("-", "")
        self.marks = ("█", "░") if encoding == "utf8" else ("#", "-")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if not self.active:
            return
        now = self.clock()
        if now - self.last >= self.interval or self.done >= self.total:
            self.last = now
            self._draw(now)

    def line(self, now: float) -> str:
        """The indicator's text at ``now``, fitted to the terminal."""
        elapsed = now - self.started
        count = f"{self.done}/{self.total}"
        eta = ""
        if 0 < self.done < self.total:
            eta = f"  eta {_clock(elapsed / self.done * (self.total - self.done))}"
        tail = f" {count}  {_clock(elapsed)}{eta}"
        room = (_terminal_width(self.stream) or 80) - 1 - len(self.label) - len(tail) - 1
        bar_width = max(0, min(40, room))
        filled = bar_width * min(self.done, self.total) // self.total if self.total else 0
        bar = self.marks[0] * filled + self.marks[1] * (bar_width - filled)
        return f"{self.label} {bar}{tail}" if bar_width else f"{self.label}{tail}"

    def _draw(self, now: float) -> None:
        self.stream.write("\r\x1b[2K" + self.line(now))
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.drawn = False
        self.active = False


def _clock(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )
