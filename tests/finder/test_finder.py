"""The image finder (issue 14): every image in any request shape is cleaned, or the request is
refused, on every door.

Shapes are built and taken apart again with the standard library (tests/shapes.py), so what
reached the wire is checked by code veilpix does not share: where the photo was, a clean
image must be, in the same encoding and container; the photo's owner name and serial number
must not show anywhere in the body in any encoding; the log must list the image.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import factories
from shapes import (
    Layer,
    Shape,
    ascii85,
    b32,
    b64,
    byte_array,
    chain,
    data_uri,
    gzipped,
    hexed,
    in_json,
    in_tar,
    in_zip,
    is_text,
    json_lines,
    leaks,
    listed_shapes,
    multipart,
    percent,
    unwrap_all,
)
from veilpix import AuditLog, Guard, Policy, RequestBlocked
from veilpix.finder import Finder, Refused
from veilpix.guard import Outbound
from veilpix.transports.httpx2 import GuardTransport
from wire import Upstream

PHOTO = factories.jpeg()
SHAPES = listed_shapes(PHOTO)
URL = "https://api.openai.com"


def check_clean_image(data: bytes) -> None:
    assert data[:3] == b"\xff\xd8\xff", data[:16]
    for secret in (factories.SECRET.encode(), factories.SERIAL.encode(), b"Exif\x00\x00"):
        assert secret not in data


def check_wire(body: bytes, shape: Shape) -> None:
    assert leaks(body) == []
    assert PHOTO not in body and b"Jane_Doe" not in body  # nor the file name
    check_clean_image(unwrap_all(body, list(shape.unwraps)))


def outbound(shape: Shape, url: str = URL) -> Outbound:
    headers = [("Content-Type", shape.content_type)] if shape.content_type else []
    return Outbound("POST", url + shape.path, headers, shape.body)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(tmp_path / "audit.db") as opened:
        yield opened


# =========================================================================== the guard itself


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_listed_shape_is_cleaned_in_place(name: str, log: AuditLog) -> None:
    shape = SHAPES[name]
    prepared = Guard(Policy(), log).prepare(outbound(shape))
    check_wire(prepared.request.body, shape)
    assert len(prepared.receipt.images) >= 1
    assert prepared.receipt.images[0].categories().get("gps")  # what left the photo
    prepared.finish(status=200)
    (record,) = log.records()
    assert len(record.what["images"]) >= 1 and "image" in record.what["categories"]


def test_content_type_follows_a_changed_format(log: AuditLog) -> None:
    """A HEIC in a data URI inside prose comes out as JPEG, and the URI says so."""
    pytest.importorskip("pillow_heif")
    heic = factories.heic()
    text = f"see ![x](data:image/heic;base64,{base64.b64encode(heic).decode()}) ok"
    body = json.dumps({"input": text}).encode()
    out = Guard(Policy(), log).prepare(
        Outbound("POST", f"{URL}/v1/responses", [("Content-Type", "application/json")], body)
    )
    sent = json.loads(out.request.body)["input"]
    assert sent.startswith("see ![x](data:image/jpeg;base64,") and sent.endswith(") ok")


def test_sibling_media_type_is_updated_in_nested_json(log: AuditLog) -> None:
    pytest.importorskip("pillow_heif")
    inner = {
        "inlineData": {
            "mimeType": "image/heic",
            "data": base64.b64encode(factories.heic()).decode(),
        }
    }
    body = json.dumps({"arguments": json.dumps(inner)}).encode()
    out = Guard(Policy(), log).prepare(
        Outbound("POST", f"{URL}/v1/responses", [("Content-Type", "application/json")], body)
    )
    sent = json.loads(json.loads(out.request.body)["arguments"])["inlineData"]
    assert sent["mimeType"] == "image/jpeg"
    check_clean_image(base64.b64decode(sent["data"]))


def test_bodies_without_images_pass_byte_for_byte(log: AuditLog) -> None:
    guard = Guard(Policy(), log)
    jwt = ".".join(
        base64.urlsafe_b64encode(json.dumps(p).encode()).decode().rstrip("=")
        for p in ({"alg": "HS256"}, {"sub": "customer-4711", "scope": "images"})
    )
    bodies = [
        (b"plain text with claude-3-5-sonnet-20241022 and /usr/local/bin/python3", "text/plain"),
        (
            f"token={jwt}&sha=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            "&pct=50%25%20off%21%21%21%21".encode(),
            "application/x-www-form-urlencoded",
        ),
        (b'{"a": 1}\n{"b": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 300]}\n', "application/x-ndjson"),
        (b"--not-a-multipart\r\nhello", None),
        (bytes(range(256)) * 40, "application/octet-stream"),
    ]
    for body, ctype in bodies:
        headers = [("Content-Type", ctype)] if ctype else []
        out = guard.prepare(Outbound("POST", f"{URL}/v1/files", headers, body))
        assert out.request.body == body, body[:60]
        assert out.receipt.images == ()
        out.finish(status=200)


def test_file_names_are_neutral_and_keep_their_extension(log: AuditLog) -> None:
    pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer\n%%EOF\n"
    body = (
        b'--B\r\nContent-Disposition: form-data; name="image"; filename="Jane_Doe_passport.heic"'
        b"\r\nContent-Type: image/jpeg\r\n\r\n" + PHOTO + b"\r\n"
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''J%C3%B6rg.pdf"
        b"\r\nContent-Type: application/pdf\r\n\r\n" + pdf + b"\r\n--B--\r\n"
    )
    out = Guard(Policy(), log).prepare(
        Outbound(
            "POST",
            f"{URL}/v1/images/edits",
            [("Content-Type", "multipart/form-data; boundary=B")],
            body,
        )
    )
    names = [(n, f) for n, f, _, _ in _form(out.request)]
    assert names == [("image", "image.jpg"), ("file", "file-2.pdf")]
    assert b"Jane" not in out.request.body and "rg.pdf" not in out.request.body.decode("latin-1")
    out.finish(status=200)
    (record,) = log.records()
    assert "document (PDF)" in record.what["categories"]
    assert "Jane" not in json.dumps(record.what) + json.dumps(record.where)


def _form(request: Outbound) -> list[tuple[str, str | None, str | None, bytes]]:
    from wire import Captured, form_parts

    headers = {k.lower(): v for k, v in request.headers}
    return form_parts(Captured("POST", request.url, headers, request.body))


# -- refusals -----------------------------------------------------------------------------------


def _blocked(log: AuditLog, body: bytes, ctype: str | None, **policy: Any) -> RequestBlocked:
    headers = [("Content-Type", ctype)] if ctype else []
    with pytest.raises(RequestBlocked) as info:
        Guard(Policy(**policy), log).prepare(Outbound("POST", f"{URL}/v1/responses", headers, body))
    record = list(log.records())[-1]
    assert record.outcome == "blocked" and record.finish["rule"] == info.value.rule
    return info.value


def _encrypted_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photo.jpg", PHOTO)
    data = bytearray(buf.getvalue())
    data[6] |= 1  # the local header's "encrypted" flag
    central = data.rfind(b"PK\x01\x02")
    data[central + 8] |= 1
    return bytes(data)


@pytest.mark.parametrize(
    ("what", "body", "ctype"),
    [
        ("a TIFF inside other bytes", b"header:" + factories.tiff(), "application/octet-stream"),
        ("an encrypted zip member", _encrypted_zip(), "application/zip"),
        ("a truncated JPEG after a prefix", b"xx" + PHOTO[:-200], None),
        (
            "base64 behind JSON escapes that do not parse",
            b'{"image": "' + base64.b64encode(PHOTO).replace(b"/", b"\\/") + b'", oops',
            "text/plain",
        ),
        (
            "an unknown Content-Transfer-Encoding",
            b"--B\r\nContent-Type: image/jpeg\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
            + PHOTO
            + b"\r\n--B--\r\n",
            "multipart/mixed; boundary=B",
        ),
    ],
)
def test_images_that_cannot_be_put_back_are_refused(
    what: str, body: bytes, ctype: str | None, log: AuditLog
) -> None:
    err = _blocked(log, body, ctype)
    assert err.rule == "image.unrewritable", (what, err)


def test_unsupported_image_formats_inside_json_are_refused(log: AuditLog) -> None:
    psd = (
        b"8BPS\x00\x01" + bytes(6) + b"\x00\x03" + (48).to_bytes(4, "big") * 2 + b"\x00\x08\x00\x03"
    )
    psd += bytes(40)
    body = json.dumps({"input": f"![x](data:image/png;base64,{base64.b64encode(psd).decode()})"})
    assert _blocked(log, body.encode(), "application/json").rule == "image.unsupported"


def test_documents_can_be_blocked(log: AuditLog) -> None:
    body = json.dumps({"file": base64.b64encode(b"%PDF-1.7\n" + bytes(64)).decode()}).encode()
    err = _blocked(log, body, "application/json", documents="block")
    assert err.rule == "upload.document" and "PDF" in err.message


def test_a_lone_surrogate_beside_an_image_is_a_recorded_block(log: AuditLog) -> None:
    uri = "data:image/jpeg;base64," + base64.b64encode(PHOTO).decode()
    body = b'{"a": "\\ud800", "b": "' + uri.encode() + b'"}'
    err = _blocked(log, body, "application/json")
    assert err.rule == "request.malformed" and "surrogate" in err.message


def test_nesting_and_bombs_are_bounded(log: AuditLog) -> None:
    deep = PHOTO
    for _ in range(40):
        deep = base64.b64encode(deep)
    assert _blocked(log, deep, "text/plain").rule == "request.too_large"
    bomb = gzip.compress(bytes(300 << 20))  # 300 MB of zeros, 300 KB compressed
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bomb.gz", bomb)
    assert _blocked(log, buf.getvalue(), None, max_request_bytes=64 << 20).rule == (
        "request.too_large"
    )


def test_finder_costs_nothing_on_bodies_without_a_trace() -> None:
    calls: list[str] = []

    def clean(data: bytes, where: str, role: str) -> bytes:
        calls.append(where)
        return data

    prose = ("describe the light and colour of this photograph, please. " * 2000).encode()
    body = json.dumps({"model": "m", "input": prose.decode()}).encode()
    assert not Finder.might_hold_image(body)
    out, ctype = Finder(clean).rewrite_body(body, "text/plain")
    assert out is body and ctype is None and calls == []


# =========================================================================== random nestings


@dataclass(frozen=True)
class _Step:
    name: str
    make: Callable[[bytes], Layer]
    needs_text: bool = False


_TEXT_STEPS = [
    _Step("json", lambda d: in_json(d, depth=1), True),
    _Step("json prose", lambda d: in_json(d, before="see ", after=" ok", depth=3), True),
    _Step("jsonl", json_lines, True),
    _Step("form field", lambda d: multipart(d, file=False), True),
]
_ANY_STEPS = [
    _Step("base64", b64),
    _Step("base64 url", lambda d: b64(d, urlsafe=True, pad=False)),
    _Step("base64 wrapped", lambda d: b64(d, wrap=64)),
    _Step("data uri", lambda d: data_uri(d, head="Data:image/jpeg;x=1;base64,")),
    _Step("hex", hexed),
    _Step("base32", b32),
    _Step("ascii85", lambda d: ascii85(d, wrap=64)),
    _Step("percent", percent),
    _Step("buffer", byte_array),
    _Step("zip", in_zip),
    _Step("tar", in_tar),
    _Step("gzip", gzipped),
    _Step("multipart mixed", lambda d: multipart(d, subtype="mixed")),
    _Step("multipart related b64", lambda d: multipart(d, subtype="related", transfer="base64")),
    _Step("form file", multipart),
]


@st.composite
def nestings(draw: st.DrawFn) -> list[_Step]:
    steps: list[_Step] = []
    text = False  # the photo is binary
    for _ in range(draw(st.integers(1, 4))):
        choices = _ANY_STEPS + (_TEXT_STEPS if text else [])
        step = draw(st.sampled_from(choices))
        steps.append(step)
        text = step.name not in ("zip", "tar", "gzip", "multipart mixed", "form file")
        if step.name.startswith("multipart related"):
            text = True
    return steps


_SEND_AS = ["declared", "text/plain", None, "application/octet-stream"]


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=nestings(), send_as=st.sampled_from(_SEND_AS), compress=st.booleans())
def test_random_nestings_never_leak(
    steps: list[_Step], send_as: str | None, compress: bool, tmp_path_factory: Any
) -> None:
    """Multipart in JSON in JSON Lines in zip, and so on, with the photo in a random encoding
    at a random depth, sent with a right, wrong or missing Content-Type, gzip-compressed or
    not: what reaches the wire never holds the photo, and where it was sits a clean image."""
    body, declared, unwraps = chain(PHOTO, *(s.make for s in steps))
    ctype = declared if send_as == "declared" else send_as
    if ctype is not None and ctype.startswith("multipart/") and send_as != "declared":
        ctype = None  # a multipart body without its boundary parameter is not a request
    headers = [("Content-Type", ctype)] if ctype else []
    if compress:
        body = gzip.compress(body)
        headers.append(("Content-Encoding", "gzip"))
    folder = tmp_path_factory.mktemp("nest")
    with AuditLog(folder / "a.db") as log:
        request = Outbound("POST", f"{URL}/v1/responses", headers, body)
        try:
            out = Guard(Policy(), log).prepare(request)
        except RequestBlocked as err:  # allowed only for what the finder cannot rebuild
            pytest.fail(f"{[s.name for s in steps]} sent as {ctype}: blocked {err.rule} {err}")
        wire = out.request.body
        assert leaks(wire) == [], [s.name for s in steps]
        assert PHOTO not in wire
        check_clean_image(unwrap_all(wire, unwraps))
        out.finish(status=200)


# =========================================================================== the three doors


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Callable[..., Any]]]:
    """send(shape) through each door -> (status, body that reached the vendor or None)."""
    pytest.importorskip("uvicorn")
    from interceptkit import H11Client, Running, TLSServer, request, tls
    from pki import VendorPKI
    from servers import FakeVendor, Server
    from veilpix._ca import Authority
    from veilpix.proxy import Gateway
    from veilpix.proxy._intercept import InterceptProxy
    from veilpix.proxy._upstream import UpstreamPool

    folder = tmp_path_factory.mktemp("doors")
    log = AuditLog(folder / "audit.db")
    upstream = Upstream()

    def transport(shape: Shape) -> tuple[int, bytes | None]:
        client = httpx2.Client(
            transport=GuardTransport(httpx2.MockTransport(upstream.handler2), log=log)
        )
        before = len(upstream.seen)
        headers = {"content-type": shape.content_type} if shape.content_type else {}
        try:
            reply = client.post(URL + shape.path, content=shape.body, headers=headers)
        except RequestBlocked:
            return 403, None
        return reply.status_code, upstream.last.body if len(upstream.seen) > before else None

    fake = FakeVendor()
    pki = VendorPKI.create(folder, "finder vendor root", "api.openai.com")
    plain = Server(fake).__enter__()
    secure = TLSServer(fake, pki).__enter__()
    host = f"127.0.0.1:{plain.port}"
    gateway_app = Gateway(
        {"": Guard(Policy(vendor_hosts={host: "openai"}), log)},
        base_urls={"openai": plain.url},
        max_body=20_000_000,
    )
    gateway = Server(gateway_app).__enter__()
    authority = Authority.init(folder / "ca")
    pool = UpstreamPool(
        resolve={"api.openai.com": ("127.0.0.1", secure.port)}, extra_ca=str(pki.ca)
    )
    intercept = Running(
        InterceptProxy(
            Gateway({"": Guard(Policy(), log)}, max_body=20_000_000, upstream=pool), authority
        )
    ).__enter__()

    def via_gateway(shape: Shape) -> tuple[int, bytes | None]:
        before = len(fake.seen)
        headers = {"content-type": shape.content_type} if shape.content_type else {}
        with httpx2.Client(timeout=30) as client:
            reply = client.post(
                f"{gateway.url}/openai{shape.path}", content=shape.body, headers=headers
            )
        return reply.status_code, fake.last.body if len(fake.seen) > before else None

    def via_intercept(shape: Shape) -> tuple[int, bytes | None]:
        import h11

        before = len(fake.seen)
        client = H11Client(tls(intercept.port, authority.cert_path))
        headers = [("content-length", str(len(shape.body)))]
        if shape.content_type:
            headers.append(("content-type", shape.content_type))
        client.send(
            request("POST", shape.path, *headers), h11.Data(data=shape.body), h11.EndOfMessage()
        )
        status, _, _ = client.response()
        client.sock.close()
        return status, fake.last.body if len(fake.seen) > before else None

    yield {"transport": transport, "gateway": via_gateway, "intercept": via_intercept}
    intercept.__exit__()
    for server in (gateway, secure, plain):
        server.__exit__()
    log.close()
    asyncio.set_event_loop(None)


@pytest.mark.parametrize("door", ["transport", "gateway", "intercept"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_every_shape_through_every_door(name: str, door: str, doors: Any) -> None:
    shape = SHAPES[name]
    status, got = doors[door](shape)
    assert status == 200 and got is not None, (door, status)
    check_wire(got, shape)


@pytest.mark.parametrize("door", ["transport", "gateway", "intercept"])
def test_refusals_send_nothing_on_every_door(door: str, doors: Any) -> None:
    shape = Shape(b"header:" + factories.tiff(), "application/octet-stream", ())
    status, got = doors[door](shape)
    assert status == 403 and got is None


@pytest.mark.parametrize("door", ["transport", "gateway", "intercept"])
def test_lone_surrogate_is_a_403_not_a_500(door: str, doors: Any) -> None:
    uri = "data:image/jpeg;base64," + base64.b64encode(PHOTO).decode()
    shape = Shape(b'{"a": "\\ud800", "b": "' + uri.encode() + b'"}', "application/json", ())
    status, got = doors[door](shape)
    assert status == 403 and got is None


def test_helpers_take_apart_what_they_build() -> None:
    """The shapes' own round trip, so a failing door test is about veilpix, not the helper."""
    for name, shape in SHAPES.items():
        assert unwrap_all(shape.body, list(shape.unwraps)) == PHOTO, name
    assert is_text(b"abc") and not is_text(PHOTO)
    assert tarfile.is_tarfile(io.BytesIO(in_tar(PHOTO).data))


