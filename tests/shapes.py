"""Request shapes that carry an image, for the image finder's tests.

Each wrapper puts bytes into one more layer (an encoding or a container) and returns the new
bytes with an ``unwrap`` that takes the same layer apart again, using the standard library
only (json, base64, zipfile, tarfile, gzip, the email parser), never veilpix's own code. A
chain of wrappers builds a nested request; unwrapping what reached the wire, layer by layer,
gives back what veilpix put where the photo was, so a test can check that it is clean.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import itertools
import json
import tarfile
import urllib.parse
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import factories

Unwrap = Callable[[bytes], bytes]
_BOUNDARIES = itertools.count(1)  # nested multipart bodies need boundaries of their own


@dataclass(frozen=True)
class Layer:
    """One wrapping: the bytes it made, how to take them apart, and the Content-Type a body
    of this shape would be sent with."""

    data: bytes
    unwrap: Unwrap
    content_type: str | None = None
    name: str = ""


def is_text(data: bytes) -> bool:
    try:
        data.decode("ascii")
    except UnicodeDecodeError:
        return False
    return True


# -- encodings ------------------------------------------------------------------------------


def b64(data: bytes, *, urlsafe: bool = False, pad: bool = True, wrap: int = 0) -> Layer:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    if not pad:
        text = text.rstrip("=")
    if wrap:
        text = "\n".join(text[i : i + wrap] for i in range(0, len(text), wrap))

    def unwrap(got: bytes) -> bytes:
        s = got.decode().replace("\n", "").replace("\r", "").replace("-", "+").replace("_", "/")
        s = s.rstrip("=")
        return base64.b64decode(s + "=" * (-len(s) % 4))

    return Layer(
        text.encode(), unwrap, "text/plain", f"base64(urlsafe={urlsafe},pad={pad},wrap={wrap})"
    )


def b32(data: bytes, *, pad: bool = True) -> Layer:
    text = base64.b32encode(data).decode()
    text = text if pad else text.rstrip("=")

    def unwrap(got: bytes) -> bytes:
        s = got.decode().rstrip("=")
        return base64.b32decode(s + "=" * (-len(s) % 8))

    return Layer(text.encode(), unwrap, "text/plain", f"base32(pad={pad})")


def ascii85(data: bytes, *, wrap: int = 0) -> Layer:
    text = base64.a85encode(data, adobe=True, wrapcol=wrap)
    return Layer(
        text,
        lambda got: base64.a85decode(got, adobe=True, ignorechars=b" \t\r\n"),
        "text/plain",
        f"ascii85(wrap={wrap})",
    )


def data_uri(data: bytes, *, head: str = "data:image/jpeg;base64,") -> Layer:
    text = head + base64.b64encode(data).decode()

    def unwrap(got: bytes) -> bytes:
        front, _, payload = got.decode().partition(",")
        assert front.lower().startswith("data:"), front
        return base64.b64decode(payload)

    return Layer(text.encode(), unwrap, "text/plain", f"data URI {head!r}")


def hexed(data: bytes, *, upper: bool = False) -> Layer:
    text = data.hex().upper() if upper else data.hex()
    return Layer(text.encode(), binascii.unhexlify, "text/plain", "hex")


def percent(data: bytes) -> Layer:
    text = urllib.parse.quote_from_bytes(data, safe="")
    return Layer(text.encode(), urllib.parse.unquote_to_bytes, "text/plain", "percent")


def byte_array(data: bytes) -> Layer:
    doc = {"type": "Buffer", "data": list(data)}
    return Layer(
        json.dumps(doc).encode(),
        lambda got: bytes(json.loads(got)["data"]),
        "application/json",
        "Buffer",
    )


# -- text containers -------------------------------------------------------------------------


def in_json(
    data: bytes, *, key: str = "image", depth: int = 2, before: str = "", after: str = ""
) -> Layer:
    """``data`` (text) as a string value ``depth`` levels down, with prose around it."""
    value = before + data.decode() + after
    doc: Any = {key: value, "note": "a short prompt"}
    for level in range(depth):
        doc = {"model": "m", "items": [{"n": level}, doc]}

    def unwrap(got: bytes) -> bytes:
        node = json.loads(got)
        for _ in range(depth):
            node = node["items"][1]
        text = node[key]
        assert text.startswith(before) and text.endswith(after), text[:80]
        return text[len(before) : len(text) - len(after)].encode()

    return Layer(json.dumps(doc).encode(), unwrap, "application/json", f"json(depth={depth})")


def json_lines(data: bytes, *, line: int = 1) -> Layer:
    rows = [{"custom_id": f"r{i}", "body": {"prompt": "hi"}} for i in range(3)]
    rows[line]["body"]["image"] = data.decode()
    text = "\n".join(json.dumps(r) for r in rows) + "\n"

    def unwrap(got: bytes) -> bytes:
        lines = got.decode().splitlines()
        assert len(lines) == 3, lines
        return str(json.loads(lines[line])["body"]["image"]).encode()

    return Layer(text.encode(), unwrap, "application/x-ndjson", "jsonl")


def form_urlencoded(data: bytes) -> Layer:
    text = "prompt=a+cat&image=" + urllib.parse.quote(data.decode(), safe="") + "&n=1"

    def unwrap(got: bytes) -> bytes:
        return dict(urllib.parse.parse_qsl(got.decode()))["image"].encode()

    return Layer(text.encode(), unwrap, "application/x-www-form-urlencoded", "form-urlencoded")


# -- binary containers -----------------------------------------------------------------------


def in_zip(data: bytes, *, deflate: bool = True) -> Layer:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "batch of one")
        z.writestr(
            "inputs/photo.bin",
            data,
            compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED,
        )

    def unwrap(got: bytes) -> bytes:
        with zipfile.ZipFile(io.BytesIO(got)) as z:
            return z.read("inputs/photo.bin")

    return Layer(buf.getvalue(), unwrap, "application/zip", f"zip(deflate={deflate})")


def in_tar(data: bytes) -> Layer:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("inputs/photo.bin")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))

    def unwrap(got: bytes) -> bytes:
        with tarfile.open(fileobj=io.BytesIO(got)) as t:
            member = t.extractfile("inputs/photo.bin")
            assert member is not None
            return member.read()

    return Layer(buf.getvalue(), unwrap, "application/x-tar", "tar")


def gzipped(data: bytes) -> Layer:
    return Layer(gzip.compress(data), gzip.decompress, "application/gzip", "gzip")


def multipart(
    data: bytes,
    *,
    subtype: str = "form-data",
    transfer: str = "binary",
    file: bool = True,
    boundary: str = "",
) -> Layer:
    """``data`` as the second part of a multipart body that starts with its boundary (so it
    can be recognised without its Content-Type, as an inner layer must be)."""
    boundary = boundary or f"b0undary-{subtype}-{next(_BOUNDARIES)}"
    payload = data
    if transfer == "base64":
        payload = base64.encodebytes(data).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    elif transfer == "quoted-printable":
        payload = binascii.b2a_qp(data)
    if subtype == "form-data":
        disp = 'form-data; name="image"' + ('; filename="Jane_Doe_passport.jpg"' if file else "")
        first = 'Content-Disposition: form-data; name="prompt"\r\n\r\nput a hat on it'
    else:
        disp = 'attachment; filename="Jane_Doe_passport.jpg"' if file else "inline"
        first = 'Content-Type: application/json\r\n\r\n{"name": "upload"}'
    head = f"Content-Disposition: {disp}\r\n"
    head += "Content-Type: application/octet-stream\r\n" if file else ""
    head += f"Content-Transfer-Encoding: {transfer}\r\n" if transfer != "binary" else ""
    body = (f"--{boundary}\r\n{first}\r\n--{boundary}\r\n{head}\r\n").encode() + payload
    body += f"\r\n--{boundary}--\r\n".encode()
    ctype = f"multipart/{subtype}; boundary={boundary}"

    def unwrap(got: bytes) -> bytes:
        line = got[: got.index(b"\r\n")]
        assert line.startswith(b"--"), line
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: multipart/{subtype}; boundary=".encode() + line[2:] + b"\r\n\r\n" + got
        )
        parts = list(message.iter_parts())
        assert len(parts) == 2, parts
        out = parts[1].get_payload(decode=True)
        assert isinstance(out, bytes)
        return out

    return Layer(body, unwrap, ctype, f"multipart/{subtype}({transfer}, file={file})")


# -- the listed shapes -----------------------------------------------------------------------


def chain(photo: bytes, *steps: Callable[[bytes], Layer]) -> tuple[bytes, str | None, list[Unwrap]]:
    """Apply ``steps`` innermost first: (body, Content-Type of the outermost, unwraps)."""
    data = photo
    unwraps: list[Unwrap] = []
    ctype = None
    for step in steps:
        layer = step(data)
        data, ctype = layer.data, layer.content_type
        unwraps.append(layer.unwrap)
    return data, ctype, unwraps


def unwrap_all(wire: bytes, unwraps: list[Unwrap]) -> bytes:
    for unwrap in reversed(unwraps):
        wire = unwrap(wire)
    return wire


@dataclass(frozen=True)
class Shape:
    """A whole request: body, Content-Type to send (None: no header) and how to get back to
    what sits where the photo was."""

    body: bytes
    content_type: str | None
    unwraps: tuple[Unwrap, ...]
    path: str = "/v1/responses"


def _uri(data: bytes) -> Layer:
    return data_uri(data)


def _markdown(data: bytes) -> Layer:
    return in_json(data, key="content", before="look at this: ![x](", after=") thanks", depth=1)


def _tool_args(data: bytes) -> Layer:
    inner = {"image": data.decode(), "caption": "x"}
    doc = {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [{"function": {"name": "edit", "arguments": json.dumps(inner)}}],
            }
        ]
    }

    def unwrap(got: bytes) -> bytes:
        args = json.loads(got)["messages"][0]["tool_calls"][0]["function"]["arguments"]
        return str(json.loads(args)["image"]).encode()

    return Layer(json.dumps(doc).encode(), unwrap, "application/json", "tool arguments")


def listed_shapes(photo: bytes) -> dict[str, Shape]:
    """The twelve shapes of issue 14, and more of the same kind."""

    def make(
        *steps: Callable[[bytes], Layer],
        ctype: str | bool | None = True,
        path: str = "/v1/responses",
    ) -> Shape:
        body, outer, unwraps = chain(photo, *steps)
        sent = outer if ctype is True else (None if ctype is False else ctype)
        return Shape(body, sent if isinstance(sent, str) else None, tuple(unwraps), path)

    chat = lambda d: in_json(d, key="url", depth=2)  # noqa: E731
    shapes = {
        "multipart/related": make(lambda d: multipart(d, subtype="related")),
        "multipart/mixed": make(lambda d: multipart(d, subtype="mixed")),
        "form text field, base64": make(b64, lambda d: multipart(d, file=False)),
        "form text field, data URI": make(_uri, lambda d: multipart(d, file=False)),
        "form file, JSON Lines of data URIs": make(_uri, json_lines, multipart, path="/v1/files"),
        "JSON as text/plain": make(_uri, chat, ctype="text/plain"),
        "JSON without Content-Type, leading newline": make(
            _uri, chat, lambda d: Layer(b"\n" + d, lambda g: g.lstrip(b"\n")), ctype=False
        ),
        "JSON as application/x-ndjson": make(_uri, json_lines),
        "form-urlencoded data URI": make(_uri, form_urlencoded),
        "tool-call arguments": make(_uri, _tool_args),
        "markdown data URI": make(_uri, _markdown),
        "raw body after CRLF": make(
            lambda d: Layer(b"\r\n" + d, lambda g: g[2:]), ctype="application/octet-stream"
        ),
        # more of the same kind
        "URL-safe base64 without padding": make(lambda d: b64(d, urlsafe=True, pad=False), chat),
        "line-wrapped base64": make(lambda d: b64(d, wrap=76), chat),
        "hex string": make(hexed, chat),
        "upper-case hex": make(lambda d: hexed(d, upper=True), chat),
        "Node Buffer byte array": make(byte_array),
        "percent-encoded bytes": make(percent, ctype="text/plain"),
        "base32": make(b32, chat),
        "base32 without padding": make(lambda d: b32(d, pad=False), chat),
        "Ascii85, wrapped": make(lambda d: ascii85(d, wrap=72), chat),
        "data URI, odd case and parameters": make(
            lambda d: data_uri(d, head="DATA:Image/JPEG;name=x.jpg;charset=binary;BASE64,"), chat
        ),
        "zip member": make(in_zip),
        "stored zip member in JSON": make(lambda d: in_zip(d, deflate=False), b64, chat),
        "tar.gz member": make(in_tar, gzipped),
        "gzip without Content-Encoding": make(gzipped, ctype="application/octet-stream"),
        "multipart in a form part, base64 transfer": make(
            lambda d: multipart(d, subtype="mixed", transfer="base64"), multipart
        ),
        "quoted-printable part": make(lambda d: multipart(d, transfer="quoted-printable")),
        "JSON in JSON in JSON": make(_uri, chat, lambda d: in_json(d, depth=1), _tool_args),
        "bytes as latin-1 characters": make(
            lambda d: Layer(
                json.dumps({"image": d.decode("latin-1")}).encode(),
                lambda g: str(json.loads(g)["image"]).encode("latin-1"),
            ),
            ctype="application/json",
        ),
    }
    return shapes


SECRETS = (factories.SECRET.encode(), factories.SERIAL.encode())


def encodings_of(secret: bytes) -> list[bytes]:
    """``secret`` in every single-layer encoding the finder knows (base64 at each of the
    three alignments, core characters only)."""
    out = [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        urllib.parse.quote_from_bytes(secret, safe="").encode(),
        ", ".join(str(b) for b in secret).encode(),
        ",".join(str(b) for b in secret).encode(),
    ]
    for shift in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(b"\x00" * shift + secret)
            core = text[(shift * 4 + 2) // 3 + 1 : len(text) - 4]
            out.append(core)
    return out


def leaks(wire: bytes) -> list[str]:
    """Which secrets of the test photo show in ``wire`` in a single-layer encoding."""
    flat = wire.replace(b"\r", b"").replace(b"\n", b"").replace(b"\\/", b"/")
    return [
        f"{secret!r} as {form!r}"
        for secret in SECRETS
        for form in encodings_of(secret)
        if form in wire or form in flat
    ]
