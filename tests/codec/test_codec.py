"""The request codec (veilpix.codec): content codings, multipart/form-data, data URIs,
base64 images and JSON paths. Round trips, real-world bodies built by httpx and httpx2 the way
the OpenAI SDK builds them, and hostile input that must fail closed, fast and small."""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import gzip
import io
import json
import random
import struct
import tracemalloc
import types
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import factories as F
from veilpix import codec as C
from veilpix._errors import (
    MalformedMultipart,
    RequestError,
    RequestTooLarge,
    UnsupportedEncoding,
    VeilpixError,
)
from veilpix.codec import _datauri, _encoding, _json, _multipart

MB = 1 << 20


@pytest.fixture(scope="module")
def jpg() -> bytes:
    return F.jpeg()


@pytest.fixture(scope="module")
def png() -> bytes:
    return F.png()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# =========================================================================== content coding
def deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("header", [None, "", "identity", " Identity "])
def test_identity_is_untouched(header: str | None) -> None:
    assert C.decode_body(b"plain", header) == b"plain"
    assert C.encode_body(b"plain", header) == b"plain"


@pytest.mark.parametrize(
    ("header", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("GZip", gzip.compress),
        ("deflate", zlib.compress),  # RFC 9110: zlib format
        ("deflate", deflate_raw),  # what some clients send instead
    ],
)
def test_decode(header: str, encode: Callable[[bytes], bytes]) -> None:
    body = b'{"prompt": "a cat"}' * 100
    assert C.decode_body(encode(body), header) == body


def test_multi_member_gzip() -> None:
    assert C.decode_body(gzip.compress(b"one ") + gzip.compress(b"two"), "gzip") == b"one two"


@pytest.mark.parametrize("header", ["gzip", "deflate", "gzip, deflate", "deflate,gzip , gzip"])
def test_encode_decode_round_trip(header: str) -> None:
    body = bytes(range(256)) * 50
    encoded = C.encode_body(body, header)
    assert encoded != body
    assert C.decode_body(encoded, header) == body


def test_stacked_codings_are_undone_in_reverse_order() -> None:
    body = b"x" * 1000
    stacked = zlib.compress(gzip.compress(body))  # gzip first, then deflate
    assert C.decode_body(stacked, "gzip, deflate") == body
    with pytest.raises(RequestError):
        C.decode_body(stacked, "deflate, gzip")


def test_many_gzip_members() -> None:
    members = b"".join(gzip.compress(b"x", mtime=0) for _ in range(20_000))
    assert C.decode_body(members, "gzip") == b"x" * 20_000


@pytest.mark.parametrize(
    ("header", "encode"), [("gzip", gzip.compress), ("deflate", zlib.compress)]
)
def test_large_bodies_cost_little_more_than_their_size(
    header: str, encode: Callable[[bytes, int], bytes]
) -> None:
    noise = random.Random(2).randbytes(8 * MB)  # incompressible: 8 MB in, 8 MB out
    encoded = encode(noise, 1)
    assert C.decode_body(encoded, header, max_bytes=9 * MB) == noise
    # input is fed in 64 KiB steps: no copy of the whole remaining input per step
    assert peak_of(lambda: C.decode_body(encoded, header, max_bytes=9 * MB)) < 20 * MB


def test_parse_content_encoding() -> None:
    assert C.parse_content_encoding(None) == []
    assert C.parse_content_encoding(" X-GZIP, identity,,br ") == ["gzip", "br"]
    assert C.parse_content_type('Image/PNG; Name="a;b" ; q=1') == (
        "image/png",
        {"name": "a;b", "q": "1"},
    )
    with pytest.raises(RequestError, match="two 'q'"):
        C.parse_content_type("a/b; q=1; Q=2")


def test_empty_body_with_a_coding() -> None:
    assert C.decode_body(b"", "gzip") == b""


@pytest.mark.parametrize(
    ("body", "header", "error", "words"),
    [
        (b"x", "compress", UnsupportedEncoding, "compress"),
        (b"x", "gzip, gzip, gzip, gzip, gzip", RequestTooLarge, "5 times"),
        (b"not gzip at all", "gzip", RequestError, "does not start like gzip"),
        (gzip.compress(b"a" * 1000, mtime=0)[:-12], "gzip", RequestError, "truncated"),
        (gzip.compress(b"abc", mtime=0) + b"junk", "gzip", RequestError, "trailing"),
        (zlib.compress(b"abc") + b"junk", "deflate", RequestError, "trailing"),
        (b"\x1f\x8b\x08\x00" + b"\xff" * 40, "gzip", RequestError, "not valid gzip"),
        (b"\xff" * 40, "deflate", RequestError, "deflate"),
    ],
)
def test_bad_bodies(body: bytes, header: str, error: type[VeilpixError], words: str) -> None:
    with pytest.raises(error, match=words) as info:
        C.decode_body(body, header)
    assert info.value.hint  # house style: every error says what to do


@pytest.fixture(scope="module")
def gzip_gigabyte() -> bytes:
    """A valid gzip file of 1 GiB of zeros (about 1 MB), built without compressing 1 GiB:
    after a full flush, deflate codes identical input as identical blocks."""
    zeros = bytes(16 * MB)
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush()[:-8]
    crc = 0
    for _ in range(64):
        crc = zlib.crc32(zeros, crc)
    return first + block * 63 + end + struct.pack("<II", crc, (64 * 16 * MB) & 0xFFFFFFFF)


