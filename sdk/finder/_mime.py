"""Multipart bodies as the finder reads and rebuilds them, and the neutral names files go under.

Unlike the codec's form reader, :func:`rewrite_parts` takes any multipart subtype, and
:class:`_MimePart` undoes a part's Content-Transfer-Encoding (base64, quoted-printable) and
Content-Encoding, so the image inside can be cleaned and written back alike; every part is
searched as a layer of its own and the body rebuilt when one changed. File parts are renamed (:func:`neutral_name_for`:
``image.jpg``, ``file-2.pdf``), since file names often carry a person's name.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeGuard, get_args

from veilpix._errors import MalformedMultipart, RequestError
from veilpix.codec import (
    check_boundary,
    decode_body,
    decode_rfc2231,
    encode_body,
    quote_param,
    split_multipart,
    split_params,
)
from veilpix.finder._base import _LEVEL, Refused, _label
from veilpix.finder._prefilter import _might_hold
from veilpix.finder._raw import _media
from veilpix.finder._signatures import _COMMON_EXTENSIONS
from veilpix.formats._registry import extension_for

if TYPE_CHECKING:
    from veilpix.finder._base import Role
    from veilpix.finder._layers import Finder

Transfer = Literal["7bit", "8bit", "binary", "base64", "quoted-printable"]
"""A part's Content-Transfer-Encoding the finder reads (others are refused)."""
_TRANSFERS: tuple[str, ...] = get_args(Transfer)


def _is_transfer(name: str) -> TypeGuard[Transfer]:
    return name in _TRANSFERS


def neutral_filename(kind: str, index: int, extension: str) -> str:
    """The file name veilpix sends instead of the app's: ``image.jpg``, ``file-2.pdf``."""
    return f"{kind}{'' if index <= 1 else f'-{index}'}{extension}"


def neutral_name_for(data: bytes, original: str | None, index: int = 1) -> str:
    """The neutral name of file number ``index`` holding ``data`` (sent as ``original``):
    ``image.jpg`` for an image (its extension from the bytes), else ``file`` with the
    original's extension when that is a plain one (``file-2.pdf``)."""
    media = _media(data)
    if media is not None:
        return neutral_filename("image", index, extension_for(media) or "")
    return neutral_filename("file", index, _extension(original or ""))


def _extension(filename: str) -> str:
    """The original's extension when it is a common file type's; anything else could be a
    part of the name ("anna.schmidt"), and the file goes as ``file`` without one."""
    dot = filename.rfind(".")
    ext = filename[dot:].lower() if dot >= 0 else ""
    return ext if ext in _COMMON_EXTENSIONS else ""


def _token_or_quoted(value: str) -> str:
    return value if re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value) else quote_param(value)


def _sniff_multipart(data: bytes) -> str | None:
    """The boundary when ``data`` starts like a multipart body sent without its header."""
    if not data.startswith(b"--"):
        return None
    eol = data.find(b"\n", 0, 80)
    if eol < 0:
        return None
    line = data[2:eol].rstrip(b"\r \t")
    try:
        boundary = line.decode("ascii")
        check_boundary(boundary)
    except (UnicodeDecodeError, MalformedMultipart):
        return None
    return boundary if b"\n--" + line + b"--" in data else None


def rewrite_parts(
    finder: Finder,
    body: bytes,
    content_type: str,
    where: str,
    depth: int,
    *,
    masks: frozenset[str] | set[str] = frozenset(),
    on_field: Callable[[str, bytes], None] | None = None,
) -> tuple[bytes, str]:
    """A multipart body of any subtype with each part searched as a layer of its own and
    the body rebuilt when one changed (see :meth:`Finder.rewrite_multipart`)."""
    media, params = split_params(content_type, "Content-Type", MalformedMultipart)
    boundary = params.get("boundary")
    if boundary is None:
        raise MalformedMultipart(f"the {media} Content-Type of {where} has no boundary")
    check_boundary(boundary)
    form = media == "multipart/form-data"
    raw, eol = split_multipart(body, boundary, max_parts=finder.max_parts)
    parts = [_MimePart.read(h, d, i, form, where) for i, (h, d) in enumerate(raw, 1)]
    order = sorted(range(len(parts)), key=lambda i: parts[i].name in masks)  # images first
    # the preamble and epilogue (outside every part, read by no one) are dropped when
    # they could hold anything: the body is rebuilt without them
    marker = b"--" + boundary.encode("ascii")
    first, last = body.find(marker), body.rfind(marker + b"--")
    changed = _might_hold(body[:first]) or _might_hold(body[last + len(marker) + 2 :])
    for i in order:
        part = parts[i]
        at = f"{where}[{_label(part.name or str(i + 1))}]" if form else f"{where}[part {i + 1}]"
        if on_field is not None and part.filename is None and part.name is not None:
            on_field(part.name, part.data)
        inner = part.decoded(at, finder)
        role: Role = "mask" if part.name in masks else "image"
        new, new_type = finder._node(inner, part.content_type, at, depth + 1, role)
        if new != inner:
            part.replace(new, new_type or _media(new))
            changed = True
        if part.filename is not None:
            changed |= part.rename(finder)
            if finder._renamed is not None and part.filename is not None:
                finder._renamed(at, part.filename)
    if not changed:
        return body, content_type
    delim = b"--" + boundary.encode("ascii")
    if any(delim in p.data or delim in p.render(eol) for p in parts):
        boundary = "veilpix-" + secrets.token_hex(16)
        delim = b"--" + boundary.encode("ascii")
        content_type = f"{media}; " + "; ".join(
            f"{k}={_token_or_quoted(v)}" for k, v in {**params, "boundary": boundary}.items()
        )
    out = b"".join(delim + p.render(eol) + eol for p in parts) + delim + b"--" + eol
    return out, content_type


