"""Bounded work (issue 15): small inputs within the byte, pixel and frame limits must not
exhaust the machine. The pixel path estimates its time and memory before decoding and
refuses what is over ``Policy.max_work_seconds`` / ``Policy.max_memory`` with an
``ImageTooLarge`` that names the setting; what is within the budget still goes through,
with the frames held once (turned and converted in place, not copied per step).

The bombs run in a child process with an address-space cap, timed from outside, with the
child's peak resident memory (``VmHWM``) reported. The bounds are generous on purpose
(10 s, 600 MB): before the budget the WebP bomb (50 KB) took 7.7 s and 3.1 GB, the GIF
bomb (1.1 MB) 26-37 s and 3.1 GB.

Also here: GIFs that Pillow decodes and whose sanitized output did not decode (frames
reaching outside the logical screen; identical frames whose delays add up past what a GIF
delay can hold).
"""

from __future__ import annotations

import functools
import io
import json
import math
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import factories as F
import veilpix
from veilpix.image._budget import estimate

MB = 1 << 20
WALL = 10.0  # seconds the child process may take, start-up included
RSS = 600 * MB  # peak resident memory of the whole child process


# =========================================================================== bombs
def _u24(n: int) -> bytes:
    return n.to_bytes(3, "little")


@functools.cache
def webp_bomb(frames: int = 1000, side: int = 632, orientation: int = 6) -> bytes:
    """An animated WebP of ``frames`` frames on a ``side`` x ``side`` canvas, each frame a
    2x2 lossless image placed somewhere else, with EXIF orientation ``orientation``: about
    50 bytes a frame, and every frame decodes to the whole canvas."""
    buf = io.BytesIO()
    Image.new("RGB", (2, 2), (200, 30, 30)).save(buf, "WEBP", lossless=True)
    riff = buf.getvalue()
    at = riff.index(b"VP8L")
    vp8l = riff[at : at + 8 + struct.unpack_from("<I", riff, at + 4)[0]]
    body = b""
    for i in range(frames):
        x, y = (i * 2) % (side - 2), (i * 2 // (side - 2) * 2) % (side - 2)
        head = _u24(x // 2) + _u24(y // 2) + _u24(1) + _u24(1) + _u24(40) + b"\x00"
        body += F.riff_chunk(b"ANMF", head + vp8l)
    exif = Image.Exif()
    exif[274] = orientation
    vp8x = bytes([0x02 | 0x08, 0, 0, 0]) + _u24(side - 1) + _u24(side - 1)
    payload = (
        b"WEBP"
        + F.riff_chunk(b"VP8X", vp8x)
        + F.riff_chunk(b"ANIM", b"\x00\x00\x00\x00\x00\x00")
        + body
        + F.riff_chunk(b"EXIF", exif.tobytes())
    )
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def _sub_blocks(data: bytes) -> bytes:
    return (
        b"".join(
            bytes((len(data[i : i + 255]),)) + data[i : i + 255] for i in range(0, len(data), 255)
        )
        + b"\x00"
    )


def gif_icc_extension(icc: bytes) -> bytes:
    return b"\x21\xff\x0bICCRGBG1012" + _sub_blocks(icc)


@functools.cache
def gif_bomb(frames: int = 1000, side: int = 632, icc: str | None = "device") -> bytes:
    """A GIF of ``frames`` full-screen frames of ``side`` x ``side`` (two pictures taking
    turns, so no two neighbours are the same), with a colour profile that must be applied
    to the pixels ("device") or none: about 1 KB a frame."""
    blocks = []
    for colour in (1, 2):
        im = Image.new("P", (side, side), colour)
        im.putpalette(bytes(range(256)) * 3)
        buf = io.BytesIO()
        im.save(buf, "GIF", optimize=False)
        data = buf.getvalue()
        blocks.append(data[data.index(b"\x2c", 13 + 768) : -1])  # descriptor + LZW data
    head = buf.getvalue()[: 13 + 768]
    gce = b"\x21\xf9\x04\x00\x04\x00\x00\x00"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    extra = gif_icc_extension(F.icc_profile(icc)) if icc else b""
    body = b"".join(gce + blocks[i % 2] for i in range(frames))
    return head + loop + extra + body + b"\x3b"


_CHILD = r"""
import json, resource, sys, time
import PIL.Image
import veilpix, veilpix.image._pipeline, veilpix.image._pixels  # imported up front: not part of the cap
PIL.Image.init()
cap = int(sys.argv[2])
with open("/proc/self/status") as fh:
    vm = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + cap, resource.RLIM_INFINITY))
data = open(sys.argv[1], "rb").read()
policy = veilpix.Policy(**json.loads(sys.argv[3]))
rec = {}
t = time.perf_counter()
try:
    out = veilpix.sanitize(data, policy)
    rec.update(outcome="ok", frames=out.report.frames_out, lossless=out.report.lossless,
               size=[out.report.width_out, out.report.height_out])
except veilpix.VeilpixError as exc:
    rec.update(outcome=type(exc).__name__, message=exc.message, hint=exc.hint)
except MemoryError:
    rec.update(outcome="MemoryError")
rec["seconds"] = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent (a test
# worker that already grew large), VmHWM is this program's own high-water mark
with open("/proc/self/status") as fh:
    rec["rss"] = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))
print(json.dumps(rec))
"""


def isolated(data: bytes, tmp_path: Path, **policy: object) -> dict[str, Any]:
    """sanitize(data) in a child process with 1 GiB of address space on top of what the
    interpreter and veilpix use; wall time measured from here, start-up included."""
    if not sys.platform.startswith("linux"):
        pytest.skip("measures memory through /proc and RLIMIT_AS (Linux)")
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), str(1 << 30), json.dumps(policy)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("sanitize() still running after 60 s")
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    rec["wall"] = wall
    return rec


def _said(rec: dict[str, Any]) -> str:
    return (
        f"{rec['outcome']}: {rec.get('message', '')} - {rec['seconds']:.2f} s in sanitize, "
        f"{rec['wall']:.2f} s in all, {rec['rss'] / MB:.0f} MB peak resident"
    )


def test_bombs_are_what_the_issue_describes() -> None:
    """Small files within today's byte, pixel and frame limits."""
    webp, gif = webp_bomb(), gif_bomb()
    assert len(webp) < 80_000 and len(gif) < 2_500_000
    policy = veilpix.Policy()
    for data in (webp, gif):
        ins = veilpix.inspect(data)
        assert (ins.width, ins.height, ins.frames) == (632, 632, 1000)
        assert ins.frames <= policy.max_frames
        assert ins.width * ins.height * ins.frames <= policy.max_total_pixels
    assert veilpix.inspect(webp).orientation == 6
    assert veilpix.inspect(gif).icc is not None


@pytest.mark.parametrize(
    ("name", "bomb"),
    [
        ("animated WebP, 1000 frames of 632x632, orientation 6", webp_bomb),
        ("GIF, 1000 frames of 632x632, device colour profile", gif_bomb),
    ],
)
def test_bomb_is_refused_quickly_and_small(name: str, bomb: Any, tmp_path: Path) -> None:
    rec = isolated(bomb(), tmp_path)
    assert rec["outcome"] == "ImageTooLarge", _said(rec)
    assert "max_work_seconds" in rec["hint"] and "[policy]" in rec["hint"], rec["hint"]
    assert "1,000 frames of 632x632" in rec["message"], rec["message"]
    assert rec["wall"] < WALL and rec["rss"] < RSS, _said(rec)


def test_bomb_sized_input_within_the_budget_is_processed(tmp_path: Path) -> None:
    """The same kind of input with as many frames as the default budget allows is decoded,
    turned and re-encoded within the time and memory bounds."""
    frames = _frames_within(veilpix.Policy(), "WEBP", side=632, turn=True, lossless_webp=True)
    assert 10 <= frames < 1000
    rec = isolated(webp_bomb(frames=frames), tmp_path)
    assert rec["outcome"] == "ok", _said(rec)
    assert rec["frames"] >= 1 and rec["size"] == [632, 632] and not rec["lossless"]
    assert rec["wall"] < WALL and rec["rss"] < RSS, _said(rec)


def test_gif_bomb_within_the_budget_is_processed(tmp_path: Path) -> None:
    frames = _frames_within(veilpix.Policy(), "GIF", side=632, colour=True)
    assert 10 <= frames < 1000
    rec = isolated(gif_bomb(frames=frames), tmp_path)
    assert rec["outcome"] == "ok", _said(rec)
    assert not rec["lossless"] and rec["size"] == [632, 632]
    assert rec["wall"] < WALL and rec["rss"] < RSS, _said(rec)


def _frames_within(policy: veilpix.Policy, fmt: str, *, side: int, **steps: bool) -> int:
    """The most frames of side x side the default budget accepts on this path."""
    n = 1
    while (
        estimate(fmt, fmt, frames=n + 1, canvas=(side, side), **steps).seconds
        <= policy.max_work_seconds
    ):
        n += 1
    return n


def test_frames_are_held_once(tmp_path: Path) -> None:
    """Raising the budget lets the whole bomb through; the turned frames replace the decoded
    ones as they are made, so the animation is held once (4 bytes a pixel), not two or
    three times (it was 3.1 GB: decoded + turned copies side by side)."""
    rec = isolated(webp_bomb(frames=150), tmp_path, max_work_seconds=60)
    assert rec["outcome"] == "ok", _said(rec)
    pixels = 150 * 632 * 632
    assert rec["rss"] < 100 * MB + 5 * pixels, _said(rec)  # was 8 bytes a pixel and more


def test_the_lossless_path_is_not_held_to_the_budget() -> None:
    """Nothing is decoded when the strip can keep the picture: the 1000-frame GIF without a
    profile to apply is stripped in well under a second of pixel work."""
    data = gif_bomb(icc=None)
    out = veilpix.sanitize(data)
    assert out.report.lossless and out.report.frames_out == 1000


# =========================================================================== settings
def test_budget_refusals_name_the_setting() -> None:
    data = F.png(icc=F.icc_profile("device"))  # colour conversion: the pixel path
    veilpix.sanitize(data)
    with pytest.raises(veilpix.ImageTooLarge, match="pixel work") as exc:
        veilpix.sanitize(data, veilpix.Policy(max_work_seconds=1e-6))
    assert "Policy(max_work_seconds=...)" in exc.value.hint
    assert "[policy] max_work_seconds" in exc.value.hint
    with pytest.raises(veilpix.ImageTooLarge, match="of memory") as exc:
        veilpix.sanitize(data, veilpix.Policy(max_memory=1000))
    assert "Policy(max_memory=...)" in exc.value.hint and "[policy] max_memory" in exc.value.hint


@pytest.mark.parametrize(
    "fmt_data",
    [
        lambda: F.jpeg(icc=F.icc_profile("device")),
        lambda: F.webp(frames=2),
        lambda: F.png(apng_frames=3, icc=F.icc_profile("device")),
        lambda: F.tiff(pages=2, orientation=6),
        F.bmp,
    ],
    ids=["jpeg-device-profile", "webp-animated", "apng-device-profile", "tiff-turned", "bmp"],
)
def test_every_pixel_path_is_budgeted(fmt_data: Any) -> None:
    data = fmt_data()
    veilpix.sanitize(data)
    with pytest.raises(veilpix.ImageTooLarge, match="max_work_seconds"):
        veilpix.sanitize(data, veilpix.Policy(max_work_seconds=1e-6))


def test_sixteen_bit_reencode_is_budgeted() -> None:
    """The 16-bit path (veilpix's own PNG/TIFF codecs) takes the budget when it is given the policy and size."""
    from veilpix.image._pixels import deep_reencode

    data, _ = F.png16(orientation=6)
    assert deep_reencode(data, "PNG", 6, policy=veilpix.Policy(), size=(24, 40))
    with pytest.raises(veilpix.ImageTooLarge, match="max_memory"):
        deep_reencode(data, "PNG", 6, policy=veilpix.Policy(max_memory=1000), size=(24, 40))


def test_verify_decode_budget() -> None:
    """For the pipeline's verify_decode=True on a lossless strip (decodes every frame)."""
    from veilpix.image._budget import check_decode

    check_decode(veilpix.Policy(), "GIF", frames=100, canvas=(632, 632))
    with pytest.raises(veilpix.ImageTooLarge, match="decode to verify"):
        check_decode(veilpix.Policy(), "GIF", frames=1000, canvas=(632, 632))


def test_limit_refusals_name_their_setting() -> None:
    gif = F.gif(frames=3)
    cases = [
        ({"max_frames": 2}, "max_frames"),
        ({"max_total_pixels": 9215}, "max_total_pixels"),
        ({"max_input_pixels": 100}, "max_input_pixels"),
    ]
    for limits, setting in cases:
        with pytest.raises(veilpix.ImageTooLarge) as exc:
            veilpix.sanitize(gif, veilpix.Policy(**limits))  # type: ignore[arg-type]
        assert f"Policy({setting}=...)" in exc.value.hint
        assert f"[policy] {setting}" in exc.value.hint


def test_heif_is_budgeted() -> None:
    pytest.importorskip("pillow_heif")
    data = F.heic()
    veilpix.sanitize(data)
    with pytest.raises(veilpix.ImageTooLarge, match="HEIF"):
        veilpix.sanitize(data, veilpix.Policy(max_work_seconds=1e-6))


def test_faces_and_downscale_count() -> None:
    """Looking for faces costs per frame; a downscale makes the encode cheaper."""
    base = estimate("GIF", "GIF", frames=100, canvas=(480, 270))
    faces = estimate("GIF", "GIF", frames=100, canvas=(480, 270), faces=True)
    small = estimate("GIF", "GIF", frames=100, canvas=(480, 270), resize_to=(240, 135))
    assert faces.seconds > base.seconds + 100 * 0.02
    assert small.seconds < base.seconds
    assert "face detection" in faces.steps and "downscale" in small.steps


def test_policy_validates_the_budget() -> None:
    for bad in (0, -1, True, "2", math.nan):
        with pytest.raises(veilpix.ConfigError, match="max_work_seconds"):
            veilpix.Policy(max_work_seconds=bad)  # type: ignore[arg-type]
    for bad in (0, -1, True, 1.5):
        with pytest.raises(veilpix.ConfigError, match="max_memory"):
            veilpix.Policy(max_memory=bad)  # type: ignore[arg-type]
    assert veilpix.Policy(max_work_seconds=math.inf).max_work_seconds == math.inf
    assert veilpix.Policy().max_work_seconds == 2.0
    assert veilpix.Policy().max_memory == 512 * MB


def test_budget_settings_in_veilpix_toml(tmp_path: Path) -> None:
    path = tmp_path / "veilpix.toml"
    path.write_text(
        "[policy]\nmax_work_seconds = 10\nmax_memory = 1073741824\n"
        "max_frames = 5000\nmax_total_pixels = 1000000000\n"
        "[apps.batch]\nmax_work_seconds = 60.5\n",
        encoding="utf-8",
    )
    config = veilpix.load_config(path)
    policy = config.policy()
    assert (policy.max_work_seconds, policy.max_memory) == (10, 1 << 30)
    assert (policy.max_frames, policy.max_total_pixels) == (5000, 1_000_000_000)
    assert config.policy("batch").max_work_seconds == 60.5
    path.write_text('[policy]\nmax_work_seconds = "lots"\n', encoding="utf-8")
    with pytest.raises(veilpix.ConfigError, match="max_work_seconds"):
        veilpix.load_config(path)


# =========================================================================== legit animations
def _gif_animation(frames: int, size: tuple[int, int], *, icc: bool) -> bytes:
    seq = [
        F.picture(size).rotate(i * 7).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        for i in range(frames)
    ]
    buf = io.BytesIO()
    seq[0].save(buf, "GIF", save_all=True, append_images=seq[1:], duration=50, loop=0)
    data = buf.getvalue()
    if not icc:
        return data
    at = data.index(b"\x21\xff")
    return data[:at] + gif_icc_extension(F.icc_profile("device")) + data[at:]


def test_legit_animations_pass() -> None:
    """Animations of the sizes people send (a few hundred pixels, tens of frames) go through
    the pixel path with the default budget, every frame kept."""
    gif = _gif_animation(30, (480, 270), icc=True)
    out = veilpix.sanitize(gif)
    assert not out.report.lossless and out.report.frames_out == 30
    assert out.report.icc.startswith("converted")
    frames = [F.picture((320, 240)).rotate(i * 5) for i in range(40)]
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[274] = 6
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=40, exif=exif)
    out = veilpix.sanitize(buf.getvalue())
    assert out.report.frames_out == 40 and (out.report.width_out, out.report.height_out) == (
        240,
        320,
    )
    out = veilpix.sanitize(gif, veilpix.Policy(max_side=200))
    assert out.report.frames_out == 30 and max(out.report.width_out, out.report.height_out) == 200


