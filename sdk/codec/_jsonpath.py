"""JSON paths: positions in a parsed document, and the adapters' path language.

A :data:`JsonPath` is a tuple of object keys and array indexes. :func:`get_at` and
:func:`replace_at` read and replace the value at one (``replace_at`` copies the containers
along the path, so the original document is untouched); :func:`select` evaluates the small
path language the vendor adapters declare their image fields in (``contents[*].parts[*]``,
``**.inlineData``, ``[?type=image_url]``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Literal

from veilpix.codec._limits import DEFAULT_MAX_DEPTH, _too_deep
from veilpix.codec._params import _QUOTED, _QUOTED_PAIR, _TOKEN

__all__ = ["JsonPath", "get_at", "replace_at", "select"]

JsonPath = tuple[str | int, ...]
"""A position in a parsed JSON document: object keys (str) and array indexes (int)."""


def _steppable(node: Any, step: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(step, str)
    return isinstance(node, list) and isinstance(step, int) and not isinstance(step, bool)


def get_at(doc: Any, path: JsonPath) -> Any:
    """The value at ``path``. Raises KeyError, IndexError or TypeError when it is absent."""
    node = doc
    for step in path:
        if _steppable(node, step):
            node = node[step]
        else:
            raise TypeError(f"cannot step into {type(node).__name__} with {step!r}")
    return node


def replace_at(doc: Any, path: JsonPath, new_value: Any) -> Any:
    """A copy of ``doc`` with the value at ``path`` replaced by ``new_value``.

    ``doc`` itself is not modified: the containers along ``path`` are copied (shallow), the
    rest is shared. Raises KeyError, IndexError or TypeError when ``path`` does not exist.
    """
    if not path:
        return new_value
    step, rest = path[0], path[1:]
    if isinstance(doc, dict) and isinstance(step, str):
        out_dict = dict(doc)
        out_dict[step] = replace_at(doc[step], rest, new_value)
        return out_dict
    if isinstance(doc, list) and isinstance(step, int) and not isinstance(step, bool):
        out_list = list(doc)
        out_list[step] = replace_at(doc[step], rest, new_value)
        return out_list
    raise TypeError(f"cannot step into {type(doc).__name__} with {step!r}")


@dataclass(frozen=True)
class _Step:
    kind: Literal["key", "index", "child", "items", "deep", "filter"]
    key: str = ""
    index: int = 0
    value: str | None = None  # filter: the value to match, None to test presence
    quoted: bool = False  # filter: the value was quoted, so it matches strings only


def _bracket_end(expr: str, pos: int) -> int:
    """The index of the ``]`` closing the ``[`` at ``pos`` (quotes may contain ``]``)."""
    i, quoted = pos + 1, False
    while i < len(expr):
        c = expr[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "]" and not quoted:
            return i
        i += 1
    raise ValueError(f"JSON path {expr!r}: '[' at {pos} is not closed")


def _path_string(expr: str, text: str) -> str:
    match = _QUOTED.fullmatch(text)
    if match is None:
        raise ValueError(f"JSON path {expr!r}: malformed quoted string {text!r}")
    return _QUOTED_PAIR.sub(r"\1", match.group(1))


@functools.lru_cache(maxsize=512)  # the adapters' few paths, compiled once
def _compile_path(expr: str) -> tuple[_Step, ...]:
    """Parse the adapters' path language; raises ValueError for a malformed expression."""
    steps: list[_Step] = []
    pos, n = 0, len(expr)
    need_segment = False  # after a dot
    while pos < n:
        c = expr[pos]
        if c == ".":
            if not steps or need_segment:
                raise ValueError(f"JSON path {expr!r}: empty segment at {pos}")
            need_segment, pos = True, pos + 1
            continue
        if c == "[":
            end = _bracket_end(expr, pos)
            inner = expr[pos + 1 : end]
            if inner == "*":
                steps.append(_Step("items"))
            elif inner.isascii() and inner.isdigit():
                steps.append(_Step("index", index=int(inner)))
            elif inner.startswith('"'):
                steps.append(_Step("key", key=_path_string(expr, inner)))
            elif inner.startswith("?"):
                name, eq, value = inner[1:].partition("=")
                name, value = name.strip(), value.strip()
                if _TOKEN.fullmatch(name) is None:
                    raise ValueError(f"JSON path {expr!r}: filter without a valid key at {pos}")
                quoted = value.startswith('"')
                if quoted:
                    value = _path_string(expr, value)
                steps.append(_Step("filter", key=name, value=value if eq else None, quoted=quoted))
            else:
                raise ValueError(f"JSON path {expr!r}: cannot read [{inner}]")
            need_segment, pos = False, end + 1
            continue
        if steps and not need_segment:
            raise ValueError(f"JSON path {expr!r}: missing '.' before position {pos}")
        end = pos
        while end < n and expr[end] not in ".[":
            end += 1
        name = expr[pos:end]
        if name == "**":
            steps.append(_Step("deep"))
        elif name == "*":
            steps.append(_Step("child"))
        else:
            steps.append(_Step("key", key=name))
        need_segment, pos = False, end
    if need_segment:
        raise ValueError(f"JSON path {expr!r} ends with a dot")
    return tuple(steps)


