"""The work budget of the pixel path: time and memory, estimated before anything is decoded.

The byte, pixel and frame limits keep the *input* bounded, but a small file can still ask for
a lot of work: a 50 KB animated WebP of 1,000 frames of 632x632 turned by its EXIF
orientation took 7.7 s and 3.1 GB, a 1.1 MB GIF of 1,000 frames with a device colour profile
26-37 s and 3.1 GB. So before the pixel path decodes a picture, its work is estimated from what
the container declares (frames, canvas size, colour profile) and what the policy asks for
(output format, faces, downscale), and an image over ``Policy.max_work_seconds`` or
``Policy.max_memory`` raises ``ImageTooLarge`` naming the setting that raises the limit.

The estimate is a sum of per-pixel costs measured on one core (Python 3.11, Pillow 13,
photographic content; see ``docs/sanitize.md``). Content that compresses badly (noise, film
grain) encodes up to about 3x slower than the table says, flat content (screenshots,
drawings) faster, and animations in which little changes much faster (the encoders write
only the changed part of each frame): the estimate errs on the safe side there. Memory is what the pixel path holds at its peak: every decoded frame
(Pillow keeps them as 4 bytes per pixel), one working copy of the largest frame (turn,
colour conversion, resize), what the encoder keeps (Pillow's GIF writer a palette copy of
every frame, its APNG writer a full copy), the output, and the decode that verifies it.
The lossless path (a strip of the container, no decoding) is not held to this budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from veilpix._errors import ImageTooLarge
from veilpix._policy import Policy

__all__ = ["Work", "check_decode", "check_work", "estimate"]

_NS = 1e-9
_MB = 1 << 20

# nanoseconds per pixel, measured on one core (see the module docstring)
DECODE = {"JPEG": 7, "PNG": 14, "WEBP": 18, "GIF": 10, "TIFF": 14, "BMP": 3, "HEIF": 70, "AVIF": 25}
TURN = 3  # EXIF orientation: one transpose
COLOUR = 17  # an ICC profile applied with LittleCMS
RESIZE = 8  # Lanczos downscale with a reducing gap, per input pixel
ENCODE = {"JPEG": 4, "PNG": 60, "WEBP": 50, "GIF": 15, "TIFF": 60, "BMP": 2}
ENCODE_ANIMATED = {"PNG": 100, "WEBP": 75, "GIF": 90, "TIFF": 60}  # per frame: deltas, blending
ENCODE_WEBP_LOSSLESS = 250
ENCODE_GIF_QUANTIZE = 90  # RGB frames brought back to a palette
VERIFY = {"JPEG": 3, "PNG": 14, "WEBP": 16, "GIF": 9, "TIFF": 13, "BMP": 2}
# face detection: the network runs on the frame brought to 640-1920 pixels on its long side
# (plus three small probes for turned pictures); converting and turning the frame costs per
# pixel of the frame itself. Measured with veilpix's numpy runtime (issue 18; OpenCV's DNN
# took about 110 ns): 12 MP 1.28 s in all, 24 MP 1.77 s, 48 MP 2.71 s on 2 cores
FACE_NET = 250  # per pixel the network sees
FACE_PROBES = 0.06  # seconds per frame: the probes and the vote on small copies
FACE_PIXEL = 25
# bytes per pixel: the compressed output, and what an encoder holds next to the frame
OUTPUT = {"JPEG": 0.5, "PNG": 1.0, "WEBP": 0.5, "GIF": 1.0, "TIFF": 2.0, "BMP": 4.0}
ENCODER = {"JPEG": 0, "PNG": 0, "WEBP": 2, "GIF": 1, "TIFF": 0, "BMP": 0}
FRAME_BYTES = 4  # Pillow holds RGB, RGBA, CMYK and 32-bit images at 4 bytes per pixel


@dataclass(frozen=True)
class Work:
    """What the pixel path is estimated to cost for one picture."""

    seconds: float
    memory: int
    steps: tuple[str, ...]
    what: str  # "GIF, 1,000 frames of 632x632"

    def describe(self) -> str:
        return f"{self.what} ({', '.join(self.steps)})"


def target_size(
    width: int, height: int, *, max_side: int | None, max_pixels: int | None
) -> tuple[int, int]:
    """The largest size with the same aspect that meets both caps (never larger than now)."""
    scale = 1.0
    if max_side is not None:
        scale = min(scale, max_side / max(width, height))
    if max_pixels is not None:
        scale = min(scale, math.sqrt(max_pixels / (width * height)))
    if scale >= 1.0:
        return width, height
    w, h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    while max_pixels is not None and w * h > max_pixels:  # rounding can leave a pixel over
        w, h = max(1, w - 1), max(1, math.floor((w - 1) * height / width))
    return w, h


def estimate(
    fmt: str,
    target: str,
    *,
    frames: int,
    canvas: tuple[int, int],
    total: int = 0,
    turn: bool = False,
    colour: bool = False,
    faces: bool = False,
    resize_to: tuple[int, int] | None = None,
    lossless_webp: bool = False,
) -> Work:
    """The time and peak memory of decoding ``frames`` frames of ``canvas`` (or ``total``
    pixels in all, when pages differ in size), turning, colour-converting, looking for
    faces, downscaling to ``resize_to`` and encoding as ``target``, then verifying."""
    width, height = canvas
    largest = width * height
    total = max(total or largest * frames, largest)
    out_scale = 1.0
    if resize_to is not None and resize_to != canvas:
        out_scale = min(1.0, resize_to[0] * resize_to[1] / max(1, largest))
    out_total = math.ceil(total * out_scale)
    out_largest = math.ceil(largest * out_scale)
    steps = ["decode"]
    ns_in = DECODE.get(fmt, 20)
    if turn:  # often a guess (the orientation is read after decoding): cost only
        ns_in += TURN
    if colour:
        ns_in += COLOUR
        steps.append("colour conversion")
    seconds = total * ns_in * _NS
    if faces:
        long_side = max(width, height)
        net = min(2.0, min(max(long_side, 640), 1920) / max(1, long_side)) ** 2 * largest
        seconds += frames * (net * FACE_NET * _NS + FACE_PROBES) + total * FACE_PIXEL * _NS
        steps.append("face detection")
    if out_scale < 1.0:
        seconds += total * RESIZE * _NS
        steps.append("downscale")
    animated = frames > 1 and target in ("PNG", "WEBP", "GIF", "TIFF")
    encode = ENCODE_ANIMATED[target] if animated else ENCODE.get(target, 60)
    if target == "WEBP" and lossless_webp:
        encode = ENCODE_WEBP_LOSSLESS
    elif target == "GIF" and (animated or colour or faces or out_scale < 1.0 or fmt != "GIF"):
        encode = ENCODE_GIF_QUANTIZE
    coded = out_total if animated else out_largest
    seconds += coded * (encode + VERIFY.get(target, 15)) * _NS
    steps.append(f"{target} encode")
    memory = _memory(
        fmt,
        target,
        frames=frames,
        total=total,
        largest=largest,
        animated=animated,
        out_total=out_total,
        out_largest=out_largest,
        work_copy=turn or colour or out_scale < 1.0,
        faces=faces,
    )
    what = f"{fmt}, {width}x{height}"
    if frames > 1:
        what = f"{fmt}, {frames:,} frames of {width}x{height}"
    return Work(seconds=seconds, memory=memory, steps=tuple(steps), what=what)


def _memory(
    fmt: str,
    target: str,
    *,
    frames: int,
    total: int,
    largest: int,
    animated: bool,
    out_total: int,
    out_largest: int,
    work_copy: bool,
    faces: bool,
) -> int:
    """Peak bytes: the decoded frames plus the biggest thing held next to them, before the
    downscale (decoder, working copy, face detection) and after it (encoder and output,
    then the verifying decode)."""
    held = FRAME_BYTES * (total if frames > 1 else largest)
    before = 0
    if fmt == "HEIF":
        before = FRAME_BYTES * largest  # libheif's own buffer, copied into Pillow
    if work_copy:
        before = max(before, FRAME_BYTES * largest)  # one turned / converted / resized frame
    if faces:
        before = max(before, 10 * largest)  # RGB array, flattened copy, one turned copy
    held_out = FRAME_BYTES * (out_total if frames > 1 else out_largest)
    coded = out_total if animated else out_largest
    output = int(OUTPUT.get(target, 2.0) * coded)
    encoder = ENCODER.get(target, FRAME_BYTES) * out_largest
    if animated and target == "GIF":
        encoder += out_total  # Pillow's GIF writer keeps a palette copy of every frame
    elif animated and target == "PNG":
        encoder += FRAME_BYTES * out_total  # its APNG writer a full copy of every frame
    elif animated and target == "WEBP":
        encoder += 2 * FRAME_BYTES * out_largest  # libwebp: previous and candidate frames
    verify = 0 if target == "JPEG" else FRAME_BYTES * out_largest * (2 if animated else 1)
    after = max(encoder + 2 * output, verify + output)  # getvalue() copies the output once
    return max(held + before, held_out + after)


def check_work(policy: Policy, work: Work) -> None:
    """Raise ImageTooLarge when ``work`` is over the policy's time or memory budget."""
    if work.seconds > policy.max_work_seconds:
        raise ImageTooLarge(
            f"{work.describe()} needs about {work.seconds:.1f} s of pixel work, over the "
            f"budget of {policy.max_work_seconds:g} s",
            hint="raise Policy(max_work_seconds=...) / [policy] max_work_seconds in "
            "veilpix.toml, or send fewer frames or pixels",
        )
    if work.memory > policy.max_memory:
        raise ImageTooLarge(
            f"{work.describe()} needs about {_mib(work.memory)} of memory, over the "
            f"budget of {_mib(policy.max_memory)}",
            hint="raise Policy(max_memory=...) / [policy] max_memory in veilpix.toml, "
            "or send fewer frames or pixels",
        )


def check_decode(
    policy: Policy, fmt: str, *, frames: int, canvas: tuple[int, int], total: int = 0
) -> None:
    """The budget of decoding every frame and nothing else (``verify_decode=True`` on a
    lossless strip decodes the whole output): one frame held at a time, and its canvas."""
    width, height = canvas
    total = max(total or width * height * frames, width * height)
    what = (
        f"{fmt}, {frames:,} frames of {width}x{height}"
        if frames > 1
        else f"{fmt}, {width}x{height}"
    )
    work = Work(
        seconds=total * DECODE.get(fmt, 20) * _NS,
        memory=2 * FRAME_BYTES * width * height,
        steps=("decode to verify",),
        what=what,
    )
    check_work(policy, work)


def _mib(n: int) -> str:
    return f"{n / _MB:,.0f} MiB"