def peak_of(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
    except VeilpixError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_gzip_bomb_is_capped(gzip_gigabyte: bytes) -> None:
    assert len(gzip_gigabyte) < 2 * MB
    with pytest.raises(RequestTooLarge, match="larger than 4194304 bytes"):
        C.decode_body(gzip_gigabyte, "gzip", max_bytes=4 * MB)
    # Decoding stops at the limit: memory stays near max_bytes, not near 1 GiB.
    assert peak_of(lambda: C.decode_body(gzip_gigabyte, "gzip", max_bytes=4 * MB)) < 16 * MB


def test_stacked_bomb_is_capped(gzip_gigabyte: bytes) -> None:
    twice = gzip.compress(gzip_gigabyte)  # the outer layer decodes to 1 MB, the inner explodes
    assert peak_of(lambda: C.decode_body(twice, "gzip, gzip", max_bytes=4 * MB)) < 20 * MB
    with pytest.raises(RequestTooLarge):
        C.decode_body(twice, "gzip, gzip", max_bytes=4 * MB)


def test_deflate_bomb_is_capped() -> None:
    bomb = zlib.compress(bytes(64 * MB), 9)
    with pytest.raises(RequestTooLarge):
        C.decode_body(bomb, "deflate", max_bytes=MB)
    assert peak_of(lambda: C.decode_body(bomb, "deflate", max_bytes=MB)) < 8 * MB


def test_compressed_body_over_the_limit() -> None:
    with pytest.raises(RequestTooLarge):
        C.decode_body(b"x" * 101, "gzip", max_bytes=100)


@pytest.mark.parametrize(("header", "package"), [("br", "brotli"), ("zstd", "zstandard")])
def test_missing_optional_library(
    monkeypatch: pytest.MonkeyPatch, header: str, package: str
) -> None:
    monkeypatch.setattr(_encoding, "_optional", lambda *names: None)
    with pytest.raises(UnsupportedEncoding, match=f"'{package}' package is not installed") as info:
        C.decode_body(b"\x00\x01", header)
    assert "pip install" in info.value.hint
    with pytest.raises(UnsupportedEncoding, match=package):
        C.encode_body(b"x", header)


class FakeBrotliDecompressor:
    """brotli >= 1.2's Decompressor API (process with output_buffer_limit,
    can_accept_more_data, is_finished), decoding to ``total`` zero bytes."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.calls = 0

    def process(self, data: bytes, output_buffer_limit: int | None = None) -> bytes:
        self.calls += 1
        assert output_buffer_limit is not None  # veilpix must always bound the output
        n = min(self.left, output_buffer_limit)
        self.left -= n
        return bytes(n)

    def can_accept_more_data(self) -> bool:
        return False

    def is_finished(self) -> bool:
        return self.left == 0


def fake_module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def test_brotli_output_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeBrotliDecompressor] = []

    def decompressor(total: int) -> Callable[[], FakeBrotliDecompressor]:
        def make() -> FakeBrotliDecompressor:
            made.append(FakeBrotliDecompressor(total))
            return made[-1]

        return make

    brotli = fake_module("brotli", error=ValueError, Decompressor=decompressor(1 << 40))
    monkeypatch.setattr(_encoding, "_optional", lambda *names: brotli)
    with pytest.raises(RequestTooLarge):
        C.decode_body(b"bomb", "br", max_bytes=3 * MB)
    assert made[-1].calls <= 5  # stopped right after the limit, not after 1 TiB
    brotli.Decompressor = decompressor(5000)
    assert C.decode_body(b"small", "br", max_bytes=3 * MB) == bytes(5000)


def test_old_brotli_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Old:
        def process(self, data: bytes) -> bytes:
            raise AssertionError("an unbounded decoder must not be run")

    monkeypatch.setattr(
        _encoding, "_optional", lambda *names: fake_module("brotli", Decompressor=Old)
    )
    with pytest.raises(UnsupportedEncoding, match=r"older than 1\.2"):
        C.decode_body(b"x", "br")


def test_zstd_output_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []

    class Reader:
        def read(self, n: int) -> bytes:
            reads.append(n)
            return bytes(n)  # an endless frame

    class Dctx:
        def __init__(self, max_window_size: int) -> None:
            assert max_window_size == 8 * MB  # RFC 9659

        def stream_reader(self, source: io.BytesIO, read_across_frames: bool) -> Reader:
            assert read_across_frames
            return Reader()

    zstd = fake_module("zstandard", ZstdDecompressor=Dctx, ZstdError=ValueError)
    monkeypatch.setattr(_encoding, "_optional", lambda *names: zstd)
    with pytest.raises(RequestTooLarge):
        C.decode_body(b"bomb", "zstd", max_bytes=3 * MB)
    assert len(reads) <= 4 and max(reads) <= MB


@pytest.mark.parametrize(("header", "module"), [("br", "brotli"), ("zstd", "zstandard")])
def test_real_optional_codings(header: str, module: str) -> None:
    pytest.importorskip(module)
    body = b"round trip " * 1000
    assert C.decode_body(C.encode_body(body, header), header) == body


# =========================================================================== multipart
def openai_images_edit(client: Any, image: bytes, image2: bytes, mask: bytes) -> tuple[bytes, str]:
    """The request ``client.images.edit(image=[...], mask=..., prompt=..., model=...)`` makes:
    the OpenAI SDK (resources/images.py) extracts files with
    ``paths=[["image"], ["image", "<array>"], ["mask"]]`` into ``image[]`` and ``mask`` parts
    and hands them with the scalar fields to httpx's multipart encoder. Files the caller
    opened carry their name; the encoder guesses the part's Content-Type from it."""
    named = io.BytesIO(image2)
    named.name = "/home/jane/Pictures/IMG_0042.JPG"
    request = client.Request(
        "POST",
        "https://api.openai.com/v1/images/edits",
        data={"prompt": "Add a hat", "model": "gpt-image-1", "n": "1", "size": "1024x1024"},
        files=[
            ("image[]", ("photo.png", image, "image/png")),
            ("image[]", named),
            ("mask", ("mask.png", mask, "image/png")),
        ],
    )
    return request.read(), request.headers["Content-Type"]


@pytest.mark.parametrize("client", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_openai_images_edit_body(client: Any, png: bytes, jpg: bytes) -> None:
    body, content_type = openai_images_edit(client, png, jpg, png)
    parsed = C.parse_multipart(body, content_type)
    assert content_type == f"multipart/form-data; boundary={parsed.boundary}"
    fields = [(p.name, p.filename, p.content_type, p.data) for p in parsed.parts]
    assert fields == [
        ("prompt", None, None, b"Add a hat"),
        ("model", None, None, b"gpt-image-1"),
        ("n", None, None, b"1"),
        ("size", None, None, b"1024x1024"),
        ("image[]", "photo.png", "image/png", png),
        ("image[]", "IMG_0042.JPG", "image/jpeg", jpg),
        ("mask", "mask.png", "image/png", png),
    ]
    assert [p.is_file for p in parsed.named("image[]")] == [True, True]
    rebuilt, rebuilt_type = C.build_multipart(parsed.parts)
    assert rebuilt_type != content_type  # a fresh boundary
    assert C.parse_multipart(rebuilt, rebuilt_type).parts == parsed.parts
    # Byte for byte what httpx sent, but for the boundary.
    new = C.parse_multipart(rebuilt, rebuilt_type).boundary.encode()
    assert rebuilt.replace(new, parsed.boundary.encode()) == body


def test_build_matches_an_independent_reader(png: bytes) -> None:
    parts = [
        C.Part("prompt", data=b"a cat\r\n--not a boundary"),
        C.Part("image[]", 'my "1" \\ 2.png', "image/png", data=png),
    ]
    body, content_type = C.build_multipart(parts)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    assert message.is_multipart()
    read = list(message.iter_parts())  # type: ignore[attr-defined]
    assert [m.get_param("name", header="content-disposition") for m in read] == [
        "prompt",
        "image[]",
    ]
    assert read[1].get_filename() == 'my "1" \\ 2.png'
    assert read[1].get_content_type() == "image/png"


def test_header_injection_through_names_is_impossible() -> None:
    evil = 'x"; filename="evil.sh"\r\nContent-Type: text/html\r\nX-Injected: 1\r\n\r\nowned'
    body, content_type = C.build_multipart([C.Part(evil, evil, "image/png", data=b"img")])
    assert b"\r\nX-Injected" not in body and b"\r\nContent-Type: text/html" not in body
    (part,) = C.parse_multipart(body, content_type).parts
    assert part.content_type == "image/png" and part.headers == () and part.data == b"img"
    expected = evil.replace("\r", "%0D").replace("\n", "%0A")  # as browsers and httpx do
    assert part.name == expected and part.filename == expected


@pytest.mark.parametrize(
    "name", ['say "hi"', "back\\slash", "end\\", '\\"', "semi;colon=1", "caf\u00e9 \u2603", "%22"]
)
def test_awkward_names_round_trip(name: str) -> None:
    parts = (C.Part(name, name, data=b"x"),)
    assert C.parse_multipart(*C.build_multipart(parts)).parts == parts


def test_fresh_boundary_never_occurs_in_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = "veilpix-" + "0" * 32
    offered = iter([taken, taken, "veilpix-" + "1" * 32])
    monkeypatch.setattr(_multipart, "_new_boundary", lambda: next(offered))
    parts = [
        C.Part("image", "a.png", "image/png", data=b"before\r\n--" + taken.encode() + b"--\r\n")
    ]
    body, content_type = C.build_multipart(parts)
    assert content_type.endswith("1" * 32)
    assert C.parse_multipart(body, content_type).parts == tuple(parts)


def test_given_boundary_that_occurs_is_refused() -> None:
    with pytest.raises(MalformedMultipart, match="occurs inside a part"):
        C.build_multipart([C.Part("a", data=b"xx--abc--")], boundary="abc")
    with pytest.raises(MalformedMultipart, match="occurs inside a part"):
        C.build_multipart([C.Part("abc")], boundary="abc")
    body, content_type = C.build_multipart([C.Part("a", data=b"x")], boundary="a b:c=d")
    assert content_type == 'multipart/form-data; boundary="a b:c=d"'
    assert C.parse_multipart(body, content_type).boundary == "a b:c=d"


@pytest.mark.parametrize(
    "part",
    [
        C.Part("a", headers=(("X-Bad", "one\r\nX-Injected: 1"),)),
        C.Part("a", headers=(("Bad Name", "v"),)),
        C.Part("a", headers=(("Content-Type", "image/png"),)),
        C.Part("a", headers=(("content-disposition", "form-data"),)),
        C.Part("a", headers=(("Content-Length", "1"),)),
        C.Part("a", headers=(("Content-Transfer-Encoding", "base64"),)),
        C.Part("a", content_type="image/png\r\nX-Injected: 1"),
        C.Part("a", content_type="multipart/mixed; boundary=x"),
        C.Part("a", content_type=""),
    ],
)
def test_build_refuses_bad_headers(part: C.Part) -> None:
    with pytest.raises(MalformedMultipart):
        C.build_multipart([part])


# --------------------------------------------------------------------------- round-trip property
_NO_CTL = "".join(map(chr, range(0x20))) + "\x7f"
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters=_NO_CTL), max_size=20)
fragments = st.sampled_from([b"\r\n", b"--", b"\r\n\r\n", b"veilpix-", b"\n", b"\r", b'"', b"\x00"])
datas = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(fragments, st.binary(max_size=8)), max_size=30).map(b"".join),
)
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=30
).map(lambda s: s.strip(" "))
parts_strategy = st.lists(
    st.builds(
        C.Part,
        name=texts,
        filename=st.none() | texts,
        content_type=st.none()
        | st.sampled_from(
            ["image/png", "image/jpeg", "text/plain; charset=utf-8", 'image/png; name="a;b"']
        ),
        headers=st.lists(
            st.tuples(st.sampled_from(["X-Trace", "x-custom", "Content-ID"]), header_values),
            max_size=3,
        ).map(tuple),
        data=datas,
    ),
    max_size=6,
)


