"""The shared machinery of the image-format tests in tests/formats/: the fail-closed
contract, the fixtures, and the byte surgery that turns a good file into a hostile one.

The contract: for ANY input bytes, ``sanitize()`` and ``inspect()`` either raise a
``VeilpixError`` (with a message) or, for ``sanitize()``, return an output in which a fresh
``inspect()`` finds nothing at all, and which is never the input itself when the input carried
metadata. No other exception may escape (struct.error, IndexError, zlib.error, MemoryError,
RecursionError, a decoder's own exception, ...), nothing may hang, and a small input must
never make veilpix allocate a lot of memory. ``contract()`` checks one input; ``check_all()``
checks many, each within ``TIME_LIMIT`` and ``PEAK_LIMIT``, and reports every failure at once.

Two stricter checks go beyond what ``inspect()`` can see: a lossless strip must not copy
bytes it did not parse (a TIFF strip that is the whole file), and the structure it keeps (a
"standard" colour profile, a pHYs chunk, a GIF loop extension, ...) must not carry a payload
a hostile writer hid in it (``assert_payload_dropped()``).

Cases that could hang or allocate gigabytes when veilpix regresses run in a child process
with a timeout and an address-space cap (``isolated()``); the in-process cases run under an
address-space cap too (``capped_memory()``, Linux), so a regression fails the test instead of
taking the machine down.

Besides the contract: a metadata-rich ``sample()`` and metadata-free ``plain_*()`` file of
each format, per-format surgery (JPEG segments, PNG chunks, RIFF chunks, GIF, TIFF IFDs,
BMFF boxes), zlib bombs, hostile EXIF blocks, and the fuzzer's mutations. Each
tests/formats/test_<format>.py holds one format's well-formed and hostile tests;
tests/formats/test_contract.py holds the cases that run over every format at once.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st
from PIL import Image

import factories as F
import veilpix

MB = 1 << 20
PEAK_LIMIT = 50 * MB  # Python heap a single call may use on a small input
TIME_LIMIT = 2.0  # seconds a single call may take on a small input
CAP = 1 << 30  # address space granted on top of what the process already uses
FORMATS = ("jpeg", "png", "webp", "gif", "tiff", "bmp", "heic", "avif")
FUZZ_TARGETS = (*FORMATS, "jpeg-rotated", "png-animated", "webp-animated")
SECRETS = (F.SECRET.encode(), F.SERIAL.encode(), b"TRACKING-ID")
PAYLOAD = b"TRACKING-ID " + F.SECRET.encode()  # what a hostile writer hides in kept structure

# Every hostile-input test carries this mark: the warnings Pillow gives on such input are the
# expected reaction to it, not a finding.
hostile = pytest.mark.filterwarnings(
    "ignore::UserWarning",  # Pillow: "Metadata Warning" on bad tags
    "ignore::RuntimeWarning",  # Pillow: DecompressionBombWarning
)


# =========================================================================== the contract
@dataclass
class Outcome:
    """What one input did: the error raised, or the sanitized result; time and peak heap."""

    label: str
    data: bytes
    error: veilpix.VeilpixError | None = None
    result: veilpix.SanitizedImage | None = None
    seconds: float = 0.0
    peak: int = 0


def _guarded(call: Callable[[], object], what: str) -> object:
    """``call()``; a VeilpixError is returned (it must carry a message), anything else fails."""
    try:
        return call()
    except veilpix.VeilpixError as exc:
        assert isinstance(exc.message, str) and exc.message.strip(), (
            f"{what} raised {type(exc).__name__} without a message"
        )
        return exc
    except Exception as exc:  # the whole point: nothing but VeilpixError may escape
        raise AssertionError(f"{what} let {type(exc).__name__} escape: {exc}"[:600]) from exc


def contract(
    data: bytes, policy: veilpix.Policy | None = None, *, label: str = "", measure: bool = True
) -> Outcome:
    """Run inspect() and sanitize() on ``data`` and assert the fail-closed contract."""
    outcome = Outcome(label, data)
    tracing = measure and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    start = time.perf_counter()
    try:
        seen = _guarded(lambda: veilpix.inspect(data), f"inspect() {label}")
        done = _guarded(lambda: veilpix.sanitize(data, policy), f"sanitize() {label}")
        if isinstance(done, veilpix.VeilpixError):
            outcome.error = done
        else:
            assert isinstance(done, veilpix.SanitizedImage)
            out = done.data
            assert isinstance(out, bytes) and out, f"sanitize() {label} returned no bytes"
            if isinstance(seen, veilpix.Inspection) and seen.findings:
                assert out != data, f"sanitize() {label} returned the input unchanged"
            again = _guarded(lambda: veilpix.inspect(out), f"inspect() of the output {label}")
            assert not isinstance(again, veilpix.VeilpixError), (
                f"veilpix cannot read its own output {label}: {again}"
            )
            assert isinstance(again, veilpix.Inspection)
            assert again.findings == (), f"output {label} still carries: {again.findings}"
            outcome.result = done
    finally:
        outcome.seconds = time.perf_counter() - start
        if tracing:
            outcome.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        struct._clearcache()  # a hostile format string must not stay cached between cases
    return outcome


def check_all(
    cases: Iterable[tuple[str, bytes]],
    policy: veilpix.Policy | None = None,
    *,
    seconds: float = TIME_LIMIT,
    peak: int = PEAK_LIMIT,
) -> list[Outcome]:
    """The contract for every case; all failures are reported together (the first chained)."""
    outcomes: list[Outcome] = []
    failures: list[str] = []
    first: AssertionError | None = None
    with capped_memory():
        for label, data in cases:
            try:
                outcome = contract(data, policy, label=label)
                assert outcome.seconds < seconds, f"{label}: took {outcome.seconds:.2f} s"
                assert outcome.peak < peak, f"{label}: allocated {outcome.peak / MB:.0f} MB"
            except AssertionError as exc:
                failures.append(str(exc).splitlines()[0][:300])
                first = first or exc
                continue
            outcomes.append(outcome)
    if failures:
        raise AssertionError(
            f"{len(failures)} of {len(failures) + len(outcomes)} inputs broke the contract:\n"
            + "\n".join(failures[:25])
        ) from first
    return outcomes


def _vmsize() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize")


@contextlib.contextmanager
def capped_memory(extra: int = CAP) -> Iterator[None]:
    """Cap this process's address space (Linux) while hostile input is handled, so a huge
    allocation fails (and is reported) instead of exhausting the test machine."""
    try:
        import resource

        cap = _vmsize() + extra
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError):
        yield
        return
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def refused_or_repaired_whole(o: Outcome, intact: bytes) -> None:
    """CorruptImage, or (the decoder read every pixel: only the container was damaged) an
    output that says it was repaired and shows exactly the intact picture's pixels."""
    if o.error is not None or o.result is None:
        assert isinstance(o.error, veilpix.CorruptImage), f"{o.label}: {o.error!r}"
        return
    assert any(n.startswith("repaired: ") for n in o.result.report.notes), o.label
    with Image.open(io.BytesIO(o.result.data)) as out, Image.open(io.BytesIO(intact)) as src:
        assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(src.convert("RGB"))), (
            f"{o.label}: repaired, but not the whole picture"
        )