@dataclass
class _MimePart:
    """One part of a multipart body: its headers as sent (order and case kept) and data."""

    headers: list[tuple[str, str]]
    data: bytes
    name: str | None
    filename: str | None
    content_type: str | None
    transfer: Transfer
    coding: str | None
    plain: bytes | None = None  # the data with its transfer encodings undone

    @classmethod
    def read(
        cls, headers: list[tuple[str, str]], data: bytes, index: int, form: bool, where: str
    ) -> _MimePart:
        seen: dict[str, str] = {}
        for key, value in headers:
            low = key.lower()
            if low in (
                "content-disposition",
                "content-type",
                "content-transfer-encoding",
                "content-encoding",
                "content-length",
            ):
                if low in seen:
                    raise MalformedMultipart(
                        f"part {index} of {where} has two {key} headers; refusing to guess "
                        "which counts"
                    )
                seen[low] = value
        length = seen.get("content-length")
        digits = (length or "").strip()
        if length is not None and (
            not (digits.isascii() and digits.isdigit()) or int(digits) != len(data)
        ):
            raise MalformedMultipart(
                f"part {index} of {where} declares Content-Length {length!r} but carries "
                f"{len(data)} bytes"
            )
        name = filename = None
        disposition = seen.get("content-disposition")
        if disposition is not None:
            what = f"the Content-Disposition of part {index} of {where}"
            kind, params = split_params(disposition, what, MalformedMultipart)
            params = decode_rfc2231(params, what, MalformedMultipart)
            name = params.get("name")
            filename = params.get("filename")
            if form and (kind != "form-data" or name is None):
                raise MalformedMultipart(f"{what} is not form-data with a name (RFC 7578)")
        elif form:
            raise MalformedMultipart(
                f"part {index} of {where} has no Content-Disposition header (RFC 7578)"
            )
        transfer = seen.get("content-transfer-encoding", "binary").strip().lower()
        if not _is_transfer(transfer):
            raise Refused(
                "image.unrewritable",
                f"part {index} of {where} uses Content-Transfer-Encoding {transfer!r}, which "
                "veilpix cannot read, so it cannot prove the part clean",
            )
        coding = seen.get("content-encoding")
        if coding is not None and coding.strip().lower() in ("", "identity"):
            coding = None
        return cls(headers, data, name, filename, seen.get("content-type"), transfer, coding)

    def decoded(self, where: str, finder: Finder) -> bytes:
        data = self.data
        try:
            if self.transfer == "base64":
                data = base64.b64decode(re.sub(rb"\s+", b"", data), validate=True)
            elif self.transfer == "quoted-printable":
                data = binascii.a2b_qp(data)
        except binascii.Error as exc:
            raise RequestError(f"{where} is not valid {self.transfer}: {exc}") from exc
        if self.coding is not None:
            data = decode_body(data, self.coding, max_bytes=max(finder._room, 0))
            finder._charge(len(data), where)
        self.plain = data
        return data

    def replace(self, data: bytes, media_type: str | None) -> None:
        self.plain = data
        if self.coding is not None:
            data = encode_body(data, self.coding, level=_LEVEL)
        if self.transfer == "base64":
            text = base64.encodebytes(data).replace(b"\n", b"\r\n")
            data = text[:-2] if text.endswith(b"\r\n") else text
        elif self.transfer == "quoted-printable":
            data = binascii.b2a_qp(data)
        elif self.transfer == "7bit" and not data.isascii():
            self.transfer = "binary"
            self._set("Content-Transfer-Encoding", "binary")
        self.data = data
        if media_type is not None and self.content_type is not None:
            self.content_type = media_type
            self._set("Content-Type", media_type)
        self._set("Content-Length", None)

    def rename(self, finder: Finder) -> bool:
        """Give a file part a neutral name that keeps the right extension (``image.jpg``,
        ``file.pdf``): file names often carry a person's name. True when it changed."""
        finder.files += 1
        data = self.plain if self.plain is not None else self.data
        new = neutral_name_for(data, self.filename, finder.files)
        if new == self.filename:
            return False
        self.filename = new
        for i, (key, value) in enumerate(self.headers):
            if key.lower() == "content-disposition":
                kind, params = split_params(value, "Content-Disposition", MalformedMultipart)
                # every spelling of the name: filename, filename*, and RFC 2231's
                # continuations (filename*0*, filename*1, ...), which receivers prefer
                params = {
                    k: v for k, v in params.items() if k.lower().split("*", 1)[0] != "filename"
                }
                params["filename"] = new
                rendered = "; ".join([kind, *(f"{k}={quote_param(v)}" for k, v in params.items())])
                self.headers[i] = (key, rendered)
        return True

    def _set(self, name: str, value: str | None) -> None:
        low = name.lower()
        found = False
        out: list[tuple[str, str]] = []
        for key, old in self.headers:
            if key.lower() == low:
                if value is not None and not found:
                    out.append((key, value))
                found = True
            else:
                out.append((key, old))
        if value is not None and not found:
            out.append((name, value))
        self.headers = out

    def render(self, eol: bytes) -> bytes:
        lines = b"".join(
            f"{k}: {v}".encode("utf-8", "surrogateescape") + eol for k, v in self.headers
        )
        return eol + lines + eol + self.data
