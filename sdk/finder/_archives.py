"""Documents and archives: what kind of file a layer is, and archives rebuilt with clean members.

:func:`_document_kind` names the non-image files that may carry personal data (PDF, Office,
audio and video). :func:`_container_kind` recognises compressed streams (gzip, zlib, zstd,
bzip2, xz) and archives (zip, tar), confirming each magic by what follows, and
:func:`rewrite_container` decodes one, sends every member back through the finder's walk and
rebuilds it when a member changed. Every decoded byte is charged to the request's budget.
"""

from __future__ import annotations

import bz2
import io
import lzma
import tarfile
import zipfile
import zlib
from typing import TYPE_CHECKING, Any, Literal

from veilpix._errors import RequestError, RequestTooLarge
from veilpix.codec import decode_body, encode_body
from veilpix.finder._base import _LEVEL, MAX_MEMBERS, _label, _unrewritable
from veilpix.finder._signatures import _IMAGE_BRANDS

if TYPE_CHECKING:
    from veilpix.finder._base import DocumentKind
    from veilpix.finder._layers import Finder

ContainerKind = Literal["gzip", "zlib", "zstd", "bzip2", "xz", "zip", "tar"]
"""A compressed stream or an archive the finder takes apart."""


def _document_kind(data: bytes) -> DocumentKind | None:
    """What kind of non-image file ``data`` is, when it is one that may carry personal data."""
    head = data[:64]
    if head[:5] == b"%PDF-":
        return "PDF"
    if head[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        return "Office document"
    if (
        head[:3] == b"ID3"
        or head[:4] in (b"OggS", b"fLaC", b"caff")
        or (head[:4] == b"RIFF" and head[8:12] in (b"WAVE", b"AVI "))
    ):
        return "audio or video"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio or video"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "audio or video"
    if head[4:8] == b"ftyp" and head[8:12] not in _IMAGE_BRANDS:
        return "audio or video"
    if head[:5] == b"{\\rtf":
        return "Office document"
    return None


def _zip_document(names: list[str]) -> DocumentKind | None:
    if "[Content_Types].xml" in names or "mimetype" in names:
        return "Office document"
    return None


def _container_kind(data: bytes) -> ContainerKind | None:
    """Which compressed stream or archive ``data`` is, its magic confirmed by what follows."""
    head = data[:32]
    if head[:3] == b"\x1f\x8b\x08" and not head[3] & 0xE0 and len(data) >= 18:
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd" and len(data) >= 9:
        return "zstd"
    if head[:3] == b"BZh" and head[4:10] == b"1AY&SY":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"PK\x03\x04" and len(data) >= 30:
        name, extra = int.from_bytes(head[26:28], "little"), int.from_bytes(head[28:30], "little")
        if 30 + name + extra <= len(data) and head[4] <= 63 and b"PK\x05\x06" in data[-65_600:]:
            return "zip"  # a sane first member, and the end-of-archive record a reader needs
    if head[:4] == b"PK\x05\x06" and len(data) == 22 + int.from_bytes(data[20:22], "little"):
        return "zip"
    if len(data) >= 512 and data[257:262] == b"ustar" and _tar_checksum_ok(data[:512]):
        return "tar"
    if len(data) >= 8 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:
        return "zlib"  # (pako, zlib.compress): checked further by decoding
    return None


def _tar_checksum_ok(block: bytes) -> bool:
    try:
        stored = int(block[148:156].split(b"\x00")[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(block[:148]) + 8 * 32 + sum(block[156:])


def _partial_inflate(data: bytes, kind: ContainerKind, limit: int) -> bytes:
    """What a streaming reader would get out of a damaged gzip/zlib/zstd stream."""
    out: list[bytes] = []
    size = 0
    try:
        if kind == "zstd":
            return b""  # zstd frames carry checksums and sizes: a damaged one yields nothing
        d = zlib.decompressobj(16 + zlib.MAX_WBITS if kind == "gzip" else zlib.MAX_WBITS)
        for i in range(0, len(data), 4096):
            chunk = d.decompress(data[i : i + 4096], max(limit - size, 1))
            size += len(chunk)
            out.append(chunk)
            if size >= limit or d.eof:
                break
    except zlib.error:
        pass
    return b"".join(out)


def rewrite_container(finder: Finder, data: bytes, where: str, depth: int) -> bytes | None:
    """Compressed streams and archives: rebuilt with their members cleaned, or None when
    ``data`` is neither (its structure does not hold beyond the magic)."""
    kind = _container_kind(data)
    if kind is None:
        return None
    if kind == "zip":
        return _zip(finder, data, where, depth)
    if kind == "tar":
        return _tar(finder, data, where, depth)
    if kind in ("bzip2", "xz"):
        return _stream(finder, data, where, depth, kind)
    try:
        inner = decode_body(
            data, "deflate" if kind == "zlib" else kind, max_bytes=max(finder._room, 0)
        )
    except RequestTooLarge:
        raise
    except RequestError:
        # Not a whole stream. Whatever part of it does decode must hold no image (a
        # reader could stream that much out); otherwise it was not a stream at all.
        if finder._probe(_partial_inflate(data, kind, max(finder._room, 0)), where, depth):
            raise _unrewritable(f"a damaged {kind} stream", where) from None
        return None
    finder._charge(len(inner), where)
    new, _ = finder._node(inner, None, f"{where}({kind})", depth + 1)
    header_extras = kind == "gzip" and data[3] & 0x1C  # FEXTRA, FNAME, FCOMMENT: dropped
    if new == inner and not header_extras:
        return data
    coding = "deflate" if kind == "zlib" else kind
    return encode_body(new, coding, level=_LEVEL)


def _stream(
    finder: Finder, data: bytes, where: str, depth: int, kind: Literal["bzip2", "xz"]
) -> bytes:
    d: Any = bz2.BZ2Decompressor() if kind == "bzip2" else lzma.LZMADecompressor()
    chunks: list[bytes] = []
    size = 0
    try:
        chunk = d.decompress(data, max_length=1 << 20)
        while True:
            size += len(chunk)
            finder._charge(len(chunk), where)
            chunks.append(chunk)
            if d.eof:
                break
            if d.needs_input:
                raise RequestError(f"{where} is a truncated {kind} stream")
            chunk = d.decompress(b"", max_length=1 << 20)
    except (OSError, lzma.LZMAError, EOFError) as exc:
        raise RequestError(f"{where} is not a valid {kind} stream: {exc}") from exc
    if d.unused_data:
        raise _unrewritable(f"data after the {kind} stream", where)
    inner = b"".join(chunks)
    new, _ = finder._node(inner, None, f"{where}({kind})", depth + 1)
    if new == inner:
        return data
    return bz2.compress(new, 1) if kind == "bzip2" else lzma.compress(new, preset=1)


def _zip(finder: Finder, data: bytes, where: str, depth: int) -> bytes:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (
        zipfile.BadZipFile,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,
        IndexError,
        KeyError,
    ) as exc:
        raise _unrewritable(f"a zip archive that does not open: {exc}", where) from exc
    if len(infos) > MAX_MEMBERS:
        raise RequestTooLarge(f"{where} is a zip archive of more than {MAX_MEMBERS} members")
    kind = _zip_document([i.filename for i in infos])
    if kind is not None:
        finder._doc_found(kind, where)
    members: list[tuple[zipfile.ZipInfo, bytes]] = []
    # comments and extra fields are not rebuilt: when one could hold an image, the
    # archive is written anew without them
    changed = any(
        finder._probe(i.comment, where, depth) or finder._probe(i.extra, where, depth)
        for i in infos
    )
    if finder._probe(archive.comment, where, depth):
        archive.comment = b""
        changed = True
    for info in infos:
        at = f"{where}[{_label(info.filename)}]"
        if info.filename.endswith("/"):  # a folder (is_dir() fails on an empty name)
            members.append((info, b""))
            continue
        if info.flag_bits & 0x1:
            raise _unrewritable("an encrypted zip member, which cannot be looked into", at)
        try:
            with archive.open(info) as member:
                inner = member.read(max(finder._room, 0) + 1)
        except (
            zipfile.BadZipFile,
            OSError,
            NotImplementedError,
            ValueError,
            EOFError,
            RuntimeError,
        ) as exc:
            raise _unrewritable(f"a zip member that does not read: {exc}", at) from exc
        new = _member(finder, inner, at, depth)
        changed |= new != inner
        members.append((info, new))
    if not changed:
        return data
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compresslevel=_LEVEL) as rebuilt:
        rebuilt.comment = archive.comment
        for info, content in members:
            copy = zipfile.ZipInfo(info.filename, info.date_time)
            copy.compress_type = info.compress_type
            copy.external_attr = info.external_attr
            copy.create_system = info.create_system
            if info.filename.endswith("/"):
                rebuilt.writestr(copy, b"")
            else:
                rebuilt.writestr(copy, content)
    return out.getvalue()


def _member(finder: Finder, inner: bytes, at: str, depth: int) -> bytes:
    """An archive member: charged to the budget, searched as a body of its own."""
    finder._charge(len(inner), at)
    return finder._node(inner, None, at, depth + 1)[0]


def _tar(finder: Finder, data: bytes, where: str, depth: int) -> bytes:
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")  # noqa: SIM115
        infos = archive.getmembers()
    except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
        raise _unrewritable(f"a tar archive that does not open: {exc}", where) from exc
    if len(infos) > MAX_MEMBERS:
        raise RequestTooLarge(f"{where} is a tar archive of more than {MAX_MEMBERS} members")
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    changed = False
    for info in infos:
        if not info.isfile():
            members.append((info, None))
            continue
        at = f"{where}[{_label(info.name)}]"
        extracted = archive.extractfile(info)
        if extracted is None:
            raise _unrewritable("a tar member that does not read", at)
        inner = extracted.read()
        new = _member(finder, inner, at, depth)
        changed |= new != inner
        members.append((info, new))
    if not changed:
        return data
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:", format=archive.format) as rebuilt:
        for info, content in members:
            if content is None:
                rebuilt.addfile(info)
            else:
                info.size = len(content)
                rebuilt.addfile(info, io.BytesIO(content))
    return out.getvalue()