def too_large(cases: list[tuple[str, bytes]], policy: veilpix.Policy | None = None) -> None:
    """Each case must be refused as ImageTooLarge (or CorruptImage) fast and in little memory."""
    wrong = []
    for o in check_all(cases, policy):
        if not isinstance(o.error, veilpix.ImageTooLarge | veilpix.CorruptImage):
            got = type(o.error).__name__ if o.error else "an image"
            wrong.append(f"{o.label}: {got}" + (f" ({o.error})" if o.error else ""))
    assert not wrong, "\n".join(wrong)


# --------------------------------------------------------------------------- child process
_CHILD = r"""
import json, struct, sys, time, tracemalloc, traceback, warnings
warnings.simplefilter("ignore")
import PIL.Image
import veilpix, veilpix.image._pipeline, veilpix.image._pixels
PIL.Image.init()
for name in ("pillow_heif", "PIL.AvifImagePlugin"):  # imported up front: not part of a timing
    try:
        __import__(name)
    except ImportError:
        pass
try:
    import resource
    with open("/proc/self/status") as fh:
        vm = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmSize:"))
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    cap = vm + int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
except (ImportError, OSError, ValueError):
    resource = None
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if resource else 0
results = []
for job in json.loads(sys.stdin.read()):
    data = bytes.fromhex(job["data"])
    policy = veilpix.Policy(**job.get("policy", {}))
    rec = {"label": job["label"], "op": job["op"]}
    base = rss()
    struct._clearcache()
    tracemalloc.start()
    t = time.perf_counter()
    try:
        if job["op"] == "inspect":
            rec["findings"] = len(veilpix.inspect(data).findings)
        else:
            out = veilpix.sanitize(data, policy)
            rec["report"] = len(out.report.findings)
            rec["removed"] = [r.container for r in out.report.removed]
            rec["same"] = out.data == data
            rec["left"] = [f.label for f in veilpix.inspect(out.data).findings]
        rec["outcome"] = "ok"
    except veilpix.VeilpixError as exc:
        rec.update(outcome="error", type=type(exc).__name__, message=str(exc)[:200])
    except BaseException as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(tb)
                      if "veilpix" in f.filename), "?")
        rec.update(outcome="escape", type=type(exc).__name__, message=str(exc)[:200], where=where)
    rec["seconds"] = time.perf_counter() - t
    rec["peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rec["rss_growth"] = rss() - base
    results.append(rec)
print(json.dumps(results))
"""


