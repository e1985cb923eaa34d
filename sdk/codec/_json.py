"""JSON bodies: load and dump them strictly, and find the images, URLs and texts they carry.

:func:`load_json` refuses what two readers could see differently (duplicate keys, nesting
past the limit); :func:`dump_json` writes the compact UTF-8 form to send after a rewrite.
:func:`scan_json` walks a document once, without recursion, for the images (data URIs and
bare base64, :class:`JsonImage`), the URLs a vendor may download (:class:`JsonUrl`) and the
strings at text keys (:class:`JsonText`: prompts, message content, system instructions).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from veilpix._errors import RequestError, RequestTooLarge
from veilpix.codec._datauri import looks_like_base64_image, parse_data_uri
from veilpix.codec._jsonpath import JsonPath
from veilpix.codec._limits import BASE64_MIN_LEN, DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, _too_deep
from veilpix.formats._sniff import MEDIA_TYPES, media_type, sniff

__all__ = [
    "JSON_DECODER",
    "SYSTEM_KEYS",
    "SYSTEM_ROLES",
    "TEXT_KEYS",
    "JsonImage",
    "JsonText",
    "JsonUrl",
    "dump_json",
    "find_images_in_json",
    "find_urls_in_json",
    "image_in_string",
    "iter_strings",
    "load_json",
    "scan_json",
]

# Keys whose string values (or arrays of strings) are text a person, or the app for them,
# wrote: chat and message content, Gemini parts, prompts. Under SYSTEM_KEYS, or in a message
# whose role is in SYSTEM_ROLES, the text is instructions to the model rather than a prompt.
PROMPT_KEYS = frozenset(
    {
        "prompt",
        "negative_prompt",
        "text_prompt",
        "style_prompt",
        "search_prompt",
        "select_prompt",
        "background_prompt",
        "foreground_prompt",
    }
)
TEXT_KEYS = PROMPT_KEYS | {"text", "content", "input"}
SYSTEM_KEYS = frozenset({"system", "instructions", "systemInstruction", "system_instruction"})
SYSTEM_ROLES = frozenset({"system", "developer"})


class JsonText(NamedTuple):
    """A string at a text key (see ``TEXT_KEYS``): ``system`` when it instructs the model."""

    path: JsonPath
    system: bool
    text: str


_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31})://[^\s/?#]")
_WHITESPACE = re.compile(r"\s")


def load_json(
    body: bytes | str, *, max_depth: int = DEFAULT_MAX_DEPTH, max_bytes: int = DEFAULT_MAX_BYTES
) -> Any:
    """Parse a JSON request body, refusing what two readers could see differently.

    Raises :class:`~veilpix.RequestError` for invalid JSON and for an object with a
    duplicate key (veilpix would check one value, the vendor might use the other), and
    :class:`~veilpix.RequestTooLarge` for nesting deeper than ``max_depth`` or a body over
    ``max_bytes``.
    """
    if len(body) > max_bytes:
        raise RequestTooLarge(f"the JSON body is larger than {max_bytes} bytes")

    try:
        # json.loads(body, object_pairs_hook=...) but with one decoder for all calls (loads
        # would build a decoder and its scanner every time)
        if isinstance(body, str):
            if body.startswith("\ufeff"):
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", body, 0)
            text = body
        else:
            text = body.decode(json.detect_encoding(body), "surrogatepass")
        doc = JSON_DECODER.decode(text)
    except RecursionError as exc:
        raise RequestTooLarge(f"the JSON body is nested more than {max_depth} levels deep") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise RequestError(f"the request body is not valid JSON: {exc}") from exc
    opened = (
        body.count("[") + body.count("{")
        if isinstance(body, str)
        else (body.count(b"[") + body.count(b"{"))
    )
    if opened >= max_depth:  # fewer brackets than that cannot nest that deep
        _strings_to_check(doc, max_depth=max_depth, min_len=None)
    return doc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise RequestError(
            f"the JSON body has the key {key!r} twice in one object; refusing to "
            "guess which one the vendor reads"
        )
    return out


JSON_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def dump_json(doc: Any) -> bytes:
    """``doc`` as compact UTF-8 JSON (the form to send after :func:`replace_at`).

    Raises :class:`~veilpix.RequestError` when a string holds a lone surrogate
    (``"\\ud800"``), which UTF-8 cannot carry: the body is malformed text."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(
            "the JSON body holds a lone UTF-16 surrogate (such as \\ud800), which is not "
            "valid Unicode text; refusing to rebuild it"
        ) from exc


