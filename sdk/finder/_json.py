"""The finder's view of JSON: the strings and byte arrays a document may carry images in.

:func:`_walk` lists, without recursion, every string long enough to hold an image (object
keys too) and every array of byte values (Node's ``Buffer``, Java's ``byte[]``);
:func:`_json_spans` finds JSON values inside prose. The rest puts a cleaned value back:
renamed keys keep their order, byte arrays keep their number style, and the media-type field
beside a rewritten image (``mimeType``, ``media_type``) names the format now sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from veilpix._errors import RequestError, RequestTooLarge
from veilpix.codec import DEFAULT_MAX_DEPTH, JSON_DECODER
from veilpix.finder._base import MAX_MEMBERS, MIN_IMAGE, _label


def whole_json(data: bytes | str) -> bool:
    """Is ``data`` one JSON document (duplicate keys allowed)?"""
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


def _json_spans(text: str) -> list[tuple[int, int, Any]]:
    """JSON objects and arrays of at least 12 characters inside ``text``, with their spans;
    at most :data:`MAX_MEMBERS` attempts (what is not tried is still searched as text)."""
    spans: list[tuple[int, int, Any]] = []
    pos = 0
    for _ in range(MAX_MEMBERS):
        brace, bracket = text.find("{", pos), text.find("[", pos)
        start = min(brace, bracket) if brace >= 0 and bracket >= 0 else max(brace, bracket)
        if start < 0:
            break
        try:
            value, end = JSON_DECODER.raw_decode(text, start)
        except RecursionError:
            pos = start + 1  # nested past any reader's limit: prose, searched as text
            continue
        except json.JSONDecodeError as exc:
            # an opener inside the part that did not parse fails at the same place: skip
            # them all (what they hold is still searched as text)
            pos = max(start + 1, exc.pos)
            continue
        except (ValueError, RequestError):
            pos = start + 1
            continue
        if end - start >= 12 and not (start == 0 and end == len(text)):
            spans.append((start, end, value))
            pos = end
        else:
            pos = start + 1
    return spans


def _walk(doc: Any, depth: int) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Strings that may carry something, and arrays of byte values, with their paths."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if len(node) >= MIN_IMAGE:
                yield path, node
            continue
        if isinstance(node, list):
            if len(node) >= MIN_IMAGE and _byte_array(node):
                yield path, node
                continue
            if len(path) + depth > DEFAULT_MAX_DEPTH:
                raise _TooDeep("the JSON is nested too deep to search")
            stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, dict):
            if len(path) + depth > DEFAULT_MAX_DEPTH:
                raise _TooDeep("the JSON is nested too deep to search")
            for key in node:
                if len(key) >= MIN_IMAGE:  # an image can be an object key, too
                    yield (*path, _Key(key)), key
            stack.extend(((*path, k), v) for k, v in reversed(list(node.items())))


class _TooDeep(RequestTooLarge):
    """JSON nested deeper than veilpix searches (inside prose: searched as text instead)."""


class _Key(str):
    """A path step naming an object key itself (not the value under it)."""

    __slots__ = ()


def _keys_last(item: tuple[tuple[Any, ...], Any]) -> tuple[int, int]:
    path = item[0]
    return (1, -len(path)) if path and isinstance(path[-1], _Key) else (0, 0)


def _byte_array(node: list[Any]) -> bool:
    """Bytes as JSON numbers: 0..255 (Node's Buffer), -128..127 (Java's byte[] through Gson),
    or either written as floats (255.0)."""
    first = node[0]
    if type(first) not in (int, float) or not -128 <= first <= 255:
        return False
    return all(
        type(v) in (int, float) and -128 <= v <= 255 and (type(v) is int or v.is_integer())
        for v in node
    )


def _same_numbers(original: list[Any], data: bytes) -> list[Any]:
    """``data`` as numbers written the way ``original`` wrote them (signed, floats)."""
    signed = any(v < 0 for v in original)
    values = [b - 256 if signed and b > 127 else b for b in data]
    return [float(v) for v in values] if type(original[0]) is float else values


def _rename(doc: Any, path: tuple[Any, ...], new_key: str) -> None:
    """Rename the key ``path[-1]`` of the object at ``path[:-1]``, keeping the order."""
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    items = [(new_key if k == path[-1] else k, v) for k, v in parent.items()]
    if new_key in parent:
        raise RequestError("an object key holding an image would collide with another key")
    parent.clear()
    parent.update(items)


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


_MIME_KEYS = ("mimeType", "mime_type", "media_type", "mediaType", "content_type", "contentType")


def fix_mime(doc: Any, path: tuple[Any, ...], media_type: str) -> None:
    """Update the media-type field beside a string that is now an image (Gemini
    ``inlineData.mimeType``, Anthropic ``source.media_type``) so it names the format sent."""
    if not path:
        return
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict):
        for key in _MIME_KEYS:
            if isinstance(parent.get(key), str):
                parent[key] = media_type


def dotted(path: tuple[Any, ...]) -> str:
    return "".join(
        f"[{p}]"
        if isinstance(p, int)
        else f"[key {len(p)} chars]"
        if isinstance(p, _Key)
        else f".{_label(p)}"
        for p in path
    )