@given(parts_strategy)
@settings(max_examples=300, deadline=None)
def test_parse_build_round_trip(parts: list[C.Part]) -> None:
    body, content_type = C.build_multipart(parts)
    parsed = C.parse_multipart(body, content_type)
    assert parsed.parts == tuple(parts)
    assert parsed.line_ending == "\r\n"


# --------------------------------------------------------------------------- parsing real-world variations
B = "XyZ"
CT = f"multipart/form-data; boundary={B}"


def form(*chunks: bytes) -> bytes:
    return b"".join(chunks)


SIMPLE = form(
    b"--XyZ\r\n",
    b'Content-Disposition: form-data; name="prompt"\r\n\r\n',
    b"a cat\r\n",
    b"--XyZ\r\n",
    b'Content-Disposition: form-data; name="image"; filename="a.png"\r\n',
    b"Content-Type: image/png\r\n\r\n",
    b"\x89PNG\r\n\x1a\nDATA\r\n",
    b"--XyZ--\r\n",
)
SIMPLE_PARTS = (
    C.Part("prompt", data=b"a cat"),
    C.Part("image", "a.png", "image/png", data=b"\x89PNG\r\n\x1a\nDATA"),
)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (SIMPLE, CT),
        (SIMPLE, 'multipart/form-data; boundary="XyZ"'),
        (SIMPLE, "Multipart/Form-Data;charset=utf-8;BOUNDARY=XyZ"),
        (b"This is the preamble.\r\n" + SIMPLE + b"This is the epilogue.\r\n", CT),
        (SIMPLE[:-2], CT),  # no line end after the closing boundary
        (SIMPLE.replace(b"--XyZ\r\n", b"--XyZ \t\r\n"), CT),  # transport padding
    ],
)
def test_accepted_variations(body: bytes, content_type: str) -> None:
    assert C.parse_multipart(body, content_type).parts == SIMPLE_PARTS