def iter_strings(doc: Any, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Iterator[tuple[JsonPath, str]]:
    """Every string value in ``doc`` (not keys) with its path, in document order.

    Iterative (no recursion); raises :class:`~veilpix.RequestTooLarge` when containers nest
    deeper than ``max_depth``.
    """
    stack: list[tuple[JsonPath, Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            yield path, node
        elif isinstance(node, dict | list):
            if len(path) >= max_depth:
                raise _too_deep(max_depth)
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend(reversed([((*path, k), v) for k, v in items]))


def _strings_to_check(
    doc: Any, *, max_depth: int, min_len: int | None, texts: list[JsonText] | None = None
) -> list[tuple[JsonPath, str]]:
    """The strings in ``doc`` that may be an image or a URL (at least ``min_len`` characters
    long, or holding a colon as ``data:`` and ``https://`` do), with their paths, in document
    order; none when ``min_len`` is None. Checks nesting like :func:`iter_strings`, and
    builds no path for anything else (most of a request's strings are short prose). With
    ``texts``, the strings at text keys are added to it in the same walk."""

    shortest = sys.maxsize if min_len is None else min_len
    strings = min_len is not None
    if not isinstance(doc, dict | list):
        keep = strings and isinstance(doc, str) and (len(doc) >= shortest or ":" in doc)
        return [((), doc)] if keep else []
    if texts is not None:
        return _strings_and_texts(doc, max_depth, shortest if strings else None, texts)
    found: list[tuple[JsonPath, str]] = []
    stack: list[tuple[JsonPath, Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            found.append((path, node))
            continue
        if len(path) >= max_depth:
            raise _too_deep(max_depth)
        items = node.items() if isinstance(node, dict) else enumerate(node)
        kids = [
            ((*path, k), v)
            for k, v in items
            if (
                (strings and (len(v) >= shortest or ":" in v))
                if isinstance(v, str)
                else isinstance(v, dict | list)
            )
        ]
        kids.reverse()
        stack.extend(kids)
    return found


# Flags of a node on the walk of _strings_and_texts.
_SYSTEM, _TEXT_ITEMS, _IS_TEXT, _CANDIDATE = 1, 2, 4, 8


def _strings_and_texts(
    doc: Any, max_depth: int, shortest: int | None, texts: list[JsonText]
) -> list[tuple[JsonPath, str]]:
    """:func:`_strings_to_check` that also lists the strings at text keys in ``texts``, in
    document order. ``shortest`` None: no image or URL candidates."""
    found: list[tuple[JsonPath, str]] = []
    stack: list[tuple[JsonPath, Any, int]] = [((), doc, 0)]
    while stack:
        path, node, flags = stack.pop()
        if isinstance(node, str):
            if flags & _CANDIDATE:
                found.append((path, node))
            if flags & _IS_TEXT:
                texts.append(JsonText(path, bool(flags & _SYSTEM), node))
            continue
        if len(path) >= max_depth:
            raise _too_deep(max_depth)
        inherited = flags & _SYSTEM
        kids: list[tuple[JsonPath, Any, int]] = []
        if isinstance(node, dict):
            role = node.get("role")
            if isinstance(role, str) and role in SYSTEM_ROLES:
                inherited = _SYSTEM
            for k, v in node.items():
                system = inherited | (_SYSTEM if k in SYSTEM_KEYS else 0)
                textual = k in TEXT_KEYS or k in SYSTEM_KEYS
                if isinstance(v, str):
                    f = system | (_IS_TEXT if textual else 0)
                    if shortest is not None and (len(v) >= shortest or ":" in v):
                        f |= _CANDIDATE
                    if f & (_IS_TEXT | _CANDIDATE):
                        kids.append(((*path, k), v, f))
                elif isinstance(v, dict | list):
                    items = _TEXT_ITEMS if textual and isinstance(v, list) else 0
                    kids.append(((*path, k), v, system | items))
        else:
            for i, v in enumerate(node):
                if isinstance(v, str):
                    f = inherited | (_IS_TEXT if flags & _TEXT_ITEMS else 0)
                    if shortest is not None and (len(v) >= shortest or ":" in v):
                        f |= _CANDIDATE
                    if f & (_IS_TEXT | _CANDIDATE):
                        kids.append(((*path, i), v, f))
                elif isinstance(v, dict | list):
                    kids.append(((*path, i), v, inherited))
        kids.reverse()
        stack.extend(kids)
    return found


@dataclass(frozen=True)
class JsonImage:
    """An image found in a JSON string.

    ``media_type`` is what the bytes are (sniffed); for a data URI whose bytes veilpix does
    not recognise, it is the declared type, so ``sanitize()`` refuses it (fail closed).
    ``declared_type`` and ``params`` are the data URI's own, to rebuild it alike.
    """

    path: JsonPath
    kind: Literal["data_uri", "base64"]
    media_type: str
    data: bytes = field(repr=False)
    declared_type: str | None = None
    params: tuple[tuple[str, str], ...] = ()


def _sniffed_type(data: bytes) -> str | None:
    return media_type(data)


def image_in_string(
    path: JsonPath, value: str, *, min_len: int = BASE64_MIN_LEN
) -> JsonImage | None:
    """The image ``value`` carries (a data URI, or bare base64 of an image), or None.

    A data URI counts when its bytes sniff as an image or it declares an ``image/*`` type
    (then an unrecognised image such as SVG is still reported, and refused downstream). A
    ``data:image/...`` string that does not parse raises :class:`~veilpix.RequestError`:
    an image veilpix cannot read must not leave unchecked.
    """
    if value[:5].lower() == "data:":
        try:
            uri = parse_data_uri(value)
        except RequestError:
            if value[5:11].lower() == "image/":
                raise
            return None
        if uri is None:
            if value[5:11].lower() == "image/":
                raise RequestError(f"a data:image URI at {list(path)} is malformed")
            return None
        sniffed = _sniffed_type(uri.data)
        if sniffed is None and not uri.media_type.startswith("image/"):
            return None
        return JsonImage(
            path, "data_uri", sniffed or uri.media_type, uri.data, uri.media_type, uri.params
        )
    data = looks_like_base64_image(value, min_len=min_len)
    if data is None:
        return None
    return JsonImage(path, "base64", MEDIA_TYPES[sniff(data)], data)


def find_images_in_json(
    doc: Any, *, min_len: int = BASE64_MIN_LEN, max_depth: int = DEFAULT_MAX_DEPTH
) -> list[JsonImage]:
    """Every image carried in a JSON string anywhere in ``doc``, in document order (see
    :func:`image_in_string`). URLs are not fetched; see :func:`find_urls_in_json`."""
    return scan_json(doc, min_len=min_len, url_schemes=(), max_depth=max_depth)[0]


def scan_json(
    doc: Any,
    *,
    min_len: int | None = BASE64_MIN_LEN,
    url_schemes: Iterable[str] = ("http", "https", "gs", "s3"),
    max_depth: int = DEFAULT_MAX_DEPTH,
    texts: list[JsonText] | None = None,
) -> tuple[list[JsonImage], list[JsonUrl]]:
    """:func:`find_images_in_json` and :func:`find_urls_in_json` in one walk; with
    ``min_len=None`` it looks for URLs only. ``texts`` (a list) also gets, in the same walk,
    every string at a text key (``TEXT_KEYS``: prompts, message content, Gemini parts)."""
    wanted = {s.lower() for s in url_schemes}
    images: list[JsonImage] = []
    urls: list[JsonUrl] = []
    candidates = _strings_to_check(
        doc,
        max_depth=max_depth,
        min_len=sys.maxsize if min_len is None else min_len,
        texts=texts,
    )
    for path, value in candidates:
        if min_len is not None:
            image = image_in_string(path, value, min_len=min_len)
            if image is not None:
                images.append(image)
        if wanted and "://" in value:
            url = _as_url(path, value, wanted)
            if url is not None:
                urls.append(url)
    return images, urls


class JsonUrl(NamedTuple):
    """A JSON string that is a URL (a vendor may download what it points to)."""

    path: JsonPath
    url: str
    scheme: str  # lower-cased


def find_urls_in_json(
    doc: Any,
    *,
    schemes: Iterable[str] = ("http", "https", "gs", "s3"),
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> list[JsonUrl]:
    """Every JSON string that is, as a whole (surrounding whitespace aside), an absolute URL
    with one of ``schemes`` (``gs://`` and ``s3://`` are how Gemini/Vertex and Bedrock name
    stored files). URLs inside prose are not reported; ``data:`` URIs are images, see
    :func:`find_images_in_json`."""
    return scan_json(doc, min_len=None, url_schemes=schemes, max_depth=max_depth)[1]


def _as_url(path: JsonPath, value: str, wanted: set[str]) -> JsonUrl | None:
    url = value.strip()
    match = _URL_SCHEME.match(url)
    if match is None or match.group(1).lower() not in wanted or _WHITESPACE.search(url):
        return None
    return JsonUrl(path, url, match.group(1).lower())