# =========================================================================== GIF classes
def _lzw_block(size: tuple[int, int], at: tuple[int, int], colour: int) -> bytes:
    """An image descriptor at ``at`` with LZW data for a ``size`` frame of one colour."""
    im = Image.new("P", size, colour)
    im.putpalette(bytes(range(256)) * 3)
    buf = io.BytesIO()
    im.save(buf, "GIF", optimize=False)
    data = buf.getvalue()
    block = data[data.index(b"\x2c", 13 + 768) : -1]
    return b"\x2c" + struct.pack("<HH", *at) + block[5:]


def gif_frames_outside_screen() -> bytes:
    """A 20x16 logical screen whose second frame is 30x24 and third lies at (22, 18):
    Pillow grows its canvas to 30x24 then 27x23..., browsers draw the screen only."""
    head = b"GIF89a" + struct.pack("<HHBBB", 20, 16, 0xF7, 0, 0) + bytes(range(256)) * 3
    gce = b"\x21\xf9\x04\x00\x0a\x00\x00\x00"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    frames = [
        _lzw_block((20, 16), (0, 0), 1),
        _lzw_block((30, 24), (0, 0), 2),
        _lzw_block((5, 5), (22, 18), 3),
    ]
    return head + loop + b"".join(gce + f for f in frames) + b"\x3b"