def isolated(jobs: list[dict[str, Any]], *, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Run jobs ({label, op: 'sanitize'|'inspect', data: hex, policy: {...}}) in a child
    process with an address-space cap; a hang fails the test instead of blocking it."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(CAP)],
            input=json.dumps(jobs),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"veilpix hung: {len(jobs)} inputs not done after {timeout:.0f} s")
    assert proc.returncode == 0, f"child process died ({proc.returncode}): {proc.stderr[-2000:]}"
    results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def job(label: str, data: bytes, op: str = "sanitize", **policy: object) -> dict[str, Any]:
    return {"label": label, "op": op, "data": data.hex(), "policy": policy}


def describe(rec: dict[str, Any]) -> str:
    what = rec["outcome"]
    if what != "ok":
        what = f"{rec['type']}: {rec['message']}" + (
            f" [at {rec['where']}]" if "where" in rec else ""
        )
    return (
        f"{rec['label']} ({rec['op']}): {what}; {float(rec['seconds']):.2f} s, "
        f"{int(rec['peak']) // MB} MB Python heap, {int(rec['rss_growth']) // MB} MB more resident"
    )


# =========================================================================== fixtures
@functools.cache
def sample(fmt: str) -> bytes:
    """A small metadata-rich image of each format."""
    if fmt == "heic":
        pytest.importorskip("pillow_heif")
    builders: dict[str, Callable[[], bytes]] = {
        "jpeg": F.jpeg,
        "png": F.png,
        "webp": F.webp,
        "gif": F.gif,
        "tiff": F.tiff,
        "bmp": F.bmp,
        "heic": F.heic,
        "avif": F.avif,
        # pixel paths: orientation (lossless turn or re-encode), animation
        "jpeg-rotated": lambda: F.jpeg(orientation=6),
        "png-animated": lambda: F.png(apng_frames=3),
        "webp-animated": lambda: F.webp(frames=2),
    }
    return builders[fmt]()


def needs(fmt: str) -> None:
    if fmt == "heic":
        pytest.importorskip("pillow_heif")


