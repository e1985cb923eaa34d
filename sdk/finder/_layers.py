"""The finder's walk: every layer of a request body taken apart, searched and put back.

:class:`Finder` takes a body apart layer by layer whatever its Content-Type says: images are
sent to the ``clean`` callback; multipart bodies, JSON, JSON Lines, text and form values are
walked; multipart bodies (``_mime``), compressed streams and archives (``_archives``), text
runs (``_runs``) and git patches (``_git``) are decoded, searched as a layer of their own and
rebuilt alike. One byte
budget covers all layers of one request, nesting stops at :data:`MAX_LAYERS`, and an image
that cannot be put back raises :class:`Refused`.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from veilpix._errors import MalformedMultipart, RequestError, RequestTooLarge
from veilpix.codec import DEFAULT_MAX_DEPTH, dump_json, load_json
from veilpix.finder._archives import _container_kind, _document_kind, rewrite_container
from veilpix.finder._base import (
    MAX_LAYERS,
    MIN_IMAGE,
    Clean,
    Document,
    Refused,
    Role,
    _unrewritable,
)
from veilpix.finder._git import rewrite_git_patches
from veilpix.finder._json import (
    _json_spans,
    _Key,
    _keys_last,
    _rename,
    _replace,
    _same_numbers,
    _TooDeep,
    _walk,
    dotted,
    fix_mime,
    whole_json,
)
from veilpix.finder._mime import _sniff_multipart, rewrite_parts
from veilpix.finder._prefilter import (
    _byte_array_in,
    _carrier_runs_in,
    _might_hold,
    _text_might_hold,
)
from veilpix.finder._raw import (
    _image_at,
    _image_end,
    _length_prefixed,
    _media,
    _raw_candidates,
    _whole_image,
    other_image,
)
from veilpix.finder._runs import (
    _ASCII85,
    _MAX_GLUE,
    _PCT,
    _b32decode,
    _base64_runs,
    _Base64Style,
    _byte_values_image,
    _data_head,
    _decode_run,
    _hex_like,
    _image_b64_start,
    _json_unescape,
    _media_of_text,
    _percent_runs,
    _splice,
    _sub_runs,
    _unhex,
    _wide_text,
    _wrapped,
)
from veilpix.formats._sniff import looks_like_image, media_type

if TYPE_CHECKING:
    from veilpix.finder._base import DocumentKind
    from veilpix.finder._runs import RunKind

__all__ = ["Finder"]


class Finder:
    """Finds and cleans every image in one request (see :mod:`veilpix.finder`).

    ``clean(data, where, role)`` sanitizes one image; ``document(kind, where)`` hears of
    non-image files; ``renamed(where, filename)`` hears the neutral name each multipart file
    part is sent under; ``max_bytes`` is the budget of decoded bytes (all layers together);
    ``max_parts`` caps the parts of one multipart layer. One finder serves one request.
    """

    def __init__(
        self,
        clean: Clean,
        *,
        document: Document | None = None,
        renamed: Callable[[str, str], None] | None = None,
        max_bytes: int = 256 << 20,
        max_parts: int = 1000,
    ) -> None:
        self._clean = clean
        self._document = document
        self._renamed = renamed
        self._room = max_bytes
        self.max_parts = max_parts
        self.files = 0  # file parts renamed so far (for neutral names)
        self.images = 0
        self._probing = False  # a probe (see _probe) starts no probes of its own

    # -- public entry points ---------------------------------------------------------------

    def rewrite_body(
        self, body: bytes, content_type: str | None, where: str = "body"
    ) -> tuple[bytes, str | None]:
        """``body`` with every image cleaned, and the new Content-Type when it changed."""
        return self._node(body, content_type, where, 0)

    def rewrite_multipart(
        self,
        body: bytes,
        content_type: str,
        where: str = "body",
        *,
        masks: frozenset[str] | set[str] = frozenset(),
        on_field: Callable[[str, bytes], None] | None = None,
        depth: int = 0,
    ) -> tuple[bytes, str]:
        """A multipart body of any subtype with its parts cleaned and rebuilt; parts named in
        ``masks`` are cleaned last with the ``mask`` role; ``on_field(name, data)`` hears each
        form field that is not a file. Returns (body, Content-Type)."""
        return rewrite_parts(self, body, content_type, where, depth, masks=masks, on_field=on_field)

    def rewrite_doc(
        self, doc: Any, where: str = "body", *, skip: frozenset[tuple[Any, ...]] = frozenset()
    ) -> tuple[Any, bool]:
        """A parsed JSON document with every image in its strings and byte arrays cleaned
        (paths in ``skip`` were handled by the caller). Returns (doc, changed)."""
        return self._doc(doc, where, 0, skip)

    @staticmethod
    def might_hold_image(body: bytes) -> bool:
        """False only when no layer of ``body`` can hold an image: no signature, no base64,
        hex or percent run, no byte array, no container. C-speed passes over the bytes."""
        return _might_hold(body)

    # -- layers ----------------------------------------------------------------------------

    def _enter(self, depth: int, where: str) -> None:
        if depth > MAX_LAYERS:
            raise RequestTooLarge(
                f"{where} nests encodings and containers more than {MAX_LAYERS} deep; "
                "refusing to look further"
            )

    def _charge(self, size: int, where: str) -> int:
        """Take ``size`` decoded bytes from the request's budget; the room left."""
        self._room -= size
        if self._room < 0:
            raise RequestTooLarge(
                f"{where} decodes to more data than the request may hold (a decompression "
                "bomb, or nested encodings over the limit)"
            )
        return self._room

    def _image(self, data: bytes, where: str, role: Role) -> bytes:
        self.images += 1
        return self._clean(data, where, role)

    def _node(
        self, data: bytes, ctype: str | None, where: str, depth: int, role: Role = "image"
    ) -> tuple[bytes, str | None]:
        """One layer of bytes: (new bytes, new Content-Type or None when it did not change)."""
        if not data:
            return data, None
        self._enter(depth, where)
        media = (ctype or "").partition(";")[0].strip().lower()
        if looks_like_image(data):
            out = self._image(data, where, role)
            new_type = media_type(out)
            return out, new_type if media and new_type != media else None
        other = other_image(data, 0)
        if other is not None:
            raise Refused(
                "image.unsupported",
                f"{where} is {other}, which veilpix cannot sanitize",
                hint="convert it to JPEG or PNG first; nothing was sent",
            )
        if media.startswith("multipart/"):
            return rewrite_parts(self, data, ctype or "", where, depth)
        container = rewrite_container(self, data, where, depth)
        if container is not None:
            return container, None
        kind = _document_kind(data)
        if kind is not None:
            self._doc_found(kind, where)
            return data, None
        sniffed = _sniff_multipart(data)
        if sniffed is not None:
            try:
                out, new_ctype = rewrite_parts(
                    self, data, f"multipart/mixed; boundary={sniffed}", where, depth
                )
            except MalformedMultipart:
                pass  # not multipart after all: searched as bytes below
            else:
                return out, None if new_ctype.endswith(f"={sniffed}") else new_ctype
        if not _might_hold(data):
            return data, None
        wide = _wide_text(data, media, ctype or "")
        if wide is not None:  # UTF-16 or UTF-32 text: searched as text, written back alike
            text, codec, bom = wide
            new_text = self._text(text, where, depth)
            return (
                data if new_text is text else bom + new_text.encode(codec, "surrogatepass")
            ), None
        return self._bytes(data, where, depth), None

    def _doc_found(self, kind: DocumentKind, where: str) -> None:
        if self._document is not None:
            self._document(kind, where)

    # -- raw bytes and text ------------------------------------------------------------------

    def _bytes(self, data: bytes, where: str, depth: int) -> bytes:
        """Bytes of no known container: JSON, JSON Lines, text, or binary with images inside."""
        head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
        if head[:1] in (b"{", b"[", b'"'):
            doc = self._try_json(data, where)
            if doc is not _NOT_JSON:
                new, changed = self._doc(doc, where, depth + 1, frozenset())
                return dump_json(new) if changed else data
            if b"\n" in data:
                lines = self._lines(data, where, depth)
                if lines is not None:
                    return lines
        pieces: list[bytes] = []
        pos = 0
        for k in _raw_candidates(data):
            if k < pos:
                continue
            fmt = _image_at(data, k)
            if fmt is None:
                other = other_image(data, k)
                if other is not None:
                    raise Refused(
                        "image.unsupported",
                        f"{where} holds {other} at byte {k}, which veilpix cannot sanitize",
                        hint="convert it to JPEG or PNG first; nothing was sent",
                    )
                continue
            end = _image_end(data, k, fmt)
            if end is None or end <= k:
                raise _unrewritable(f"{fmt} at byte {k}", where)
            if _length_prefixed(data, k, end):
                # a length field before it (protobuf, msgpack, gRPC, a custom frame) would
                # be wrong once the cleaned image has another size
                raise _unrewritable(f"{fmt} at byte {k}, inside a length-prefixed frame", where)
            pieces.append(self._text_bytes(data[pos:k], where, depth))
            pieces.append(self._image(data[k:end], f"{where}[{k}:]", "image"))
            pos = end
        if not data.isascii():
            self._streams_inside(data, where, depth)
        if not pieces:
            return self._text_bytes(data, where, depth)
        pieces.append(self._text_bytes(data[pos:], where, depth))
        return b"".join(pieces)

    def _streams_inside(self, data: bytes, where: str, depth: int) -> None:
        """Compressed streams and zip archives that start inside binary data (a gRPC frame,
        a self-extracting archive) cannot be rebuilt in place: refused when they hold an
        image."""
        if self._probing:
            return
        for magic in (b"\x1f\x8b\x08", b"\x28\xb5\x2f\xfd", b"PK\x03\x04"):
            k = data.find(magic, 1)
            while k >= 0:
                if _container_kind(data[k : k + 4096]) is not None and self._probe(
                    data[k:], f"{where}[{k}:]", depth
                ):
                    raise _unrewritable(f"a compressed stream at byte {k} holding one", where)
                k = data.find(magic, k + 1)

    def _text_bytes(self, data: bytes, where: str, depth: int) -> bytes:
        """Text carriers (base64, hex, percent, data URIs, JSON inside prose) in bytes: read
        as UTF-8 when they are, else as latin-1 so every byte maps to one character and back."""
        if not data:
            return data
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:  # binary: JSON cannot be inside, carriers still can
            if not _carrier_runs_in(data, binary=True):
                return data
            text, encoding = data.decode("latin-1"), "latin-1"
        else:
            if not (_text_might_hold(data) or _byte_array_in(data)):
                return data
        new = self._prose(text, where, depth, json_inside=encoding == "utf-8")
        if new is text:
            if encoding == "utf-8" and b"\\" in data:
                self._escaped(text, where, depth)
            return data
        return new.encode(encoding, "surrogatepass")

    def _prose(self, text: str, where: str, depth: int, *, json_inside: bool = True) -> str:
        """Text that may hold JSON values among other words (a prompt quoting a tool call, a
        log line with a Buffer): each JSON value is searched as JSON, the words between them
        for carriers. Returns ``text`` itself when nothing changed."""
        if json_inside and _byte_values_image(text):  # (text, not binary read as latin-1)
            raise _unrewritable("written out as escaped or separated byte values", where)
        if "GIT binary patch" in text:  # the patch rewritten; the words around it below
            text = rewrite_git_patches(self, text, where, depth)
        if "<~" in text:  # Ascii85 (Adobe, PostScript, PDF tools)
            text = self._ascii85(text, where, depth)
        spans = _json_spans(text) if json_inside and ("{" in text or "[" in text) else []
        if not spans:
            return self._carriers(text, where, depth)
        out: list[str] = []
        pos = 0
        changed = False
        for start, end, value in spans:
            try:
                new, found = self._doc(value, f"{where}(json)", depth + 1, frozenset())
            except _TooDeep:
                continue  # searched with the text around it
            gap = text[pos:start]
            new_gap = self._carriers(gap, where, depth)
            out.append(new_gap)
            out.append(dump_json(new).decode("utf-8") if found else text[start:end])
            changed |= found or new_gap is not gap
            pos = end
        tail = text[pos:]
        new_tail = self._carriers(tail, where, depth)
        out.append(new_tail)
        if not changed and new_tail is tail:
            return text
        return "".join(out)

    def _lines(self, data: bytes, where: str, depth: int) -> bytes | None:
        """JSON Lines: each line that parses is rewritten as one line; None when no line is
        JSON (then the body is searched as text)."""
        lines = data.split(b"\n")
        out: list[bytes] = []
        any_json = False
        for i, line in enumerate(lines):
            body = line.rstrip(b"\r")
            stripped = body.strip()
            if stripped[:1] in (b"{", b"[") and _might_hold(stripped):
                doc = self._try_json(stripped, f"{where} line {i + 1}")
                if doc is not _NOT_JSON:
                    any_json = True
                    new, changed = self._doc(doc, f"{where} line {i + 1}", depth + 1, frozenset())
                    out.append(dump_json(new) + line[len(body) :] if changed else line)
                    continue
            elif stripped[:1] in (b"{", b"["):
                any_json = True
            out.append(self._text_bytes(line, f"{where} line {i + 1}", depth))
        return b"\n".join(out) if any_json else None

    def _try_json(self, data: bytes | str, where: str) -> Any:
        stripped = data.strip()
        if isinstance(stripped, bytes) and stripped.startswith(b"\xef\xbb\xbf"):
            stripped = stripped[3:]
        try:
            return load_json(stripped, max_depth=DEFAULT_MAX_DEPTH)
        except RequestTooLarge:
            raise
        except RequestError as exc:
            if "twice in one object" in exc.message and whole_json(stripped):
                raise  # JSON that readers would see differently: refused, not guessed at
            return _NOT_JSON

    def _text(self, text: str, where: str, depth: int) -> str:
        """A string (a JSON value, a form value, a text part) with every image cleaned."""
        if len(text) < MIN_IMAGE:
            return text
        self._enter(depth, where)
        stripped = text.strip()
        if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
            doc = self._try_json(stripped, where)
            if doc is not _NOT_JSON:
                new, changed = self._doc(doc, f"{where}(json)", depth + 1, frozenset())
                if not changed:
                    return text
                start = text.find(stripped[0])
                return text[:start] + dump_json(new).decode("utf-8") + text[start + len(stripped) :]
            if "\n" in stripped:
                raw = stripped.encode("utf-8", "surrogatepass")
                lines = self._lines(raw, where, depth)
                if lines is not None:
                    if lines == raw:
                        return text
                    start = text.find(stripped[0])
                    return (
                        text[:start]
                        + lines.decode("utf-8", "surrogatepass")
                        + text[start + len(stripped) :]
                    )
        if not text.isascii():
            try:
                raw = text.encode("latin-1")
            except UnicodeEncodeError:
                pass
            else:  # characters that are bytes ("\u00ff\u00d8\u00ff..."): raw images inside
                if _raw_candidates(raw) or looks_like_image(raw):
                    new_raw = self._node(raw, None, where, depth)[0]
                    if new_raw != raw:
                        return new_raw.decode("latin-1")
        new = self._prose(text, where, depth)
        if new is text and "\\" in text:
            self._escaped(text, where, depth)
        return new

    def _ascii85(self, text: str, where: str, depth: int) -> str:
        """Ascii85 between ``<~`` and ``~>``, searched and written back alike (same line
        width); ``text`` itself when nothing changed."""
        edits: list[tuple[int, int, str]] = []
        for m in _ASCII85.finditer(text):
            try:
                raw = base64.a85decode(m.group(0), adobe=True, ignorechars=b" \t\r\n")
            except ValueError:
                continue
            if len(raw) < MIN_IMAGE:
                continue
            self._charge(len(raw), where)
            new, _ = self._node(raw, None, f"{where}(ascii85)", depth + 1)
            if new == raw:
                continue
            first = m.group(1).find("\n")
            wrap = first if first > 0 else 0
            edits.append(
                (m.start(), m.end(), base64.a85encode(new, adobe=True, wrapcol=wrap).decode())
            )
        return _splice(text, edits)

    def _escaped(self, text: str, where: str, depth: int) -> None:
        """Text with JSON-style escapes that did not parse as JSON: if undoing the escapes
        shows an image, it cannot be put back cleaned, so the request is refused."""
        if self._probing:
            return
        plain = _json_unescape(text)
        if plain != text and self._probe(plain.encode("utf-8", "surrogatepass"), where, depth):
            raise _unrewritable("behind backslash escapes", where)

    def _carriers(self, text: str, where: str, depth: int) -> str:
        """Base64, hex and percent-encoded runs and data URIs in ``text``, each decoded,
        searched and, when it held an image, put back in its own encoding. Returns ``text``
        itself when nothing changed."""
        spans: list[tuple[int, int, RunKind]] = []
        if "%" in text and _PCT.search(text) is not None:
            spans.extend(_percent_runs(text))
        spans.extend(list(_base64_runs(text, spans)))
        if not spans:
            return text
        spans.sort()
        edits: list[tuple[int, int, str]] = []
        for start, end, kind in spans:
            run = text[start:end]
            new = self._run(run, kind, f"{where}({kind})", depth + 1)
            pieces = [(start, end, new)]
            if new is _UNDECODABLE:
                # a run that swallowed neighbouring lines ("...base64\n--boundary--") or
                # escapes: its lines, or blocks of equal-length lines, one by one
                pieces = [
                    (a, b, self._run(text[a:b], kind, f"{where}({kind})", depth + 1))
                    for a, b in _sub_runs(text, start, end)
                ]
            if kind == "base64" and not any(isinstance(r, tuple) for _, _, r in pieces):
                # base64 of an image glued to a word ("photo:+/9j/4AAQ..."): from where an
                # image's base64 starts
                at = _image_b64_start(run)
                if 0 < at <= _MAX_GLUE and _whole_image(_decode_run(run[at:])):
                    a = start + at
                    pieces = [(a, end, self._run(text[a:end], kind, f"{where}({kind})", depth + 1))]
            for a, b, result in pieces:
                if isinstance(result, tuple):
                    edits += _data_head(text, edits[-1][1] if edits else 0, a, result[1])
                    edits.append((a, b, result[0]))
        return _splice(text, edits)

    def _run(
        self, run: str, kind: RunKind, where: str, depth: int
    ) -> tuple[str, str | None] | object:
        """A decoded and searched run: (its new text, the media type of the image it now is),
        None when it did not change, or ``_UNDECODABLE`` when it is not base64 as a whole."""
        if kind == "percent":
            safe = "/" if "/" in run else ""
            # In a form body "+" is a space; in a URI it is itself. Both readings are tried.
            for plus in (" ", "+") if "+" in run else ("+",):
                raw = urllib.parse.unquote_to_bytes(run.replace("+", plus) if plus == " " else run)
                if len(raw) < MIN_IMAGE:
                    return None
                self._charge(len(raw), where)
                new, _ = self._node(raw, None, where, depth)
                if new != raw:
                    text = urllib.parse.quote(new, safe=safe)
                    return (text.replace("%20", "+") if plus == " " else text), _media(new)
            return None
        unhexed = _unhex(run)
        if unhexed is not None:
            self._charge(len(unhexed), where)
            new, _ = self._node(unhexed, None, f"{where}(hex)", depth)
            if new != unhexed:
                return _hex_like(run, new), _media(new)
        if "\\" in run:
            return _UNDECODABLE  # its pieces between escapes are tried; see also _escaped
        # A run over several lines may have swallowed the words around a wrapped block
        # ("base64\r\n\r\n<lines>\r\n--boundary--"): when it does not decode whole to
        # something that changed, its lines and blocks are tried one by one.
        pieces = _UNDECODABLE if "\n" in run else None
        if pieces is not None and not _wrapped(run):
            return pieces  # lines of different widths: words around base64, not a block
        raw_b64 = _decode_run(run) if "=" not in run.rstrip("=") else None
        if raw_b64 is not None and len(raw_b64) >= MIN_IMAGE:
            self._charge(len(raw_b64), where)
            new, _ = self._node(raw_b64, None, where, depth)
            if new != raw_b64:
                return _Base64Style.of(run).encode(new), _media(new)
        unb32 = _b32decode(run)  # RFC 4648 base32: upper-case letters and 2-7 only
        if unb32 is not None and len(unb32) >= MIN_IMAGE:
            self._charge(len(unb32), where)
            new, _ = self._node(unb32, None, f"{where}(base32)", depth)
            if new != unb32:
                text = base64.b32encode(new).decode()
                return (text if run.endswith("=") else text.rstrip("=")), _media(new)
        return pieces

    # -- JSON --------------------------------------------------------------------------------

    def _doc(
        self, doc: Any, where: str, depth: int, skip: frozenset[tuple[Any, ...]]
    ) -> tuple[Any, bool]:
        changed = False
        found = list(_walk(doc, depth))
        # object keys last, the deepest first, so no renamed key breaks a path still to come
        found.sort(key=_keys_last)
        for path, value in found:
            if path in skip:
                continue
            at = where + dotted(path)
            if isinstance(path[-1:] and path[-1], _Key):
                new_key = self._text(value, at + "(key)", depth + 1)
                if new_key is not value:
                    _rename(doc, path, new_key)
                    changed = True
                continue
            if isinstance(value, str):
                new: Any = self._text(value, at, depth + 1)
                if new is value:
                    continue
                media = _media_of_text(new)
            else:
                raw = bytes(int(v) % 256 for v in value)
                out, _ = self._node(raw, None, at, depth + 1)
                if out == raw:
                    continue
                new, media = _same_numbers(value, out), _media(out)
            doc = _replace(doc, path, new)
            if media is not None:
                fix_mime(doc, path, media)
            changed = True
        return doc, changed

    # -- probes ------------------------------------------------------------------------------

    def _probe(self, data: bytes, where: str, depth: int) -> bool:
        """Does ``data`` hold an image anywhere (searched as a body, nothing rebuilt)? Shares
        this finder's budget; the probe itself does not start probes of its own."""
        if not data or not _might_hold(data):
            return False
        probe = Finder(_seen, max_bytes=max(self._room, 0))
        probe._probing = True
        try:
            probe._node(data, None, where, depth + 1)
        except (_Seen, Refused):
            return True  # an image, or one that could not be put back
        except RequestTooLarge:
            raise
        except RequestError:
            return False  # what does not parse as anything is not an image either
        finally:
            self._room = min(self._room, probe._room)
        return False


_NOT_JSON = object()
_UNDECODABLE = object()


class _Seen(Exception):
    """Raised by the probe finder of :meth:`Finder._escaped` at the first image."""


def _seen(data: bytes, where: str, role: Role) -> bytes:
    raise _Seen