def _decodes(data: bytes) -> tuple[int, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as im:
        n = getattr(im, "n_frames", 1)
        for i in range(n):
            im.seek(i)
            im.load()
        return n, im.size


@pytest.mark.parametrize(
    "policy",
    [
        veilpix.Policy(output_format="png"),
        veilpix.Policy(output_format="webp"),
        veilpix.Policy(max_side=18),
    ],
    ids=["to-png", "to-webp", "downscaled-gif"],
)
def test_gif_frames_outside_the_screen_re_encode(policy: veilpix.Policy) -> None:
    """The pixel path put frames of different sizes into one animation: an APNG whose later
    frames overflow its header (undecodable), a RuntimeError from libwebp. Now every frame
    is on the canvas Pillow grew to, and the output decodes frame by frame."""
    data = gif_frames_outside_screen()
    assert _decodes(data)[0] == 3  # Pillow decodes the input
    out = veilpix.sanitize(data, policy)
    n, size = _decodes(out.data)
    assert size == (out.report.width_out, out.report.height_out)
    assert n >= 2


def test_gif_frames_outside_the_screen_with_a_profile() -> None:
    data = gif_frames_outside_screen()
    at = data.index(b"\x21\xff")
    data = data[:at] + gif_icc_extension(F.icc_profile("device")) + data[at:]
    out = veilpix.sanitize(data)
    assert not out.report.lossless
    n, size = _decodes(out.data)
    assert n == 3 and size == (30, 24) == (out.report.width_out, out.report.height_out)


def test_gif_frames_outside_the_screen_strip() -> None:
    """The lossless strip keeps the 20x16 logical screen; Pillow decodes it to 30x24, so
    verify_decode=True refuses veilpix's own output and the report's size is not what a
    decoder shows."""
    data = gif_frames_outside_screen()
    out = veilpix.sanitize(data, veilpix.Policy(verify_decode=True))
    assert out.report.lossless
    assert _decodes(out.data) == (3, (out.report.width_out, out.report.height_out))


def test_gif_identical_frames_with_long_delays() -> None:
    """Two identical frames of 655.35 s each: Pillow's GIF writer merges them and cannot
    write the sum (an OverflowError escaped). They become one frame of the longest delay."""
    head = b"GIF89a" + struct.pack("<HHBBB", 20, 16, 0xF7, 0, 0) + bytes(range(256)) * 3
    gce = b"\x21\xf9\x04\x00\xff\xff\x00\x00"
    frame = _lzw_block((20, 16), (0, 0), 1)
    data = head + gce + frame + gce + frame + gce + _lzw_block((4, 4), (2, 2), 9) + b"\x3b"
    assert _decodes(data)[0] == 3
    at = data.index(b"\x21\xf9")
    profiled = data[:at] + gif_icc_extension(F.icc_profile("device")) + data[at:]
    for source, policy in ((profiled, veilpix.Policy()), (data, veilpix.Policy(max_side=16))):
        out = veilpix.sanitize(source, policy)
        assert not out.report.lossless
        assert _decodes(out.data)[0] == 2
        with Image.open(io.BytesIO(out.data)) as im:
            assert im.info["duration"] == 655_350
