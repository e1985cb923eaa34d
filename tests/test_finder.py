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
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapes import (
    Layer,
    Shape,
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
from wire import Upstream

import factories
from veilpix import AuditLog, Guard, Policy, RequestBlocked
from veilpix._finder import Finder
from veilpix._guard import Outbound
from veilpix.transports.httpx2 import GuardTransport

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
    inner = {"inlineData": {"mimeType": "image/heic",
                            "data": base64.b64encode(factories.heic()).decode()}}  # fmt: skip
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
    psd = b"8BPS\x00\x01" + bytes(40)
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
    from pki import TestCA, cert_pem, key_pem
    from servers import FakeVendor, Server
    from test_intercept import H11Client, Running, TLSServer, VendorPKI, request, tls

    from veilpix._ca import Authority
    from veilpix.proxy import Gateway
    from veilpix.proxy._intercept import InterceptProxy
    from veilpix.proxy._upstream import UpstreamPool

    folder = tmp_path_factory.mktemp("doors")
    log = AuditLog(folder / "audit.db")
    upstream = Upstream()

    def transport(shape: Shape) -> tuple[int, bytes | None]:
        client = httpx2.Client(transport=GuardTransport(httpx2.MockTransport(upstream.handler2),
                                                        log=log))  # fmt: skip
        before = len(upstream.seen)
        headers = {"content-type": shape.content_type} if shape.content_type else {}
        try:
            reply = client.post(URL + shape.path, content=shape.body, headers=headers)
        except RequestBlocked:
            return 403, None
        return reply.status_code, upstream.last.body if len(upstream.seen) > before else None

    fake = FakeVendor()
    import ipaddress

    ca = TestCA.create("finder vendor root")
    cert, key = ca.leaf("api.openai.com", ipaddress.IPv4Address("127.0.0.1"))
    pki = VendorPKI(ca.write(folder / "ca.pem"), folder / "cert.pem", folder / "key.pem")
    pki.cert.write_bytes(cert_pem(cert))
    pki.key.write_bytes(key_pem(key))
    plain = Server(fake).__enter__()
    secure = TLSServer(fake, pki).__enter__()
    host = f"127.0.0.1:{plain.port}"
    gateway_app = Gateway({"": Guard(Policy(vendor_hosts={host: "openai"}), log)},
                          base_urls={"openai": plain.url}, max_body=20_000_000)  # fmt: skip
    gateway = Server(gateway_app).__enter__()
    authority = Authority.init(folder / "ca")
    pool = UpstreamPool(resolve={"api.openai.com": ("127.0.0.1", secure.port)},
                        extra_ca=str(pki.ca))  # fmt: skip
    intercept = Running(
        InterceptProxy(
            Gateway({"": Guard(Policy(), log)}, max_body=20_000_000, upstream=pool), authority
        )
    ).__enter__()

    def via_gateway(shape: Shape) -> tuple[int, bytes | None]:
        before = len(fake.seen)
        headers = {"content-type": shape.content_type} if shape.content_type else {}
        with httpx2.Client(timeout=30) as client:
            reply = client.post(f"{gateway.url}/openai{shape.path}", content=shape.body,
                                headers=headers)  # fmt: skip
        return reply.status_code, fake.last.body if len(fake.seen) > before else None

    def via_intercept(shape: Shape) -> tuple[int, bytes | None]:
        import h11

        before = len(fake.seen)
        client = H11Client(tls(intercept.port, authority.cert_path))
        headers = [("content-length", str(len(shape.body)))]
        if shape.content_type:
            headers.append(("content-type", shape.content_type))
        client.send(request("POST", shape.path, *headers), h11.Data(data=shape.body),
                    h11.EndOfMessage())  # fmt: skip
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
