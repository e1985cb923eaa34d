"""A bounded reader for TIFF structures (TIFF files, EXIF blobs, BigTIFF).

Every offset is checked against the data, every IFD chain is followed with a visited set and
a page cap, and value decoding is capped, so loops, offsets that point outside the file and
absurd counts end in ``CorruptImage`` or an empty value, never in a hang or a huge allocation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from veilpix._errors import CorruptImage

__all__ = ["Entry", "TiffReader"]

# type id -> (item size, struct code); 2 = ASCII and 7 = UNDEFINED are returned as bytes.
_TYPES: dict[int, tuple[int, str]] = {
    1: (1, "B"),
    2: (1, "s"),
    3: (2, "H"),
    4: (4, "I"),
    5: (8, "II"),
    6: (1, "b"),
    7: (1, "s"),
    8: (2, "h"),
    9: (4, "i"),
    10: (8, "ii"),
    11: (4, "f"),
    12: (8, "d"),
    13: (4, "I"),
    16: (8, "Q"),
    17: (8, "q"),
    18: (8, "Q"),
}
MAX_PAGES = 4096
MAX_ENTRIES = 4096
MAX_VALUES = 1 << 16  # numeric items decoded per tag; longer arrays are summarised by count


@dataclass(frozen=True)
class Entry:
    """One IFD entry: tag, field type, count, and where its value bytes sit."""

    tag: int
    type: int
    count: int
    offset: int  # absolute position of the value bytes in the reader's data
    size: int  # total value size in bytes


class TiffReader:
    """Read IFDs out of ``data``, which starts with a TIFF header ("II*\\0" or "MM\\0*")."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        order = data[:2]
        if order == b"II":
            self.e = "<"
        elif order == b"MM":
            self.e = ">"
        else:
            raise CorruptImage("TIFF structure has no byte-order mark")
        if len(data) < 8:
            raise CorruptImage("TIFF structure is truncated in its header")
        (magic,) = struct.unpack_from(self.e + "H", data, 2)
        if magic == 42:
            self.big = False
            (self.first,) = struct.unpack_from(self.e + "I", data, 4)
        elif magic == 43 and len(data) >= 16:
            self.big = True
            (self.first,) = struct.unpack_from(self.e + "Q", data, 8)
        else:
            raise CorruptImage(f"TIFF structure has a bad magic number {magic}")

    def ifd(self, offset: int, *, strict: bool = False) -> tuple[dict[int, Entry], int]:
        """Entries of the IFD at ``offset`` and the offset of the next IFD (0 when none).

        ``strict``: a missing next-IFD pointer is damage (a cut file) rather than the last IFD
        of an EXIF block whose writer left it out."""
        data, e = self.data, self.e
        head, item, ptr = (8, 20, 8) if self.big else (2, 12, 4)
        if offset <= 0 or offset + head > len(data):
            raise CorruptImage(f"TIFF structure points outside the data (IFD at {offset})")
        count = struct.unpack_from(e + ("Q" if self.big else "H"), data, offset)[0]
        if count > MAX_ENTRIES:
            raise CorruptImage(f"TIFF structure declares {count} entries in one IFD")
        start = offset + head
        end = start + count * item
        if end + ptr > len(data):
            # Many writers omit the next-IFD pointer of the last IFD; entries must be whole.
            if end > len(data) or strict:
                raise CorruptImage("TIFF structure is truncated inside an IFD")
            nxt = 0
        else:
            nxt = struct.unpack_from(e + ("Q" if self.big else "I"), data, end)[0]
        entries: dict[int, Entry] = {}
        for i in range(count):
            p = start + i * item
            if self.big:
                tag, typ, n = struct.unpack_from(e + "HHQ", data, p)
                inline = 8
            else:
                tag, typ, n = struct.unpack_from(e + "HHI", data, p)
                inline = 4
            size = _TYPES.get(typ, (1, "s"))[0] * n
            if size <= inline:
                at = p + (12 if self.big else 8)
            else:
                at = struct.unpack_from(
                    e + ("Q" if self.big else "I"), data, p + (12 if self.big else 8)
                )[0]
            entries[tag] = Entry(tag, typ, n, at, size)
        return entries, nxt

    def chain(
        self, offset: int | None = None, *, strict: bool = False
    ) -> list[tuple[int, dict[int, Entry]]]:
        """Every IFD in the chain from ``offset`` (default: the first), loop-safe."""
        out: list[tuple[int, dict[int, Entry]]] = []
        seen: set[int] = set()
        at = self.first if offset is None else offset
        while at and at not in seen:
            if len(out) >= MAX_PAGES:
                raise CorruptImage(f"TIFF structure has more than {MAX_PAGES} IFDs")
            seen.add(at)
            entries, nxt = self.ifd(at, strict=strict)
            out.append((at, entries))
            at = nxt
        return out

    def in_bounds(self, entry: Entry) -> bool:
        return entry.offset >= 0 and entry.offset + entry.size <= len(self.data)

    def raw(self, entry: Entry) -> bytes:
        """The value bytes of ``entry`` (empty when they lie outside the data)."""
        if not self.in_bounds(entry):
            return b""
        return self.data[entry.offset : entry.offset + entry.size]

    def value(self, entry: Entry) -> Any:
        """Decoded value, shaped like piexif's: bytes for ASCII/UNDEFINED, a number for a
        single item, a (num, den) pair for one rational, tuples for several."""
        size, code = _TYPES.get(entry.type, (1, "s"))
        raw = self.raw(entry)
        if code == "s":
            return raw
        n = min(entry.count, MAX_VALUES, len(raw) // size)
        if n == 0:
            return ()
        if len(code) == 2:
            flat = struct.unpack_from(f"{self.e}{2 * n}{code[0]}", raw)
            pairs = tuple(zip(flat[::2], flat[1::2], strict=True))
            return pairs[0] if n == 1 else pairs
        items = struct.unpack_from(f"{self.e}{n}{code}", raw)
        return items[0] if n == 1 else items

    def ints(self, entry: Entry) -> tuple[int, ...]:
        v = self.value(entry)
        if isinstance(v, int):
            return (v,)
        if isinstance(v, tuple) and all(isinstance(x, int) for x in v):
            return v
        return ()
