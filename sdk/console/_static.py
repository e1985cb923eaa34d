"""The console's own files: its stylesheet (the register's styles, which the register page
embeds, and the console's) and its one script. Both ship inside the package; nothing is
loaded from anywhere else."""

from __future__ import annotations

import functools
from importlib import resources

from veilpix.console._http import Response

__all__ = ["serve"]

_TYPES = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}


@functools.cache
def _file(name: str) -> bytes:
    data = resources.files("veilpix.console.static").joinpath(name).read_bytes()
    if name == "console.css":
        from veilpix.audit._html import CSS  # noqa: PLC0415 - read once, on first use

        data = CSS.encode() + b"\n" + data
    return data


def serve(path: str) -> Response:
    name = path.removeprefix("/static/")
    if name not in _TYPES:
        return Response(404, b"no such file\n", "text/plain; charset=utf-8")
    # the files change only with veilpix itself: a browser may keep them for an hour
    return Response(200, _file(name), _TYPES[name], [("Cache-Control", "private, max-age=3600")])