# =========================================================================== found in review
# An adversarial review of the finder found each of these; kept so none comes back.

B64 = base64.b64encode(PHOTO).decode()


def _send(log: AuditLog, body: bytes, ctype: str | None) -> bytes:
    headers = [("Content-Type", ctype)] if ctype else []
    out = Guard(Policy(), log).prepare(Outbound("POST", f"{URL}/v1/responses", headers, body))
    out.finish(status=200)
    return out.request.body


def _j(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _zip_with_comment() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello")
        z.comment = B64.encode()
    return buf.getvalue()


_HEX_LINES = "\n".join(PHOTO.hex()[i : i + 60] for i in range(0, 2 * len(PHOTO), 60))
REVIEW_LEAKS: dict[str, tuple[bytes, str | None, Callable[[bytes], bytes]]] = {
    "an object key": (
        _j({"images": {B64: "photo"}}),
        "application/json",
        lambda o: base64.b64decode(next(iter(json.loads(o)["images"]))),
    ),
    "form value with + for spaces": (
        urllib.parse.urlencode({"prompt": "Here is the photo: " + B64}).encode(),
        "application/x-www-form-urlencoded",
        lambda o: base64.b64decode(urllib.parse.parse_qs(o.decode())["prompt"][0].split(": ")[1]),
    ),
    "Java byte[] through Gson (signed)": (
        _j({"photo": [b - 256 if b > 127 else b for b in PHOTO]}),
        "application/json",
        lambda o: bytes(b & 255 for b in json.loads(o)["photo"]),
    ),
    "bytes as floats": (
        _j({"photo": [float(b) for b in PHOTO]}),
        "application/json",
        lambda o: bytes(int(b) for b in json.loads(o)["photo"]),
    ),
    "zlib (pako) in base64": (
        _j({"blob": base64.b64encode(zlib.compress(PHOTO)).decode()}),
        "application/json",
        lambda o: zlib.decompress(base64.b64decode(json.loads(o)["blob"])),
    ),
    "zlib body": (zlib.compress(PHOTO), "application/octet-stream", zlib.decompress),
    "xxd -p hex lines": (
        _j({"hex": _HEX_LINES}),
        "application/json",
        lambda o: bytes.fromhex(json.loads(o)["hex"].replace("\n", "")),
    ),
    "UTF-16 text": (
        ("photo: " + B64).encode("utf-16"),
        "text/plain; charset=utf-16",
        lambda o: base64.b64decode(o.decode("utf-16").split(": ")[1]),
    ),
    "UTF-16 JSON without Content-Type": (
        json.dumps({"img": B64}).encode("utf-16"),
        None,
        lambda o: base64.b64decode(json.loads(o.decode("utf-16"))["img"]),
    ),
    "a multipart preamble": (
        PHOTO + b'\r\n--XyZ\r\nContent-Disposition: form-data; name="p"\r\n\r\nhi\r\n--XyZ--\r\n',
        "multipart/form-data; boundary=XyZ",
        lambda o: PHOTO if PHOTO in o else b"\xff\xd8\xff",
    ),
    "a multipart epilogue": (
        b'--XyZ\r\nContent-Disposition: form-data; name="p"\r\n\r\nhi\r\n--XyZ--\r\n'
        + B64.encode(),
        "multipart/form-data; boundary=XyZ",
        lambda o: b"\xff\xd8\xff",
    ),
    "a zip comment": (_zip_with_comment(), "application/zip", lambda o: b"\xff\xd8\xff"),
}


@pytest.mark.parametrize("name", list(REVIEW_LEAKS))
def test_review_shapes_are_cleaned(name: str, log: AuditLog) -> None:
    body, ctype, take_apart = REVIEW_LEAKS[name]
    wire = _send(log, body, ctype)
    assert leaks(wire) == [] and PHOTO not in wire
    check_clean_image(take_apart(wire))


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


_PROTO = b"\x0a\x05hello\x12" + _varint(len(PHOTO)) + PHOTO
_GZ = gzip.compress(_PROTO)


@pytest.mark.parametrize(
    ("what", "body", "ctype"),
    [
        ("repr(bytes) by mistake", _j({"data": repr(PHOTO)}), "application/json"),
        ("hex pairs with spaces", _j({"hex": " ".join(f"{b:02x}" for b in PHOTO)}), None),
        ("a C array", ", ".join(f"0x{b:02X}" for b in PHOTO).encode(), "text/plain"),
        (
            "msgpack bin32",
            b"\x82\xa4name\xa3img\xa4data\xc6" + len(PHOTO).to_bytes(4, "big") + PHOTO,
            "application/msgpack",
        ),
        (
            "a protobuf field in a gRPC frame",
            b"\x00" + len(_PROTO).to_bytes(4, "big") + _PROTO,
            "application/grpc",
        ),
        (
            "a gzip-compressed gRPC message",
            b"\x01" + len(_GZ).to_bytes(4, "big") + _GZ,
            "application/grpc",
        ),
    ],
)
def test_review_shapes_that_cannot_be_rebuilt_are_refused(
    what: str, body: bytes, ctype: str | None, log: AuditLog
) -> None:
    assert _blocked(log, body, ctype).rule == "image.unrewritable", what


@pytest.mark.parametrize(
    "text",
    [
        "Why does _write_docstring_and_traverse_body fail?",
        "Please review /workspace/project/src/components/main.py",
        "sha256 1f8b2a7c9d0e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c",
        "H4sIAAAAAAAAA_this_is_not_gzip_at_all_but_looks_like_it",
        "504b03040a0000000000000000000000000000000000000000000000000000",
        "The file starts with GIF89a then the width and the height",
        'if data[:3] == b"\\xff\\xd8\\xff": return "jpeg"  # and b"\\x89PNG" too',
        '{"name": "a", "name": "b"} is JSON with a duplicate key',
        "Recipe notes. " * 18 + "mustard" + " and more" * 40,
    ],
)
def test_review_prose_is_sent_unchanged(text: str, log: AuditLog) -> None:
    for body, ctype in (
        (_j({"model": "m", "input": text}), "application/json"),
        (text.encode(), "text/plain"),
    ):
        wire = _send(log, body, ctype)
        got = json.loads(wire)["input"] if ctype == "application/json" else wire.decode()
        assert got == text


def test_review_number_arrays_are_not_images(log: AuditLog) -> None:
    for values in ([0, 0, 1, 0] + [1, 0] * 12, [31, 139, 8, 0] + [1] * 30, [255, 10] + [7] * 30):
        wire = _send(
            log, _j({"model": "m", "input": "x", "metadata": {"mask": values}}), "application/json"
        )
        assert json.loads(wire)["metadata"]["mask"] == values


def test_review_words_next_to_base64_stay_words(log: AuditLog) -> None:
    unpadded = base64.b64encode(PHOTO + bytes(-len(PHOTO) % 3)).decode()
    for text, keep in (("look\n" + B64, "look\n"), (unpadded + "\nThanks, Jane", "\nThanks, Jane")):
        sent = json.loads(_send(log, _j({"t": text}), "application/json"))["t"]
        assert keep in sent and leaks(sent.encode()) == []
        assert "\n" not in sent.replace(keep, "")  # the cleaned base64 is one line, as it was


def test_review_utf16_json_stays_utf16(log: AuditLog) -> None:
    wire = _send(log, json.dumps({"img": B64}).encode("utf-16"), "application/json; charset=utf-16")
    assert wire[:2] == b"\xff\xfe"
    check_clean_image(base64.b64decode(json.loads(wire.decode("utf-16"))["img"]))


def test_review_odd_part_headers_are_clear_errors(log: AuditLog) -> None:
    superscript = (
        b'--X\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
        b"Content-Length: \xc2\xb2\r\n\r\n" + PHOTO + b"\r\n--X--\r\n"
    )
    err = _blocked(log, superscript, "multipart/form-data; boundary=X")
    assert err.rule == "request.malformed" and "Content-Length" in err.message
    latin = (
        b'--X\r\nContent-Disposition: form-data; name="f\xe4ld"\r\n\r\n' + PHOTO + b"\r\n--X--\r\n"
    )
    wire = _send(log, latin, "multipart/form-data; boundary=X")
    assert PHOTO not in wire and leaks(wire) == []
    (field,) = [i["field"] for r in log.records() for i in r.what["images"]]
    assert field.startswith("body[f\\") and field.endswith("ld]")  # escaped, readable


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Count the calls of ``Finder.<name>`` (the count is the list's one item)."""
    calls = [0]
    method = getattr(Finder, name)

    def counting(self: Finder, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return method(self, *args, **kwargs)

    monkeypatch.setattr(Finder, name, counting)
    return calls


def test_review_nested_escapes_take_polynomial_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each layer of escaped base64 used to start a probe that searched everything below it
    again: 2^n work. Now the probe starts no probes, and the work grows with n^2 at most."""
    calls = _count_calls(monkeypatch, "_node")
    text = "hello"
    for _ in range(18):
        text = "x \\y " + base64.b64encode(text.encode()).decode()
    Finder(lambda d, w, r: d).rewrite_body(text.encode(), "text/plain")
    assert calls[0] < 18 * 18 * 4, calls


def test_documents_setting_in_veilpix_toml(tmp_path: Path) -> None:
    from veilpix._config import load_config
    from veilpix._errors import ConfigError

    cfg = tmp_path / "veilpix.toml"
    cfg.write_text('[policy]\ndocuments = "block"\n\n[apps.shop]\ndocuments = "allow"\n')
    config = load_config(cfg)
    assert config.policy().documents == "block"
    assert config.policy("shop").documents == "allow"
    cfg.write_text('[policy]\ndocuments = "sometimes"\n')
    with pytest.raises(ConfigError, match="documents"):
        load_config(cfg).policy()


# -- a second review ----------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_binary_patches_are_cleaned_and_still_apply(tmp_path: Path, log: AuditLog) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    _git("commit", "-q", "--allow-empty", "-m", "empty", cwd=repo)
    (repo / "photo.jpg").write_bytes(PHOTO)
    _git("add", "photo.jpg", cwd=repo)
    diff = _git("diff", "--binary", "--cached", cwd=repo).stdout.decode()  # a new file
    assert "GIT binary patch" in diff and "literal" in diff
    wire = _send(log, _j({"model": "m", "input": "Review this:\n" + diff}), "application/json")
    sent = json.loads(wire)["input"].split("Review this:\n", 1)[1]
    assert leaks(sent.encode()) == []
    _git("rm", "-q", "--cached", "photo.jpg", cwd=repo)
    (repo / "photo.jpg").unlink()
    (tmp_path / "sent.diff").write_text(sent)
    _git("apply", str(tmp_path / "sent.diff"), cwd=repo)  # the new blob id was updated too
    check_clean_image((repo / "photo.jpg").read_bytes())
    # A changed photo is sent as a delta against the old one: not a file veilpix can clean.
    _git("add", "photo.jpg", cwd=repo)
    _git("commit", "-qm", "photo", cwd=repo)
    (repo / "photo.jpg").write_bytes(factories.jpeg(upright=factories.picture((40, 30))))
    delta = _git("diff", "--binary", cwd=repo).stdout.decode()
    assert "delta" in delta
    err = _blocked(log, _j({"model": "m", "input": delta}), "application/json")
    assert err.rule == "image.unrewritable" and "delta" in err.message


def _pcm(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


_QUIET_SPEECH = _pcm([3, -2, 5, 0] * 48 + [-1, -40, -32, -24, 7, 2, 0, 1])  # ff ff d8 ff e0 ff


def _pdf_with_scan() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj\n<< /Type /XObject /Subtype /Image /Filter /DCTDecode /Length "
        + str(len(PHOTO)).encode()
        + b" >>\nstream\n"
        + PHOTO
        + b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )


@pytest.mark.parametrize(
    ("what", "body", "ctype"),
    [
        (
            "/9j/ in a path",
            _j(
                {
                    "input": "see ./data/cache/9j/abcdefghijklmnopqrstuvwxyz0123456789",
                    "store": False,
                }
            ),
            "application/json",
        ),
        (
            "a truncated JPEG table in binary",
            b"\0" * 8 + b"\xff\xd8\xff\xdb\xa9\x00" + b"\0" * 30,
            "application/octet-stream",
        ),
        ("16-bit audio whose samples spell ff d8 ff", _QUIET_SPEECH, "audio/L16; rate=16000"),
        (
            "the same audio in base64",
            _j(
                {
                    "type": "input_audio_buffer.append",
                    "store": False,
                    "audio": base64.b64encode(_QUIET_SPEECH).decode(),
                }
            ),
            None,
        ),
        (
            "code holding signatures",
            b"x = b'\\x89PNG\\r\\n\\x1a\\n'\x00\x01" + b"GIF89a\x9c\x00\x7f" + bytes(range(256)),
            "application/octet-stream",
        ),
        (
            "deep brackets in prose",
            _j(
                {
                    "input": "x " + "[" * 500 + "]" * 500 + " /usr/lib/python3/dist-packages/foo",
                    "store": False,
                }
            ),
            "application/json",
        ),
    ],
)
def test_second_review_bodies_pass_unchanged(
    what: str, body: bytes, ctype: str | None, log: AuditLog
) -> None:
    assert _send(log, body, ctype) == body, what


def test_second_review_a_pdf_holding_a_scan_is_a_document(log: AuditLog) -> None:
    """The JPEG inside a PDF is the PDF's (sent whole and recorded as a document), never cut out
    of it: the PDF arrives byte for byte."""
    pdf = _pdf_with_scan()
    body = _j(
        {
            "input": [
                {
                    "type": "input_file",
                    "filename": "scan.pdf",
                    "file_data": "data:application/pdf;base64," + base64.b64encode(pdf).decode(),
                }
            ],
            "store": False,
        }
    )
    assert _send(log, body, "application/json") == body
    assert "document (PDF)" in list(log.records())[-1].what["categories"]


def test_second_review_zip_oddities_are_clear_errors_or_pass(log: AuditLog) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo(""), "x")  # a member with an empty name
        z.writestr("photo.jpg", PHOTO)
    wire = _send(log, buf.getvalue(), "application/zip")
    check_clean_image(zipfile.ZipFile(io.BytesIO(wire)).read("photo.jpg"))
    data = bytearray(_zip_with_comment())
    central = data.find(b"PK\x01\x02")
    data[central + 6] = 0xA3  # "version needed" 16.3: zipfile cannot read it
    assert _blocked(log, bytes(data), "application/zip").rule == "image.unrewritable"


def test_second_review_many_runs_take_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """20,000 base64 hashes, one a line (a go.sum, SHA256SUMS): each run is decoded once."""
    calls = _count_calls(monkeypatch, "_run")
    lines = "\n".join(base64.b64encode(os.urandom(32)).decode() for _ in range(20_000))
    out, _ = Finder(lambda d, w, r: d).rewrite_body(lines.encode(), "text/plain")
    assert out == lines.encode() and calls[0] <= 20_000


@pytest.mark.parametrize("order", ["little", "big"])
def test_a_bigtiff_inside_other_bytes_is_found_not_passed(order: str) -> None:
    """BigTIFF is a TIFF the registry reads, so the raw search looks for its signature too
    (tests/formats/test_registry.py keeps the two in step): inside other bytes it is refused like
    any image with no end to cut at, and a random "II+" without its fixed header is not one."""
    tifffile = pytest.importorskip("tifffile")
    import numpy as np

    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        np.zeros((8, 8, 3), np.uint8),
        bigtiff=True,
        byteorder="<" if order == "little" else ">",
        metadata={"Artist": "Jane"},
    )
    big = buf.getvalue()
    assert big[:4] in (b"II+\x00", b"MM\x00+")
    finder = Finder(lambda data, where, role: b"CLEAN")
    with pytest.raises(Refused, match="TIFF at byte 9"):
        finder.rewrite_body(
            b"\x01\x02header\x00" + big + b"\x00trailer", "application/octet-stream"
        )
    noise = b"\x01\x02" + big[:4] + b"\x05\x00\x00\x00" + bytes(range(256)) * 4
    assert finder.rewrite_body(noise, "application/octet-stream") == (noise, None)