def test_lf_only_bodies_are_accepted_when_consistent() -> None:
    lf = SIMPLE.replace(b"\r\n", b"\n")
    parsed = C.parse_multipart(lf, CT)
    assert parsed.line_ending == "\n"
    assert [(p.name, p.filename) for p in parsed.parts] == [("prompt", None), ("image", "a.png")]
    assert parsed.parts[1].data == b"\x89PNG\n\x1a\nDATA"  # the data's own bytes are untouched
    # In an LF body a CR before the boundary line belongs to the data.
    lf_cr = lf.replace(b"a cat\n", b"a cat\r\n")
    assert C.parse_multipart(lf_cr, CT).parts[0].data == b"a cat\r"


@pytest.mark.parametrize(
    "body",
    [
        SIMPLE.replace(b"a cat\r\n--XyZ\r\n", b"a cat\n--XyZ\r\n"),  # LF before a CRLF boundary
        SIMPLE.replace(b"a cat\r\n--XyZ\r\n", b"a cat\r\n--XyZ\n"),  # boundary line ends in LF
        SIMPLE.replace(b"\r\n", b"\n").replace(b"a cat\n--XyZ\n", b"a cat\n--XyZ\r\n"),
    ],
)
def test_mixed_line_ends_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedMultipart, match="mixes CRLF and bare LF"):
        C.parse_multipart(body, CT)


def test_filename_star() -> None:
    body = form(
        b"--XyZ\r\n",
        b'Content-Disposition: form-data; name="f"; filename="EURO rates.png"; '
        b"filename*=UTF-8''%e2%82%ac%20rates.png\r\n\r\n",
        b"x\r\n--XyZ\r\n",
        b"Content-Disposition: form-data; name=f2; filename*0*=UTF-8''%e2%82%ac;"
        b' filename*1=" two.png"\r\n\r\n',
        b"y\r\n--XyZ\r\n",
        b"Content-Disposition: form-data; name=\"f3\"; filename*=iso-8859-1'de'caf%E9.png\r\n\r\n",
        b"z\r\n--XyZ\r\n",
        'Content-Disposition: form-data; name="f4"; filename="caf\u00e9.png"\r\n\r\n'.encode(),
        b"w\r\n--XyZ--\r\n",
    )
    files = [p.filename for p in C.parse_multipart(body, CT).parts]
    assert files == ["\u20ac rates.png", "\u20ac two.png", "caf\u00e9.png", "caf\u00e9.png"]


def test_parts_without_content_type_and_with_extra_headers() -> None:
    body = form(
        b"--XyZ\r\n",
        b"content-disposition: form-data; name=empty\r\n",
        b"X-Trace:   abc  \r\n",
        b"Content-Transfer-Encoding: binary\r\n",
        b"Content-Length: 0\r\n\r\n",
        b"\r\n--XyZ--\r\n",
    )
    (part,) = C.parse_multipart(body, CT).parts
    assert part == C.Part(
        "empty", None, None, (("X-Trace", "abc"), ("Content-Transfer-Encoding", "binary")), b""
    )
    assert part.media_type is None and not part.is_file