@functools.cache
def plain_jpeg() -> bytes:
    return F.jpeg(exif=False, xmp=False, iptc=False, comment=False, vendor=False)


@functools.cache
def plain_png() -> bytes:
    return F.png(text=False, exif=False, xmp_gps=False, time=False, private=False, c2pa=False)


@functools.cache
def plain_webp() -> bytes:
    return F.webp(exif=False, xmp=False, unknown=False)


# --------------------------------------------------------------------------- pixels
def pixels(data: bytes, frame: int = 0) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.seek(frame)
        return np.asarray(im.convert("RGBA"), dtype=np.int16)


def frame_count(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as im:
        return getattr(im, "n_frames", 1)


def assert_lossless(data: bytes, assert_clean: Callable[[bytes, str], None]) -> None:
    """A lossless strip (with a decode check) keeps every frame's pixels, leaves nothing for
    exiftool or inspect() to find, and makes the file smaller."""
    out = veilpix.sanitize(data, veilpix.Policy(verify_decode=True))
    rep = out.report
    assert rep.lossless, rep.notes
    assert_clean(out.data, "out" + out.extension)
    assert veilpix.inspect(out.data).findings == ()
    assert frame_count(out.data) == frame_count(data) == rep.frames_out
    for i in range(rep.frames_out):
        assert np.array_equal(pixels(out.data, i), pixels(data, i)), f"frame {i} changed"
    assert rep.sha256_in != rep.sha256_out and rep.bytes_out < rep.bytes_in


# --------------------------------------------------------------------------- JPEG surgery
def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment from SOI up to and including SOS's header."""
    out = []
    p = 2
    while p + 4 <= len(data):
        marker = data[p + 1]
        (length,) = struct.unpack_from(">H", data, p + 2)
        out.append((marker, p, p + 2 + length))
        if marker == 0xDA:
            break
        p += 2 + length
    return out


def jpeg_segment(data: bytes, marker: int, nth: int = 0) -> int:
    starts = [s for m, s, _ in jpeg_segments(data) if m == marker]
    return starts[nth]


def put(data: bytes, at: int, value: int, fmt: str = ">H") -> bytes:
    """``data`` with ``value`` packed as ``fmt`` at offset ``at``."""
    buf = bytearray(data)
    struct.pack_into(fmt, buf, at, value)
    return bytes(buf)


def jpeg_with_app1(payload: bytes) -> bytes:
    base = plain_jpeg()
    return base[:2] + F._seg(0xE1, payload) + base[2:]


# --------------------------------------------------------------------------- PNG surgery
def png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of every chunk."""
    out = []
    p = 8
    while p + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, p)
        out.append((data[p + 4 : p + 8], p, p + 12 + length))
        p += 12 + length
    return out


def png_chunk_at(data: bytes, kind: bytes) -> int:
    return next(start for k, start, _ in png_chunks(data) if k == kind)


def png_insert(data: bytes, chunk: bytes, before: bytes = b"IDAT") -> bytes:
    at = png_chunk_at(data, before)
    return data[:at] + chunk + data[at:]


# --------------------------------------------------------------------------- RIFF surgery
def riff(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def riff_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    out = []
    p = 12
    while p + 8 <= len(data):
        (size,) = struct.unpack_from("<I", data, p + 4)
        out.append((data[p : p + 4], p, p + 8 + size + (size & 1)))
        p += 8 + size + (size & 1)
    return out


def riff_chunk_at(data: bytes, kind: bytes) -> int:
    return next(start for k, start, _ in riff_chunks(data) if k == kind)


def webp_append(data: bytes, chunk: bytes) -> bytes:
    return riff(data[12:] + chunk)


# --------------------------------------------------------------------------- GIF surgery
def tiny_gif(
    screen: tuple[int, int], frame: tuple[int, int], lzw: bytes = b"\x02\x02\x44\x01\x00"
) -> bytes:
    """A GIF with a 2-colour global table and one frame of the given declared size."""
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    return head + b"\x2c" + struct.pack("<HHHHB", 0, 0, *frame, 0) + lzw + b"\x3b"


# --------------------------------------------------------------------------- TIFF surgery
def tiff_ifd0(data: bytes) -> tuple[str, int, list[bytes], int]:
    """(byte order, IFD0 offset, raw 12-byte entries, offset of the next-IFD pointer)."""
    e = "<" if data[:2] == b"II" else ">"
    (at,) = struct.unpack_from(e + "I", data, 4)
    (n,) = struct.unpack_from(e + "H", data, at)
    entries = [data[at + 2 + 12 * i : at + 14 + 12 * i] for i in range(n)]
    return e, at, entries, at + 2 + 12 * n


def tiff_set(data: bytes, tag: int, typ: int, count: int, value: bytes) -> bytes:
    """Overwrite IFD0's entry for ``tag`` (4-byte value field ``value``) in place."""
    e, at, entries, _ = tiff_ifd0(data)
    buf = bytearray(data)
    for i, raw in enumerate(entries):
        if struct.unpack_from(e + "H", raw)[0] == tag:
            struct.pack_into(e + "HHI", buf, at + 2 + 12 * i, tag, typ, count)
            buf[at + 10 + 12 * i : at + 14 + 12 * i] = value
            return bytes(buf)
    raise KeyError(tag)


def tiff_graft(
    data: bytes,
    extra: list[tuple[int, int, int, object]],
    *,
    next_ifd: object = 0,
    ifd1: bool = False,
    ifd1_next: object = 0,
    tail: bytes = b"",
    count: int | None = None,
) -> bytes:
    """A copy of the TIFF whose IFD0 is rebuilt at the end with ``extra`` entries added.
    Values are 4 raw bytes, an int, or ("ifd0" | "ifd1" | "tail", offset) resolved once the
    layout is known; ``ifd1`` appends a copy of IFD0 as a second IFD; ``count`` overrides
    IFD0's declared entry count."""
    e, _, entries, _ = tiff_ifd0(data)
    out = bytearray(data)
    if len(out) & 1:
        out += b"\x00"
    all_entries = len(entries) + len(extra)
    ifd0_at = len(out)
    ifd_size = 2 + 12 * all_entries + 4
    ifd1_at = ifd0_at + ifd_size
    tail_at = ifd1_at + (ifd_size if ifd1 else 0)
    where = {"ifd0": ifd0_at, "ifd1": ifd1_at, "tail": tail_at}

    def resolve(v: object) -> bytes:
        if isinstance(v, bytes):
            return v
        if isinstance(v, tuple):
            return struct.pack(e + "I", where[v[0]] + v[1])
        return struct.pack(e + "I", int(v))

    def ifd(nxt: object) -> bytes:
        rows = [*entries] + [struct.pack(e + "HHI", t, ty, c) + resolve(v) for t, ty, c, v in extra]
        rows.sort(key=lambda r: struct.unpack_from(e + "H", r)[0])
        n = all_entries if count is None else count
        return struct.pack(e + "H", n) + b"".join(rows) + resolve(nxt)

    out += ifd(next_ifd)
    if ifd1:
        out += ifd(ifd1_next)
    out += tail
    struct.pack_into(e + "I", out, 4, ifd0_at)
    return bytes(out)


@functools.cache
def plain_tiff() -> bytes:
    return F.tiff(pages=1, metadata=False, compression="raw")


# --------------------------------------------------------------------------- BMFF surgery
def patch_ispe(data: bytes, width: int, height: int) -> bytes:
    buf = bytearray(data)
    at = buf.find(b"ispe")
    assert at > 0, "no ispe box"
    while at > 0:
        struct.pack_into(">II", buf, at + 8, width, height)
        at = buf.find(b"ispe", at + 4)
    return bytes(buf)


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


# --------------------------------------------------------------------------- zlib bombs
@functools.cache
def zeros_deflated(mib: int) -> bytes:
    """A zlib stream of ``mib`` MiB of zeros, built without ever holding them: 1 MiB blocks
    that end in a full flush compress to identical bytes, so one block is repeated."""
    zero = bytes(MB)
    co = zlib.compressobj(9)
    first = co.compress(zero) + co.flush(zlib.Z_FULL_FLUSH)
    block = co.compress(zero) + co.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(mib):
        adler = zlib.adler32(zero, adler)
    return first + block * (mib - 1) + b"\x03\x00" + adler.to_bytes(4, "big")


# =========================================================================== hostile EXIF
MAKE = b"EvilCam\x00"


def exif_blob(
    ifds: list[tuple[list[tuple[int, int, int, object]], object]],
    *,
    e: str = "<",
    first: object = ("ifd", 0),
    count0: int | None = None,
    tail: bytes = MAKE,
) -> bytes:
    """A TIFF-structured EXIF block. IFDs follow the 8-byte header in order, then ``tail``.
    Entry values and next pointers are 4 raw bytes, an int, or ("ifd", i) / ("tail", k)."""
    sizes = [2 + 12 * len(entries) + 4 for entries, _ in ifds]
    starts = [8]
    for size in sizes[:-1]:
        starts.append(starts[-1] + size)
    tail_at = starts[-1] + sizes[-1]

    def ref(v: object) -> bytes:
        if isinstance(v, bytes):
            return v
        if isinstance(v, tuple):
            return struct.pack(e + "I", starts[v[1]] if v[0] == "ifd" else tail_at + v[1])
        return struct.pack(e + "I", int(v))

    out = (b"II*\x00" if e == "<" else b"MM\x00*") + ref(first)
    for index, (entries, nxt) in enumerate(ifds):
        n = count0 if index == 0 and count0 is not None else len(entries)
        out += struct.pack(e + "H", n)
        out += b"".join(struct.pack(e + "HHI", t, ty, c) + ref(v) for t, ty, c, v in entries)
        out += ref(nxt)
    return out + tail


MAKE_ENTRY = (0x010F, 2, len(MAKE), ("tail", 0))
MODEL_ENTRY = (0x0110, 2, len(MAKE), ("tail", 0))
EXIF_PTR, GPS_PTR, INTEROP_PTR = 0x8769, 0x8825, 0xA005


def hostile_exifs() -> dict[str, bytes]:
    """Hostile EXIF blocks: loops, wild offsets, absurd counts. IFD0 names a camera make
    wherever the structure allows, so the report has something to say."""
    cases: dict[str, bytes] = {
        "IFD0 next is IFD0": exif_blob([([MAKE_ENTRY], ("ifd", 0))]),
        "IFD0 -> IFD1 -> IFD0": exif_blob(
            [([MAKE_ENTRY], ("ifd", 1)), ([MODEL_ENTRY], ("ifd", 0))]
        ),
        "big-endian IFD0 next is IFD0": exif_blob([([MAKE_ENTRY], ("ifd", 0))], e=">"),
        "Exif IFD is IFD0": exif_blob([([MAKE_ENTRY, (EXIF_PTR, 4, 1, ("ifd", 0))], 0)]),
        "GPS IFD is IFD0": exif_blob([([MAKE_ENTRY, (GPS_PTR, 4, 1, ("ifd", 0))], 0)]),
        "Exif IFD points to itself": exif_blob(
            [
                ([MAKE_ENTRY, (EXIF_PTR, 4, 1, ("ifd", 1))], 0),
                ([(EXIF_PTR, 4, 1, ("ifd", 1)), (INTEROP_PTR, 4, 1, ("ifd", 1))], ("ifd", 1)),
            ]
        ),
        "Interop IFD is IFD0": exif_blob(
            [
                ([MAKE_ENTRY, (EXIF_PTR, 4, 1, ("ifd", 1))], 0),
                ([(INTEROP_PTR, 4, 1, ("ifd", 0))], 0),
            ]
        ),
        "offsets outside the blob": exif_blob(
            [
                (
                    [
                        (0x010F, 2, 64, 0xFFFFFF00),
                        (EXIF_PTR, 4, 1, 0x7FFFFFFF),
                        (GPS_PTR, 4, 1, 0xFFFFFFF0),
                    ],
                    0xFFFFFFFF,
                )
            ]
        ),
        "GPS IFD inside a string": exif_blob([([MAKE_ENTRY, (GPS_PTR, 4, 1, ("tail", 3))], 0)]),
        "GPS IFD at the last byte": exif_blob(
            [([MAKE_ENTRY, (GPS_PTR, 4, 1, ("tail", len(MAKE) - 1))], 0)]
        ),
        "GPS IFD at an odd offset": exif_blob([([MAKE_ENTRY, (GPS_PTR, 4, 1, 1)], 0)]),
        "GPS pointer is ASCII": exif_blob([([MAKE_ENTRY, (GPS_PTR, 2, 4, b"GPS\x00")], 0)]),
        "GPS pointer has 2^32-1 values": exif_blob(
            [([MAKE_ENTRY, (GPS_PTR, 4, 0xFFFFFFFF, 8)], 0)]
        ),
        "IFD0 declares 65535 entries": exif_blob([([MAKE_ENTRY], 0)], count0=65535),
        "IFD0 at offset 0": exif_blob([([MAKE_ENTRY], 0)], first=0),
        "IFD0 past the end": exif_blob([([MAKE_ENTRY], 0)], first=0xFFFFFFF0),
        "IFD0 at the last byte": exif_blob([([MAKE_ENTRY], 0)], first=("tail", len(MAKE) - 1)),
        "thumbnail outside the blob": exif_blob(
            [
                ([MAKE_ENTRY], ("ifd", 1)),
                ([(0x0201, 4, 1, 0xFFFFFFF0), (0x0202, 4, 1, 0xFFFFFFF0)], 0),
            ]
        ),
        "thumbnail is the whole blob": exif_blob(
            [([MAKE_ENTRY], ("ifd", 1)), ([(0x0201, 4, 1, 0), (0x0202, 4, 1, 400)], 0)]
        ),
        "GPS rationals with zero denominators": exif_blob(
            [
                ([MAKE_ENTRY, (GPS_PTR, 4, 1, ("ifd", 1))], 0),
                (
                    [
                        (1, 2, 2, b"N\x00\x00\x00"),
                        (2, 5, 3, ("tail", 0)),
                        (3, 2, 2, b"E\x00\x00\x00"),
                        (4, 5, 3, ("tail", 0)),
                    ],
                    0,
                ),
            ],
            tail=MAKE + bytes(24),
        ),
        "zero-length IFD0": exif_blob([([], 0)]),
    }
    for typ in (1, 2, 3, 4, 5, 7, 9, 10, 11, 12):
        cases[f"type {typ} with 2^32-1 values"] = exif_blob(
            [([MAKE_ENTRY, (0x0131, typ, 0xFFFFFFFF, 8)], 0)]
        )
    for typ in (1, 3, 4):
        # the counts a hostile file would actually use: just small enough to be allocated
        cases[f"type {typ} with 2^24 values"] = exif_blob(
            [([MAKE_ENTRY, (0x0131, typ, 1 << 24, 8)], 0)]
        )
    return cases


def exif_carrier(carrier: str, blob: bytes) -> bytes:
    if carrier == "jpeg":
        return jpeg_with_app1(b"Exif\x00\x00" + blob)
    if carrier == "png":
        return png_insert(plain_png(), F.png_chunk(b"eXIf", blob))
    if carrier == "webp":
        base = plain_webp()
        vp8x = riff_chunk_at(base, b"VP8X")
        flagged = base[: vp8x + 8] + bytes([base[vp8x + 8] | 0x08]) + base[vp8x + 9 :]
        return webp_append(flagged, F.riff_chunk(b"EXIF", blob))
    raise ValueError(carrier)


def assert_hostile_exif_removed_whole(carrier: str) -> None:
    """Every hostile EXIF block in ``carrier`` (a good picture otherwise), in a child process:
    sanitize succeeds, removes the block whole and still reports, fast and in little memory."""
    cases = hostile_exifs()
    results = isolated([job(name, exif_carrier(carrier, blob)) for name, blob in cases.items()])
    problems = []
    for rec in results:
        if rec["outcome"] != "ok":
            problems.append(describe(rec))
            continue
        if rec["left"] or rec["same"]:
            problems.append(f"{rec['label']}: output not clean: {rec['left']}")
        if not rec["report"] and rec["label"] != "zero-length IFD0":
            problems.append(f"{rec['label']}: the report says nothing about the EXIF")
        if not any("exif" in str(r).lower() for r in rec["removed"]):
            problems.append(f"{rec['label']}: the EXIF container is not listed as removed")
        if float(rec["seconds"]) >= TIME_LIMIT or int(rec["peak"]) >= PEAK_LIMIT:
            problems.append(describe(rec))
    assert not problems, "\n".join(problems)


# =========================================================================== smuggling
def icc_with_payload() -> bytes:
    """Pillow's sRGB profile ("sRGB built-in", a standard description) with extra bytes."""
    icc = bytearray(F.icc_profile("srgb") + PAYLOAD)
    struct.pack_into(">I", icc, 0, len(icc))
    return bytes(icc)


def inflated_iccp(png: bytes) -> bytes:
    for kind, start, end in png_chunks(png):
        if kind == b"iCCP":
            body = png[start + 8 : end - 4]
            return zlib.decompress(body[body.index(b"\x00") + 2 :])
    return b""


def assert_payload_dropped(name: str, data: bytes, *, may_be_refused: bool = False) -> None:
    """``data`` hides ``PAYLOAD`` in structure a lossless strip keeps: the output (and any
    profile it carries, inflated) must not hold it. ``may_be_refused``: the input decodes
    nowhere, so refusing it as CorruptImage is the right answer too."""
    (o,) = check_all([(name, data)])
    if may_be_refused and o.result is None:
        assert isinstance(o.error, veilpix.CorruptImage), o.error
        return
    assert o.result is not None, f"{name}: {o.error}"
    out = o.result.data + inflated_iccp(o.result.data)
    assert b"TRACKING-ID" not in out, f"{name}: the payload survived sanitize()"


# =========================================================================== fuzzing
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000)
MUTATION = st.tuples(
    st.sampled_from(("flip", "set", "insert", "delete", "word", "dup")),
    st.booleans(),  # True: within the first 400 bytes, where the headers are
    st.integers(0, 1 << 24),  # position (reduced modulo the span)
    st.integers(0, 255),  # bit, byte, or index into INTERESTING (and byte order)
)


POLICIES = {  # the lossless strip, the strip with a decode check, the pixel path
    "default": veilpix.Policy(),
    "verify_decode": veilpix.Policy(verify_decode=True),
    "to-jpeg": veilpix.Policy(output_format="jpeg"),
}


def mutate(data: bytes, ops: list[tuple[str, bool, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, head, pos, value in ops:
        span = min(len(buf), 400) if head else len(buf)
        if span == 0:
            break
        i = pos % span
        if op == "flip":
            buf[i] ^= 1 << (value % 8)
        elif op == "set":
            buf[i] = value
        elif op == "insert":
            buf.insert(i, value)
        elif op == "delete":
            del buf[i]
        elif op == "word":
            word = INTERESTING[value % len(INTERESTING)]
            order = "big" if value & 0x80 else "little"
            size = 2 if value & 0x40 else 4
            buf[i : i + size] = (word & ((1 << (8 * size)) - 1)).to_bytes(size, order)
        else:  # dup: repeat a slice (lengths and counts that disagree with the content)
            buf[i:i] = buf[i : i + 1 + value]
    return bytes(buf)