def _filter_matches(item: Any, step: _Step) -> bool:
    if not isinstance(item, dict) or step.key not in item:
        return False
    if step.value is None:
        return True
    found = item[step.key]
    if isinstance(found, str):
        return found == step.value
    if step.quoted or isinstance(found, dict | list):
        return False
    return json.dumps(found) == step.value


class _Found:
    """Selected nodes in order, each path once."""

    def __init__(self) -> None:
        self.items: list[tuple[JsonPath, Any]] = []
        self.seen: set[JsonPath] = set()

    def add(self, path: JsonPath, node: Any) -> bool:
        if path in self.seen:
            return False
        self.seen.add(path)
        self.items.append((path, node))
        return True


def select(doc: Any, path_expr: str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> list[JsonPath]:
    """The paths in ``doc`` that ``path_expr`` (the adapters' path language) selects.

    ``a.b`` walks object keys; ``*`` is every member or item; ``[*]`` every array item;
    ``[2]`` one array item; ``[?type=image_url]`` the array items (or the object itself)
    whose ``type`` is that value (``[?type="a.b"]`` quoted; unquoted values also match
    numbers, ``true``, ``false`` and ``null``; ``[?inlineData]`` tests presence);
    ``["a.b"]`` a key with dots in it; ``**`` any depth, including none (``**.inlineData``
    finds ``inlineData`` keys anywhere). The empty expression selects the root. Paths come
    in document order, each once. Raises ValueError for a malformed expression and
    :class:`~veilpix.RequestTooLarge` when ``**`` meets nesting deeper than ``max_depth``.
    """
    current: list[tuple[JsonPath, Any]] = [((), doc)]
    for step in _compile_path(path_expr):
        found = _Found()
        emit = found.add
        for path, node in current:
            if step.kind == "key":
                if isinstance(node, dict) and step.key in node:
                    emit((*path, step.key), node[step.key])
            elif step.kind == "index":
                if isinstance(node, list) and step.index < len(node):
                    emit((*path, step.index), node[step.index])
            elif step.kind in ("child", "items"):
                if isinstance(node, list):
                    for i, item in enumerate(node):
                        emit((*path, i), item)
                elif isinstance(node, dict) and step.kind == "child":
                    for key, item in node.items():
                        emit((*path, key), item)
            elif step.kind == "filter":
                if isinstance(node, list):
                    for i, item in enumerate(node):
                        if _filter_matches(item, step):
                            emit((*path, i), item)
                elif _filter_matches(node, step):
                    emit(path, node)
            else:  # deep: the node and everything below it, each subtree walked once
                stack = [(path, node)]
                while stack:
                    sub_path, sub = stack.pop()
                    if not emit(sub_path, sub):
                        continue
                    if isinstance(sub, dict | list):
                        if len(sub_path) >= max_depth:
                            raise _too_deep(max_depth)
                        items = sub.items() if isinstance(sub, dict) else enumerate(sub)
                        stack.extend(reversed([((*sub_path, k), v) for k, v in items]))
        current = found.items
    return [path for path, _ in current]