REFUSED: list[tuple[str, bytes, str, type[VeilpixError], str]] = [
    ("no boundary param", SIMPLE, "multipart/form-data", MalformedMultipart, "no boundary"),
    ("empty boundary", SIMPLE, "multipart/form-data; boundary=", MalformedMultipart, "empty"),
    ("71-char boundary", SIMPLE, "multipart/form-data; boundary=" + "a" * 71, MalformedMultipart, "71 characters"),
    ("control in boundary", SIMPLE, "multipart/form-data; boundary=\"a\x01\"", MalformedMultipart, "does not allow"),
    ("two boundaries", SIMPLE, CT + "; boundary=other", MalformedMultipart, "two 'boundary'"),
    ("not form-data", SIMPLE, "application/json", MalformedMultipart, "not multipart/form-data"),
    ("top-level mixed", SIMPLE, "multipart/mixed; boundary=XyZ", MalformedMultipart, "multipart/mixed"),
    ("boundary absent", b"hello", CT, MalformedMultipart, "never contains"),
    ("unterminated", SIMPLE[: SIMPLE.rindex(b"--XyZ--")], CT, MalformedMultipart, "without its closing boundary"),
    ("truncated mid-part", SIMPLE[:60], CT, MalformedMultipart, "without its closing boundary"),
    ("boundary inside data", SIMPLE.replace(b"a cat", b"a cat --XyZ"), CT, MalformedMultipart, "inside part 1"),
    ("boundary-prefixed line", SIMPLE.replace(b"a cat", b"a\r\n--XyZW\r\ncat"), CT, MalformedMultipart, "followed by b'W"),
    ("junk after close", SIMPLE.replace(b"--XyZ--", b"--XyZ--junk"), CT, MalformedMultipart, "followed by b'junk"),
    ("boundary after close", SIMPLE + b"--XyZ\r\n", CT, MalformedMultipart, "after the closing boundary"),
    ("boundary mid-line in preamble", b"pre--XyZ\r\n" + SIMPLE, CT, MalformedMultipart, "middle of a line"),
    ("no blank line", SIMPLE.replace(b'"prompt"\r\n\r\n', b'"prompt"\r\n'), CT, MalformedMultipart, "blank line"),
    ("empty part", SIMPLE.replace(b"--XyZ\r\n", b"--XyZ\r\n--XyZ\r\n", 1), CT, MalformedMultipart, "empty"),
    ("no disposition", SIMPLE.replace(b'Content-Disposition: form-data; name="prompt"\r\n', b"X-A: b\r\n"), CT, MalformedMultipart, "no Content-Disposition"),
    ("no headers", SIMPLE.replace(b'Content-Disposition: form-data; name="prompt"\r\n', b""), CT, MalformedMultipart, "no Content-Disposition"),
    ("two dispositions", SIMPLE.replace(b'name="prompt"\r\n', b'name="prompt"\r\nContent-Disposition: form-data; name="model"\r\n'), CT, MalformedMultipart, "two Content-Disposition"),
    ("two names", SIMPLE.replace(b'name="prompt"', b'name="prompt"; name="model"'), CT, MalformedMultipart, "two 'name'"),
    ("two filename*", SIMPLE.replace(b'filename="a.png"', b"filename*=UTF-8''a; filename*=UTF-8''b"), CT, MalformedMultipart, "two 'filename\\*'"),
    ("filename* and continuation", SIMPLE.replace(b'filename="a.png"', b"filename*=UTF-8''a; filename*0=b"), CT, MalformedMultipart, "conflicting"),
    ("filename* gap", SIMPLE.replace(b'filename="a.png"', b"filename*0=a; filename*2=b"), CT, MalformedMultipart, "count up from 0"),
    ("filename* charset", SIMPLE.replace(b'filename="a.png"', b"filename*=koi8-r''a"), CT, MalformedMultipart, "charset"),
    ("filename* raw bytes", SIMPLE.replace(b'filename="a.png"', b"filename*=UTF-8''\xff.png"), CT, MalformedMultipart, "not valid utf-8"),
    ("two content types", SIMPLE.replace(b"Content-Type: image/png\r\n", b"Content-Type: image/png\r\nContent-Type: text/plain\r\n"), CT, MalformedMultipart, "two Content-Type"),
    ("attachment", SIMPLE.replace(b"form-data; name=\"prompt\"", b"attachment; name=\"prompt\""), CT, MalformedMultipart, "not form-data"),
    ("no name", SIMPLE.replace(b'form-data; name="prompt"', b"form-data"), CT, MalformedMultipart, "no name"),
    ("unterminated quote", SIMPLE.replace(b'name="prompt"', b'name="prompt'), CT, MalformedMultipart, "unterminated quoted"),
    ("stray quote", SIMPLE.replace(b'name="prompt"', b'name=pro"mpt'), CT, MalformedMultipart, "stray quote"),
    ("folded header", SIMPLE.replace(b"Content-Type: image/png\r\n", b"Content-Type:\r\n image/png\r\n"), CT, MalformedMultipart, "folded"),
    ("bare CR in header", SIMPLE.replace(b"Content-Type: image/png", b"Content-Type: image/png\rX-A: b"), CT, MalformedMultipart, "control character"),
    ("NUL in header", SIMPLE.replace(b"Content-Type: image/png", b"Content-Type: image/png\x00"), CT, MalformedMultipart, "control character"),
    ("header without colon", SIMPLE.replace(b"Content-Type: image/png", b"Content-Type image/png"), CT, MalformedMultipart, "malformed header"),
    ("space before colon", SIMPLE.replace(b"Content-Type: image/png", b"Content-Type : image/png"), CT, MalformedMultipart, "malformed header"),
    ("nested mixed", SIMPLE.replace(b"Content-Type: image/png", b"Content-Type: multipart/mixed; boundary=inner"), CT, MalformedMultipart, "nested multipart"),
    ("base64 transfer encoding", SIMPLE.replace(b"Content-Type: image/png", b"Content-Transfer-Encoding: base64"), CT, MalformedMultipart, "Content-Transfer-Encoding"),
    ("gzip part", SIMPLE.replace(b"Content-Type: image/png", b"Content-Encoding: gzip"), CT, MalformedMultipart, "Content-Encoding"),
    ("wrong length", SIMPLE.replace(b"Content-Type: image/png", b"Content-Length: 3"), CT, MalformedMultipart, "Content-Length"),
    ("huge length", SIMPLE.replace(b"Content-Type: image/png", b"Content-Length: " + b"9" * 5000), CT, MalformedMultipart, "Content-Length"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "content_type", "error", "words"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_refused(body: bytes, content_type: str, error: type[VeilpixError], words: str) -> None:
    with pytest.raises(error, match=words) as info:
        C.parse_multipart(body, content_type)
    assert info.value.hint


def test_too_many_parts_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    part = b'--XyZ\r\nContent-Disposition: form-data; name="n"\r\n\r\nv\r\n'
    body = part * 100_000 + b"--XyZ--\r\n"
    made = 0
    part_headers = _multipart._part_headers

    def counting(*args: Any) -> list[tuple[str, str]]:
        nonlocal made
        made += 1
        return part_headers(*args)

    monkeypatch.setattr(_multipart, "_part_headers", counting)
    with pytest.raises(RequestTooLarge, match="more than 256 parts"):
        C.parse_multipart(body, CT)
    assert made == 256  # stopped at the limit, did not read the other 99 744 parts
    assert len(C.parse_multipart(body, CT, max_parts=100_000).parts) == 100_000


def test_huge_header_block() -> None:
    endless = b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\nX-Pad: ' + b"a" * (4 * MB)
    with pytest.raises(RequestTooLarge, match="no end of headers"):
        C.parse_multipart(endless + b"\r\n\r\nx\r\n--XyZ--\r\n", CT)
    many = (
        b"--XyZ\r\n"
        + b"X-A: b\r\n" * 100
        + b"Content-Disposition: form-data; name=a\r\n\r\nx\r\n--XyZ--"
    )
    with pytest.raises(RequestTooLarge, match="header lines"):
        C.parse_multipart(many, CT)


def test_body_over_the_limit() -> None:
    with pytest.raises(RequestTooLarge):
        C.parse_multipart(SIMPLE, CT, max_bytes=len(SIMPLE) - 1)


def test_endless_transport_padding_is_linear() -> None:
    body = b"--XyZ" + b" " * (8 * MB)
    with pytest.raises(MalformedMultipart):
        C.parse_multipart(body, CT, max_bytes=16 * MB)


@given(st.binary(max_size=400), st.sampled_from([CT, "multipart/form-data; boundary=a"]))
@settings(max_examples=300, deadline=None)
def test_random_bodies_fail_closed(body: bytes, content_type: str) -> None:
    for candidate in (body, SIMPLE[: len(body) % len(SIMPLE)] + body):
        with contextlib.suppress(RequestError):
            C.parse_multipart(candidate, content_type)


# =========================================================================== data URIs
def test_data_uri_with_params(png: bytes) -> None:
    uri = "data:image/png;name=x.png;base64," + b64(png)
    assert C.parse_data_uri(uri) == ("image/png", (("name", "x.png"),), png)
    assert C.build_data_uri("image/png", png, [("name", "x.png")]) == uri
    media_type, params, data = C.parse_data_uri(C.build_data_uri("image/png", png)) or ("", (), b"")
    assert (media_type, params, data) == ("image/png", (), png)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("data:,Hello%2C%20World!", ("text/plain", (), b"Hello, World!")),
        ("DATA:Text/HTML;charset=utf-8,%3Cb%3E", ("text/html", (("charset", "utf-8"),), b"<b>")),
        ("data:;base64,SGk=", ("text/plain", (), b"Hi")),
        ("data:image/png;BASE64,SGk", ("image/png", (), b"Hi")),  # no padding
        ("data:image/png;base64,S G\nk =", ("image/png", (), b"Hi")),  # whitespace
        ("data:image/png;base64,-_8", ("image/png", (), b"\xfb\xff")),  # URL-safe alphabet
        ("data:image/png;base64,%2B%2F8%3D", ("image/png", (), b"\xfb\xff")),  # percent-encoded
    ],
)
def test_data_uri_forms(uri: str, expected: tuple[str, tuple[tuple[str, str], ...], bytes]) -> None:
    assert C.parse_data_uri(uri) == expected


