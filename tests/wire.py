"""Capture what a transport would put on the wire, and take it apart with tools veilpix does not
use itself (the stdlib email parser for multipart, json for JSON), so the tests do not trust
veilpix's own codec to check veilpix's output."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import httpx
import httpx2


@dataclass
class Captured:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    """A fake vendor: records each request it gets and answers with ``reply``."""

    reply: Any = field(default_factory=lambda: {"ok": True})
    status: int = 200
    seen: list[Captured] = field(default_factory=list)

    def _capture(self, request: Any) -> Captured:
        body = request.read()
        got = Captured(request.method, str(request.url), dict(request.headers), body)
        self.seen.append(got)
        return got

    def handler2(self, request: httpx2.Request) -> httpx2.Response:
        self._capture(request)
        return httpx2.Response(
            self.status, json=self.reply, headers={"x-request-id": f"req_{len(self.seen)}"}
        )

    def handler(self, request: httpx.Request) -> httpx.Response:
        self._capture(request)
        return httpx.Response(
            self.status, json=self.reply, headers={"x-request-id": f"req_{len(self.seen)}"}
        )

    @property
    def last(self) -> Captured:
        return self.seen[-1]


def form_parts(got: Captured) -> list[tuple[str, str | None, str | None, bytes]]:
    """(field name, filename, content type, bytes) of each multipart part, in order."""
    ctype = got.headers["content-type"]
    assert ctype.startswith("multipart/form-data"), ctype
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + got.body
    )
    out = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out.append((str(name), filename, part.get_content_type() if filename else None, payload))
    return out


def json_body(got: Captured) -> Any:
    return json.loads(got.body)


def data_uri_bytes(uri: str) -> tuple[str, bytes]:
    head, _, data = uri.partition(",")
    assert head.startswith("data:") and head.endswith(";base64"), head
    return head[5:-7], base64.b64decode(data)