@pytest.mark.parametrize(
    "s",
    [
        "hello",
        "data:",
        "data:image/png;base64",
        "data:not a type,xx",
        "datum:,x",
        "data:a/b;c,x",
        "data:" + "a" * 2000 + ",x",
    ],
)
def test_not_data_uris(s: str) -> None:
    assert C.parse_data_uri(s) is None


@pytest.mark.parametrize("payload", ["!!!!", "a", "ab+c-d", "SGk=SGk="])
def test_data_uri_bad_base64(payload: str) -> None:
    with pytest.raises(RequestError, match="does not decode"):
        C.parse_data_uri("data:image/png;base64," + payload)


@pytest.mark.parametrize(
    ("media_type", "params"),
    [
        ("image png", ()),
        ("image/png,", ()),
        ("image/png", (("a", "b,c"),)),
        ("image/png", (("base64", "x"),)),
    ],
)
def test_build_data_uri_refuses(media_type: str, params: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(RequestError):
        C.build_data_uri(media_type, b"x", params)


# =========================================================================== base64 images
IMAGE_MAKERS: dict[str, Callable[[], bytes]] = {
    "jpeg": F.jpeg,
    "png": F.png,
    "gif": F.gif,
    "webp": F.webp,
    "tiff": F.tiff,
    "bmp": F.bmp,
    "heic": F.heic,
    "avif": F.avif,
}


@pytest.mark.parametrize("fmt", IMAGE_MAKERS)
def test_base64_images_are_recognised(fmt: str) -> None:
    try:
        data = IMAGE_MAKERS[fmt]()
    except (ImportError, OSError, KeyError) as exc:
        pytest.skip(f"cannot build {fmt} here: {exc}")
    for text in (
        b64(data),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
        base64.encodebytes(data).decode(),  # MIME line-wrapped, 76 characters a line
    ):
        assert C.looks_like_base64_image(text) == data


@pytest.mark.parametrize(
    "text",
    [
        "",
        "iVBORw0KGgo=",  # a PNG signature, but shorter than min_len
        "hello world, this is a perfectly ordinary prompt that is long enough",
        b64(b"%PDF-1.7 " + bytes(300)),
        b64(b"just some text that is not an image at all, repeated " * 20),
        b64(F.png())[:400] + "!!!",  # starts like a PNG, then is not base64
        b64(F.png()) + "+-",  # mixes the alphabets
        "/9j/" + "\u00e9" * 100,
    ],
)
def test_base64_non_images(text: str) -> None:
    assert C.looks_like_base64_image(text) is None


def test_base64_min_len() -> None:
    tiny = b64(F.gif(frames=1, comment=False))
    assert C.looks_like_base64_image(tiny) is not None
    assert C.looks_like_base64_image(tiny, min_len=len(tiny) + 1) is None


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = _datauri.decode_base64

    def recording(text: str) -> bytes:
        calls.append(len(text))
        return real(text)

    monkeypatch.setattr(_datauri, "decode_base64", recording)
    return calls


def test_long_non_image_decodes_only_a_prefix(decode_calls: list[int]) -> None:
    noise = random.Random(1).randbytes(6 * MB)
    assert not noise.startswith((b"\xff\xd8", b"\x89PNG"))
    text = b64(noise)
    assert C.looks_like_base64_image(text) is None
    assert decode_calls == [344]  # one decode, of 258 bytes' worth, never the 8 MB
    decode_calls.clear()
    assert C.looks_like_base64_image("word " * 2 * MB) is None
    assert len(decode_calls) == 1 and decode_calls[0] <= 344


def test_long_image_decodes_prefix_then_all(decode_calls: list[int], jpg: bytes) -> None:
    text = b64(jpg)
    assert C.looks_like_base64_image(text) == jpg
    assert decode_calls == [344, len(text)]


# =========================================================================== JSON
OPENAI_CHAT = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You describe images."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "DATA_URI", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        },
    ],
}
OPENAI_RESPONSES = {
    "model": "gpt-4.1",
    "input": [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Describe"},
                {"type": "input_image", "image_url": "DATA_URI"},
                {"type": "input_image", "file_id": "file-abc"},
            ],
        }
    ],
}
ANTHROPIC = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/jpeg", "data": "B64"},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "text", "text": "Compare."},
            ],
        }
    ],
}
GEMINI = {
    "contents": [
        {
            "role": "user",
            "parts": [
                {"text": "Caption this."},
                {"inlineData": {"mimeType": "image/jpeg", "data": "B64"}},
                {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/x.png"}},
            ],
        }
    ],
    "generationConfig": {"temperature": 0.2, "candidateCount": 1},
}


def fill(doc: dict[str, Any], image: bytes) -> dict[str, Any]:
    text = json.dumps(doc)
    text = text.replace("DATA_URI", "data:image/jpeg;base64," + b64(image)).replace(
        "B64", b64(image)
    )
    loaded: dict[str, Any] = C.load_json(text.encode())
    return loaded


@pytest.mark.parametrize(
    ("doc", "expr", "expected"),
    [
        (
            OPENAI_CHAT,
            "messages[*].content[?type=image_url].image_url.url",
            [
                ("messages", 1, "content", 1, "image_url", "url"),
                ("messages", 1, "content", 2, "image_url", "url"),
            ],
        ),
        (
            OPENAI_CHAT,
            "messages[1].content[2].image_url.url",
            [("messages", 1, "content", 2, "image_url", "url")],
        ),
        (
            OPENAI_CHAT,
            "messages[*].content",
            [("messages", 0, "content"), ("messages", 1, "content")],
        ),
        (
            OPENAI_CHAT,
            "messages[*].content[*].type",
            [("messages", 1, "content", i, "type") for i in range(3)],
        ),
        (OPENAI_CHAT, "messages[?role=system].content", [("messages", 0, "content")]),
        (
            OPENAI_RESPONSES,
            "input[*].content[?type=input_image].image_url",
            [("input", 0, "content", 1, "image_url")],
        ),
        (OPENAI_RESPONSES, "input[*].content[?file_id]", [("input", 0, "content", 2)]),
        (
            ANTHROPIC,
            "messages[*].content[?type=image].source.data",
            [("messages", 0, "content", 0, "source", "data")],
        ),
        (
            ANTHROPIC,
            'messages[*].content[?type="image"].source[?type=url].url',
            [("messages", 0, "content", 1, "source", "url")],
        ),
        (
            GEMINI,
            "contents[*].parts[*].inlineData.data",
            [("contents", 0, "parts", 1, "inlineData", "data")],
        ),
        (GEMINI, "**.inlineData.data", [("contents", 0, "parts", 1, "inlineData", "data")]),
        (
            GEMINI,
            "**.mimeType",
            [
                ("contents", 0, "parts", 1, "inlineData", "mimeType"),
                ("contents", 0, "parts", 2, "fileData", "mimeType"),
            ],
        ),
        (
            GEMINI,
            "generationConfig.*",
            [("generationConfig", "temperature"), ("generationConfig", "candidateCount")],
        ),
        (GEMINI, "**[?candidateCount=1]", [("generationConfig",)]),
        (GEMINI, '**[?candidateCount="1"]', []),
        (GEMINI, "contents.parts", []),  # no implicit array walk
        (
            ANTHROPIC,
            "**[?type=image]",
            [("messages", 0, "content", 0), ("messages", 0, "content", 1)],
        ),
        (ANTHROPIC, "**.**.max_tokens", [("max_tokens",)]),
        ({"a.b": {"c]": 1}}, '["a.b"]["c]"]', [("a.b", "c]")]),
        ({"x": 1}, "", [()]),
    ],
)
def test_select(doc: Any, expr: str, expected: list[C.JsonPath]) -> None:
    assert C.select(doc, expr) == expected


@pytest.mark.parametrize(
    "expr", [".a", "a..b", "a.", "a[", "a[x]", "a[?]", "a[*]b", '["a', 'a[?t="x"y]']
)
def test_select_refuses_bad_paths(expr: str) -> None:
    with pytest.raises(ValueError, match="JSON path"):
        C.select({}, expr)


def test_find_images_on_vendor_shapes(jpg: bytes) -> None:
    found = C.find_images_in_json(fill(OPENAI_CHAT, jpg))
    assert [(i.path, i.kind, i.media_type, i.declared_type) for i in found] == [
        (("messages", 1, "content", 1, "image_url", "url"), "data_uri", "image/jpeg", "image/jpeg")
    ]
    assert found[0].data == jpg
    found = C.find_images_in_json(fill(ANTHROPIC, jpg))
    assert [(i.path, i.kind, i.media_type) for i in found] == [
        (("messages", 0, "content", 0, "source", "data"), "base64", "image/jpeg")
    ]
    found = C.find_images_in_json(fill(GEMINI, jpg))
    assert [(i.path, i.kind) for i in found] == [
        (("contents", 0, "parts", 1, "inlineData", "data"), "base64")
    ]
    assert [i.path for i in C.find_images_in_json(fill(OPENAI_RESPONSES, jpg))] == [
        ("input", 0, "content", 1, "image_url")
    ]


def test_data_uri_type_is_sniffed_not_trusted(png: bytes) -> None:
    doc = {
        "a": "data:application/octet-stream;base64," + b64(png),
        "b": "data:image/jpeg;base64," + b64(png),
    }
    found = C.find_images_in_json(doc)
    assert [(i.media_type, i.declared_type) for i in found] == [
        ("image/png", "application/octet-stream"),
        ("image/png", "image/jpeg"),
    ]


def test_unrecognised_declared_images_are_reported() -> None:
    svg = "data:image/svg+xml;charset=utf-8,%3Csvg%20xmlns%3D%22http://www.w3.org/2000/svg%22/%3E"
    (found,) = C.find_images_in_json({"x": [svg, "data:text/plain,hello"]})
    assert found.media_type == "image/svg+xml" and found.data.startswith(b"<svg")
    assert found.params == (("charset", "utf-8"),)


@pytest.mark.parametrize(
    "bad", ["data:image/png;base64,!!!!", "data:image/png;bad", "data:image/png;x;base64,AAAA"]
)
def test_malformed_image_data_uri_fails_closed(bad: str) -> None:
    with pytest.raises(RequestError):
        C.find_images_in_json({"url": bad})


def test_find_urls() -> None:
    doc = {
        "a": "https://example.com/a.png?sig=1",
        "b": " gs://bucket/x.png ",
        "c": "see https://example.com/prose",
        "d": "ftp://example.com/x",
        "e": "data:image/png;base64,AAAA",
        "f": ["HTTP://EXAMPLE.COM", "https://", "s3://b/k"],
    }
    assert C.find_urls_in_json(doc) == [
        (("a",), "https://example.com/a.png?sig=1", "https"),
        (("b",), "gs://bucket/x.png", "gs"),
        (("f", 0), "HTTP://EXAMPLE.COM", "http"),
        (("f", 2), "s3://b/k", "s3"),
    ]


def test_iter_strings_in_document_order() -> None:
    doc = {"a": "1", "b": ["2", {"c": "3", "d": 4, "e": None}, ["5"]], "f": "6"}
    assert list(C.iter_strings(doc)) == [
        (("a",), "1"),
        (("b", 0), "2"),
        (("b", 1, "c"), "3"),
        (("b", 2, 0), "5"),
        (("f",), "6"),
    ]
    assert list(C.iter_strings("top")) == [((), "top")]


def test_scan_json_lists_text_in_the_same_walk() -> None:
    uri = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()
    doc = {
        "model": "m",
        "instructions": "be brief",
        "messages": [
            {"role": "system", "content": "sys"},
            {
                "role": ["odd"],
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": uri}},
                ],
            },
            {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
        ],
        "system": [{"type": "text", "text": "anthropic system", "cache_control": {"type": "x"}}],
        "input": {"prompt": ["a", "b"], "negative_prompt": "c", "seed": 4, "steps": "30"},
        "text": {"format": {"type": "text"}},  # Responses' text config: no text in it
        "tools": [{"description": "not a prompt", "name": "f"}],
    }
    texts: list[C.JsonText] = []
    images, urls = C.scan_json(doc, texts=texts)
    assert [(t.path, t.system, t.text) for t in texts] == [
        (("instructions",), True, "be brief"),
        (("messages", 0, "content"), True, "sys"),
        (("messages", 1, "content", 0, "text"), False, "hi"),
        (("messages", 2, "content", 0, "text"), True, "dev"),
        (("system", 0, "text"), True, "anthropic system"),
        (("input", "prompt", 0), False, "a"),
        (("input", "prompt", 1), False, "b"),
        (("input", "negative_prompt"), False, "c"),
    ]
    # the images and URLs found are the same as without texts
    assert (images, urls) == C.scan_json(doc)
    with pytest.raises(RequestTooLarge):
        C.scan_json({"prompt": nested(300)}, texts=[])


def nested(depth: int) -> Any:
    doc: Any = "leaf"
    for _ in range(depth):
        doc = [doc]
    return doc


def test_depth_is_bounded() -> None:
    assert next(iter(C.iter_strings(nested(256))))[1] == "leaf"
    with pytest.raises(RequestTooLarge, match="nested more than 256"):
        list(C.iter_strings(nested(257)))
    with pytest.raises(RequestTooLarge):
        C.select(nested(300), "**")
    with pytest.raises(RequestTooLarge):
        C.find_images_in_json(nested(300))


@pytest.mark.parametrize("depth", [300, 100_000])
def test_deep_json_body_fails_closed(depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    with pytest.raises(RequestTooLarge):
        C.load_json(body)


@pytest.mark.parametrize("limit", [1, 2, 5, 40])
def test_load_json_depth_limit_is_exact(limit: int) -> None:
    # Containers at path length < limit are fine; load_json only walks the document when
    # the body has at least ``limit`` opening brackets, so the edges are checked here.
    ok = json.dumps(nested(limit)).encode()  # innermost list at path length limit - 1
    assert C.load_json(ok, max_depth=limit) == nested(limit)
    with pytest.raises(RequestTooLarge):
        C.load_json(json.dumps(nested(limit + 1)), max_depth=limit)
    # brackets inside strings only make it look (not check) deeper than it is
    assert C.load_json(json.dumps([["[{" * limit]]), max_depth=3) == [["[{" * limit]]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"image": "a", "image": "b"}', "twice"),
        (b'{"a": [{"k": 1, "k": 2}]}', "twice"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe{", "not valid JSON"),
        (b"1" * 5000, "not valid JSON"),  # over Python's integer digit limit
    ],
)
def test_load_json_refuses(body: bytes, words: str) -> None:
    with pytest.raises(RequestError, match=words):
        C.load_json(body)


def test_replace_at_copies_only_the_path(jpg: bytes, png: bytes) -> None:
    doc = fill(OPENAI_CHAT, jpg)
    before = json.dumps(doc)
    (image,) = C.find_images_in_json(doc)
    new = C.replace_at(doc, image.path, C.build_data_uri("image/png", png))
    assert json.dumps(doc) == before  # the input is untouched
    assert new["messages"][0] is doc["messages"][0]  # siblings are shared
    assert new["messages"][1]["content"][1]["image_url"]["detail"] == "high"
    assert C.get_at(new, image.path) == "data:image/png;base64," + b64(png)
    (again,) = C.find_images_in_json(C.load_json(C.dump_json(new)))
    assert again.data == png and again.path == image.path
    assert C.replace_at(doc, (), "x") == "x"


@pytest.mark.parametrize(
    ("path", "error"),
    [
        (("nope",), KeyError),
        (("messages", 9), IndexError),
        (("messages", "0"), TypeError),
        (("model", 0), TypeError),
    ],
)
def test_replace_at_missing_path(path: C.JsonPath, error: type[Exception]) -> None:
    with pytest.raises(error):
        C.replace_at(OPENAI_CHAT, path, "x")
    with pytest.raises(error):
        C.get_at(OPENAI_CHAT, path)


def test_select_then_replace_every_slot(jpg: bytes, png: bytes) -> None:
    doc = fill(GEMINI, jpg)
    for path in C.select(doc, "contents[*].parts[*].inlineData.data"):
        doc = C.replace_at(doc, path, b64(png))
        doc = C.replace_at(doc, (*path[:-1], "mimeType"), "image/png")
    assert doc["contents"][0]["parts"][1]["inlineData"] == {
        "mimeType": "image/png",
        "data": b64(png),
    }


def test_public_names_exist() -> None:
    assert sorted(C.__all__) == C.__all__
    for name in C.__all__:
        assert hasattr(C, name), name


json_docs = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=50)
    | st.sampled_from(["data:image/png;base64,iVBORw0KGgo", "data:image/", "/9j/4AAQ", "R0lGODlh"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_docs)
@settings(max_examples=300, deadline=None)
def test_json_helpers_fail_closed(doc: Any) -> None:
    with contextlib.suppress(RequestError):
        C.find_images_in_json(doc)
    C.find_urls_in_json(doc)
    for expr in ("**", "**[?type=image]", "*[*].a"):
        for path in C.select(doc, expr):
            assert C.replace_at(doc, path, C.get_at(doc, path)) == doc


def _scan_by_the_book(doc: Any, schemes: tuple[str, ...]) -> tuple[list[Any], list[Any]]:
    """What scan_json must find: every string checked, one by one, in document order."""
    images, urls = [], []
    for path, value in C.iter_strings(doc):
        image = C.image_in_string(path, value)
        if image is not None:
            images.append(image)
        url = value.strip()
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        plain = not any(ch.isspace() for ch in url)
        if scheme in schemes and plain and _json._URL_SCHEME.match(url):
            urls.append(C.JsonUrl(path, url, scheme))
    return images, urls


_TINY_GIF = base64.b64encode(
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
).decode()
scan_strings = st.sampled_from(
    [
        _TINY_GIF,
        "data:image/gif;base64," + _TINY_GIF,
        "data:image/png;base64,!!",
        "data:text/plain,hi",
        "https://cdn.example/a.png",
        " http://x.example/b ",
        "HTTPS://X.EXAMPLE",
        "gs://bucket/o.png",
        "ftp://x.example/y",
        "https://a.example/has space",
        "note: see https://x.example/",
        "a:b",
        "x" * 40,
        "short",
    ]
) | st.text(max_size=40)
scan_docs = st.recursive(
    st.none() | st.integers() | scan_strings,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=25,
)


@given(scan_docs, st.sampled_from([("http", "https"), ("http", "https", "gs", "s3"), ()]))
@settings(max_examples=400, deadline=None)
def test_scan_json_finds_what_a_string_by_string_check_finds(
    doc: Any, schemes: tuple[str, ...]
) -> None:
    # scan_json skips short strings without a colon before looking closer: that must never
    # change what is found, where, or in which order; nor whether a bad data:image URI raises.
    try:
        expected: Any = _scan_by_the_book(doc, schemes)
    except RequestError:
        expected = RequestError
    try:
        got: Any = C.scan_json(doc, url_schemes=schemes)
    except RequestError:
        got = RequestError
    assert got == expected
    if expected is not RequestError:
        assert C.find_images_in_json(doc) == expected[0]
        assert C.find_urls_in_json(doc, schemes=schemes) == expected[1]
