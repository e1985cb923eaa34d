"""The pixel path: decode (bounded), apply orientation and colour profile, encode from pixels.

Used when the picture must change (orientation other than 1, a device colour profile, a
format change, HEIC/AVIF input, TIFF/BMP that cannot be rewritten in place). Output images
are built from pixels only: every Pillow image handed to an encoder has an empty ``info`` and
only what the picture needs (ICC when standard, transparency, durations, loop) is passed
explicitly, because Pillow otherwise copies comments, EXIF, XMP and ICC from ``info``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from veilpix._errors import (
    CorruptImage,
    ImageTooLarge,
    UnsafeOutput,
    UnsupportedImage,
    VeilpixError,
)
from veilpix._install import install_command
from veilpix._policy import Policy
from veilpix.formats._registry import FORMATS
from veilpix.formats._scan import check_limits
from veilpix.image._budget import check_work, estimate, target_size
from veilpix.metadata._icc import is_standard, to_srgb

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Picture",
    "decode",
    "deep_reencode",
    "encode",
    "estimate_jpeg_quality",
    "orient",
    "output_format",
]

# EXIF orientation -> the Image.Transpose member name that undoes it
_TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}
# IJG standard luminance quantization table (natural order), for the quality estimate.
_STD_LUMA = (
    16,
    11,
    10,
    16,
    24,
    40,
    51,
    61,
    12,
    12,
    14,
    19,
    26,
    58,
    60,
    55,
    14,
    13,
    16,
    24,
    40,
    57,
    69,
    56,
    14,
    17,
    22,
    29,
    51,
    87,
    80,
    62,
    18,
    22,
    37,
    56,
    68,
    109,
    103,
    77,
    24,
    35,
    55,
    64,
    81,
    104,
    113,
    92,
    49,
    64,
    78,
    87,
    103,
    121,
    120,
    101,
    72,
    92,
    95,
    98,
    112,
    100,
    103,
    99,
)
DEFAULT_QUALITY = 90


@dataclass
class Picture:
    """Decoded frames plus what the encoder needs to keep the picture as it was."""

    frames: list[Image.Image]
    source: str
    durations: list[int] = field(default_factory=list)
    loop: int | None = None
    icc: bytes | None = None
    orientation: int = 1
    jpeg: dict[str, Any] = field(default_factory=dict)
    lossless_source: bool = False
    meta: dict[str, Any] = field(default_factory=dict)  # decoder info (HEIF/AVIF), for the report
    notes: list[str] = field(default_factory=list)


def estimate_jpeg_quality(qtables: dict[int, list[int]] | None) -> int | None:
    """IJG quality (1-100) of luminance table 0: the average scale factor against the
    standard table, inverted the way libjpeg's quality scaling is defined."""
    table = (qtables or {}).get(0)
    if not table or len(table) != 64:
        return None
    scale = sum(t * 100 / s for t, s in zip(table, _STD_LUMA, strict=True)) / 64
    quality = (200 - scale) / 2 if scale <= 100 else 5000 / scale
    return max(1, min(100, round(quality)))


def orient(im: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation (1-8) to the pixels."""
    from PIL import Image

    op = _TRANSPOSE.get(orientation)
    return im.transpose(Image.Transpose[op]) if op is not None else im


@contextlib.contextmanager
def decoding(what: str, *, output: bool = False) -> Iterator[None]:
    """Translate whatever a decoder raises on hostile input into the VeilpixError tree:
    too big -> ImageTooLarge; anything else -> CorruptImage (UnsafeOutput for veilpix's own
    output). Decoders (Pillow, pillow-heif, libavif, libtiff) raise many unrelated types."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except VeilpixError:
        raise
    except (Image.DecompressionBombError, MemoryError) as exc:
        raise ImageTooLarge(f"{what} is too large to decode: {_said(exc)}") from exc
    except Exception as exc:  # decoders raise anything on hostile input: see above
        if output:
            raise UnsafeOutput(
                f"veilpix's own {what} output does not decode: {_said(exc)}"
            ) from exc
        raise CorruptImage(f"{what} image could not be decoded: {_said(exc)}") from exc


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _said(exc: BaseException) -> str:
    """What a decoder's error says, without the memory addresses some put in it
    ("cannot identify image file <_io.BytesIO object at 0x7f...>")."""
    return _OBJECT_REPR.sub("the data", str(exc))


def _open(data: bytes, fmt: str) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        with decoding(fmt):
            return Image.open(io.BytesIO(data), formats=list(FORMATS[fmt].decoders))
    except CorruptImage as exc:
        if fmt == "AVIF" and isinstance(exc.__cause__, UnidentifiedImageError):
            from PIL import features

            if not features.check("avif"):
                raise UnsupportedImage(
                    "this Pillow build cannot decode AVIF", hint="install Pillow 11.3 or newer"
                ) from exc
        raise


def _open_heif(data: bytes, policy: Policy) -> Picture:
    try:
        import pillow_heif
    except ImportError as exc:
        raise UnsupportedImage(
            "HEIC/HEIF support is not installed", hint=install_command("heif")
        ) from exc
    with decoding("HEIF"):
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        img = heif[heif.primary_index]
        width, height = img.size
        check_limits(policy, width, height, 1)
        budget = _Budget(
            policy, "HEIF", output_format("HEIF", policy, 1, alpha=bool(img.has_alpha))
        )
        budget.colour = _converts(policy, _bytes(img.info.get("icc_profile")))
        budget.check(1, (width, height))
        im = img.to_pillow()
        im.load()
        info = dict(img.info)
        count = len(heif)
    pic = Picture([im], "HEIF", icc=_bytes(info.get("icc_profile")))
    if count > 1:
        pic.notes.append(f"kept the primary image of {count} in the HEIF collection")
    pic.meta = info
    return pic


def _bytes(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray) and value else None


def decode(data: bytes, fmt: str, policy: Policy) -> Picture:
    """Decode every frame that belongs to the picture (the primary image, every animation
    frame, every TIFF page), composited, with its timing."""
    if fmt == "HEIF":
        return _open_heif(data, policy)
    im = _open(data, fmt)
    try:
        with decoding(fmt):
            n = 1 if fmt == "JPEG" else getattr(im, "n_frames", 1)
            check_limits(policy, im.width, im.height, n)
            budget = _budget(im, data, fmt, policy, n)
            # TIFF pages differ in size: each is held to the budget as it comes
            budget.check(1 if fmt == "TIFF" else n, im.size)
            return _frames(im, fmt, policy, n, budget)
    finally:
        im.close()


class _Budget:
    """The work budget of one picture (see veilpix.image._budget): what its decode will cost,
    checked before the first frame and again whenever a frame grows the canvas."""

    def __init__(self, policy: Policy, fmt: str, target: str) -> None:
        self.policy = policy
        self.fmt = fmt
        self.target = target
        self.turn = FORMATS[fmt].exif_orientation  # an EXIF orientation, maybe
        self.colour = False
        self.lossless_webp = False

    def check(self, frames: int, canvas: tuple[int, int], total: int = 0) -> None:
        policy = self.policy
        resize = None
        if policy.max_side is not None or policy.max_pixels is not None:
            resize = target_size(*canvas, max_side=policy.max_side, max_pixels=policy.max_pixels)
        work = estimate(
            self.fmt,
            self.target,
            frames=frames,
            canvas=canvas,
            total=total,
            turn=self.turn,
            colour=self.colour,
            faces=policy.looks_for_faces,
            resize_to=resize,
            lossless_webp=self.lossless_webp,
        )
        check_work(policy, work)


def output_format(fmt: str, policy: Policy, frames: int, *, alpha: bool) -> str:
    """The format the pixel path writes: the policy's, else the input's own, else (HEIF,
    AVIF) PNG for an animation or alpha and JPEG otherwise."""
    if policy.output_format != "auto":
        return policy.output_format.upper()
    if not FORMATS[fmt].writable:
        return "PNG" if frames > 1 or alpha else "JPEG"
    return fmt


def _converts(policy: Policy, icc: bytes | None) -> bool:
    """Whether prepare() will apply ``icc`` to the pixels."""
    return icc is not None and not (policy.keep_standard_icc and is_standard(icc))


def _budget(im: Image.Image, data: bytes, fmt: str, policy: Policy, frames: int) -> _Budget:
    alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    budget = _Budget(policy, fmt, output_format(fmt, policy, frames, alpha=alpha))
    icc = _bytes(im.info.get("icc_profile"))
    if fmt == "GIF":  # Pillow does not read a GIF's profile; the pipeline applies it
        budget.colour = b"ICCRGBG1" in data
    elif fmt == "BMP":  # nor a BMP's: a V5 header may carry one
        budget.colour = len(data) >= 18 and int.from_bytes(data[14:18], "little") >= 124
    else:
        budget.colour = _converts(policy, icc)
    budget.lossless_webp = fmt == "WEBP" and policy.quality is None and _webp_lossless(data)
    return budget


def _webp_lossless(data: bytes) -> bool:
    """Whether a WebP holds a lossless (VP8L) image or frame: it is re-encoded losslessly.
    The chunks are walked up to a few thousand (a hostile file can hold millions of empty
    ones); past that, any "VP8L" in the rest counts (at worst an estimate on the safe side)."""
    end = min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    p = 12
    for _ in range(4096):
        if p + 8 > end:
            return False
        kind, size = data[p : p + 4], int.from_bytes(data[p + 4 : p + 8], "little")
        if kind == b"VP8L":
            return True
        if kind == b"ANMF":  # 16 bytes of frame header, then [ALPH] VP8 or VP8L
            q, stop = p + 24, min(end, p + 8 + size)
            for _ in range(3):
                if q + 8 > stop:
                    break
                if data[q : q + 4] == b"VP8L":
                    return True
                q += 8 + int.from_bytes(data[q + 4 : q + 8], "little")
                q += q & 1
        p += 8 + size + (size & 1)
    return data.find(b"VP8L", p, end) >= 0


def _frames(
    im: Image.Image, fmt: str, policy: Policy, n: int, budget: _Budget | None = None
) -> Picture:
    """Every frame that belongs to the picture, each checked against the limits."""
    from PIL import JpegImagePlugin

    pic = Picture([], fmt, loop=im.info.get("loop"))
    if fmt == "JPEG":
        pic.jpeg = {
            "qtables": getattr(im, "quantization", None),
            "subsampling": JpegImagePlugin.get_sampling(im),
            "progressive": bool(im.info.get("progressive") or im.info.get("progression")),
        }
    if fmt != "TIFF":  # (Pillow turns TIFF pages itself on load)
        # what the decoder read: the pipeline's facts for AVIF, and for a repaired file
        # whose container the scanner refused; else the scanner's facts take precedence
        pic.orientation = int(im.getexif().get(274, 1) or 1)
        pic.meta = {k: v for k, v in im.info.items() if isinstance(k, str)}
    pic.icc = _bytes(im.info.get("icc_profile"))
    page_orientations: list[int] = []
    seen = 0
    largest = im.size
    for i in range(n):
        if i:
            im.seek(i)
        seen += im.width * im.height  # pages and frames may differ in size
        check_limits(policy, im.width, im.height, n, total=seen)
        if budget is not None and (fmt == "TIFF" or im.size != largest):
            # a TIFF page (pages differ: held to the budget as they come), or a GIF frame
            # that grew the canvas (every frame after it is as big)
            if im.width * im.height > largest[0] * largest[1]:
                largest = im.size
            rest = 0 if fmt == "TIFF" else (n - i - 1) * im.width * im.height
            budget.check(i + 1 if fmt == "TIFF" else n, largest, total=seen + rest)
        if fmt == "TIFF":
            tags = getattr(im, "tag_v2", {})
            if int(tags.get(254, 0) or 0) & 1:
                continue  # reduced-resolution copy (a preview), not a page, wherever it sits
            page = int(tags.get(274, 1) or 1)
            im.load()
            # Pillow's TIFF plugin turns the page itself (and drops the tag) on load
            page_orientations.append(1 if 274 not in getattr(im, "tag_v2", {}) else page)
        im.load()
        # a single frame is wrapped without copying its pixels; animation frames are
        # copied because seeking reuses the decoder's buffer
        pic.frames.append(_detach(im) if n == 1 else im.copy())
        pic.durations.append(int(im.info.get("duration", 0) or 0))
    if not pic.frames:
        raise UnsupportedImage(
            "every image in this TIFF is a reduced-resolution preview: the main image is missing"
        )
    if page_orientations:
        pic.jpeg["page_orientations"] = page_orientations
    if len(pic.frames) > 1 and FORMATS[fmt].animated:
        _uniform(pic.frames)
    return pic


def _uniform(frames: list[Image.Image]) -> None:
    """Animation frames in one mode and on one canvas, in place (one frame is converted at a
    time, so the old copies do not pile up). Pillow returns GIF frame 0 as P and later ones
    as RGB(A), and grows the canvas when a frame reaches outside the logical screen: the
    frames before it are then smaller, and are put on the grown canvas at (0, 0), the way
    Pillow composites the frames that follow."""
    from PIL import Image

    has_alpha = any(
        f.mode in ("RGBA", "LA", "PA") or (f.mode == "P" and "transparency" in f.info)
        for f in frames
    )
    mode = "RGBA" if has_alpha else "RGB"
    size = (max(f.width for f in frames), max(f.height for f in frames))
    for i, frame in enumerate(frames):
        out = frame if frame.mode == mode else frame.convert(mode)
        if out.size != size:
            canvas = Image.new(mode, size)
            canvas.paste(out, (0, 0))
            out = canvas
        frames[i] = out


def _detach(im: Image.Image) -> Image.Image:
    """A plain Image over the same pixel core (no copy), so no plugin-specific attributes
    (a TIFF's tag directory, a PNG's text) can follow the pixels into an encoder."""
    return im._new(im.im)


def _clean(im: Image.Image) -> tuple[Image.Image, Any]:
    """A plain image with empty info (so no encoder copies metadata from it), and its
    transparency. The pixels are shared, not copied."""
    transparency = im.info.get("transparency")
    fresh = _detach(im)
    fresh.info = {}
    return fresh, transparency


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    )


def flatten(im: Image.Image) -> Image.Image:
    from PIL import Image

    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def _for_jpeg(im: Image.Image) -> Image.Image:
    if has_alpha(im):
        return flatten(im)
    if im.mode in ("L", "RGB", "CMYK"):
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return to_8bit_gray(im)
    return im.convert("RGB")


def to_8bit_gray(im: Image.Image) -> Image.Image:
    import numpy as np
    from PIL import Image

    arr = np.asarray(im.convert("I"), dtype=np.int64)
    return Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8), "L")


def prepare(pic: Picture, policy: Policy, orientation: int) -> tuple[str, str]:
    """Apply orientation and colour management in place. Returns (icc status, icc note)."""
    pages = pic.jpeg.get("page_orientations") or [orientation] * len(pic.frames)
    convert = pic.icc is not None and not (policy.keep_standard_icc and is_standard(pic.icc))
    real = True
    # frame by frame, in place: each turned or converted frame replaces its source at once,
    # so at most one extra frame is alive (not a second and third copy of the animation)
    for i, turn in zip(range(len(pic.frames)), pages, strict=True):
        frame = orient(pic.frames[i], turn)
        if convert:
            assert pic.icc is not None
            frame, ok = to_srgb(frame, pic.icc)
            real = real and ok
        pic.frames[i] = frame
        del frame
    if pic.icc is None:
        return "none", ""
    if not convert:
        return "kept", ""
    pic.icc = None
    return ("converted" if real else "dropped"), (
        "pixels converted to sRGB, profile dropped" if real else "unreadable profile dropped"
    )


def encode(pic: Picture, target: str, policy: Policy) -> tuple[bytes, list[str]]:
    """Encode ``pic`` as ``target`` (JPEG, PNG, WEBP, GIF, TIFF, BMP) from pixels only."""
    notes: list[str] = []
    buf = io.BytesIO()
    icc = pic.icc
    frames = pic.frames
    animated = len(frames) > 1
    try:
        if target == "JPEG":
            im, _ = _clean(_for_jpeg(frames[0]))
            if animated:
                notes.append(f"JPEG holds one frame: kept the first of {len(frames)}")
            if has_alpha(frames[0]):
                notes.append("alpha flattened onto white for JPEG")
            args: dict[str, Any] = {"optimize": False}
            qtables = pic.jpeg.get("qtables")
            est = estimate_jpeg_quality(qtables) if qtables else None
            if policy.quality is None and est is not None and im.mode in ("L", "RGB", "CMYK"):
                # the input's quality, with libjpeg's own tables at that quality: the input's
                # table values are the writer's choice and could carry data, so none is copied
                args["quality"] = est
                sampling = pic.jpeg.get("subsampling", -1)
                if sampling == 1 and pic.orientation in (5, 6, 7, 8):
                    sampling = 0
                args["subsampling"] = sampling if sampling in (0, 1, 2) else 0
                notes.append(f"re-encoded at the input's quality (≈{est}) with standard tables")
            else:
                args["quality"] = policy.quality or DEFAULT_QUALITY
            if pic.jpeg.get("progressive"):
                args["progressive"] = True
            if icc is not None and im.mode == "RGB":
                args["icc_profile"] = icc
            im.save(buf, "JPEG", **args)
        elif target == "PNG":
            imgs = [_clean(_for_png(f)) for f in frames]
            im, transparency = imgs[0]
            args = {"compress_level": 6}
            if icc is not None and im.mode in ("RGB", "RGBA"):
                args["icc_profile"] = icc
            if transparency is not None and not animated:
                args["transparency"] = transparency
            if animated:
                args.update(
                    save_all=True,
                    append_images=[f for f, _ in imgs[1:]],
                    duration=pic.durations,
                    loop=pic.loop or 0,
                    disposal=0,
                    blend=0,
                )
            im.save(buf, "PNG", **args)
        elif target == "WEBP":
            webp = [_clean(_for_webp(f))[0] for f in frames]
            args = {"method": 2, "exact": True}  # method 4 doubles the time for ~9% smaller files
            if pic.lossless_source and policy.quality is None:
                args["lossless"] = True
            else:
                args["quality"] = policy.quality or DEFAULT_QUALITY
            if icc is not None:
                args["icc_profile"] = icc
            if animated:
                args.update(
                    save_all=True,
                    append_images=webp[1:],
                    duration=pic.durations,
                    loop=pic.loop or 0,
                )
            webp[0].save(buf, "WEBP", **args)
        elif target == "GIF":
            durations = pic.durations
            if animated:
                frames, durations = _merge_still(frames, durations)
            imgs = [_clean(f) for f in frames]
            im, transparency = imgs[0]
            args = {"optimize": False}
            if transparency is not None and not animated:
                args["transparency"] = transparency
            if animated:
                args.update(
                    save_all=True, append_images=[f for f, _ in imgs[1:]], duration=durations
                )
            if pic.loop is not None:
                args["loop"] = pic.loop
            im.save(buf, "GIF", **args)
        elif target == "TIFF":
            pages = [_clean(_for_tiff(f))[0] for f in frames]
            args = {"compression": "tiff_adobe_deflate"}
            if icc is not None:
                args["icc_profile"] = icc
            if animated:
                args.update(save_all=True, append_images=pages[1:])
            pages[0].save(buf, "TIFF", **args)
        elif target == "BMP":
            im, _ = _clean(_for_bmp(frames[0]))
            im.save(buf, "BMP")
        else:  # pragma: no cover - targets come from the pipeline
            raise UnsupportedImage(f"cannot write {target}")
    except (
        OSError,
        ValueError,
        TypeError,
        KeyError,
        RuntimeError,
        OverflowError,
        struct.error,
    ) as exc:
        # RuntimeError: libwebp's animation encoder ("ERROR adding frame: ..."); OverflowError
        # and struct.error: a value too big for the field a writer packs it in
        raise CorruptImage(f"could not encode the image as {target}: {_said(exc)}") from exc
    return buf.getvalue(), notes


_GIF_MAX_DELAY = 655_350  # milliseconds: a GIF delay is 16 bits of 1/100 s


def _merge_still(
    frames: list[Image.Image], durations: list[int]
) -> tuple[list[Image.Image], list[int]]:
    """Runs of identical frames as one frame shown for their summed time, at most the
    longest delay a GIF can hold. Pillow's GIF writer merges such runs itself but cannot
    write a sum over 655.35 s (an OverflowError)."""
    from PIL import ImageChops

    out: list[Image.Image] = []
    times: list[int] = []
    for frame, ms in zip(frames, durations or [0] * len(frames), strict=False):
        last = out[-1] if out else None
        if (
            last is not None
            and last.mode == frame.mode
            and last.size == frame.size
            and ImageChops.difference(last, frame).getbbox(alpha_only=False) is None
        ):
            times[-1] = min(_GIF_MAX_DELAY, times[-1] + ms)
            continue
        out.append(frame)
        times.append(min(_GIF_MAX_DELAY, ms))
    return out, times


def _for_png(im: Image.Image) -> Image.Image:
    if im.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B", "I"):
        return im
    if im.mode == "PA":
        return im.convert("RGBA")
    return im.convert("RGBA" if has_alpha(im) else "RGB")


def _for_webp(im: Image.Image) -> Image.Image:
    if im.mode in ("RGB", "RGBA"):
        return im
    return im.convert("RGBA" if has_alpha(im) else "RGB")


def _for_tiff(im: Image.Image) -> Image.Image:
    # no palette: the writer would copy the input's colour map whole, unused entries too
    if im.mode in ("1", "L", "LA", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I", "F"):
        return im
    return im.convert("RGBA" if has_alpha(im) else "RGB")


def _for_bmp(im: Image.Image) -> Image.Image:
    if im.mode in ("1", "L", "P", "RGB", "RGBA"):
        return im
    return im.convert("RGBA" if has_alpha(im) else "RGB")


def deep_reencode(
    data: bytes,
    fmt: str,
    orientation: int,
    *,
    policy: Policy | None = None,
    size: tuple[int, int] | None = None,
) -> bytes:
    """Re-encode a single-frame 16-bit PNG or TIFF with its bit depth intact.

    Pillow reads 16-bit RGB(A) as 8-bit, so this path decodes and encodes with veilpix's own
    numpy codecs (``veilpix.image._png16``: PNG, chunk by chunk; ``veilpix.image._tiff16``:
    TIFF, its strips read as bytes by Pillow's libtiff), whose writers emit structure only,
    and turns the pixels with numpy. With ``policy`` and the declared ``size``, the work is
    held to the budget first (16-bit samples: twice the memory of an 8-bit frame). What
    cannot be decoded exactly raises CorruptImage or UnsupportedImage: the image is blocked.
    """
    import numpy as np

    if policy is not None and size is not None:
        work = estimate(fmt, fmt, frames=1, canvas=size, turn=orientation != 1)
        check_work(policy, dataclasses.replace(work, memory=2 * work.memory))
    # the codecs import numpy at the top: loaded when a 16-bit image comes, not before
    from veilpix.image import _png16, _tiff16  # noqa: PLC0415 - see above

    limit = (policy or Policy()).max_input_pixels
    with decoding(f"16-bit {fmt}"):
        if fmt == "PNG":
            png = _png16.decode_png(data, max_pixels=limit)
            arr = png.pixels
        elif fmt == "TIFF":
            tiff = _tiff16.decode_tiff(data, max_pixels=limit)
            arr = tiff.pixels
        else:  # pragma: no cover - the pipeline sends PNG and TIFF only
            raise UnsupportedImage(f"no 16-bit path for {fmt}")
    turn = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, k=1),
    }.get(orientation)
    if turn is not None:
        arr = turn(arr)  # a view: the encoder makes its one contiguous copy
    try:
        if fmt == "PNG":
            return _png16.encode_png(arr, png.colour_type, png.chunks)
        return _tiff16.encode_tiff(arr, tiff.photometric, tiff.extra)
    except (ValueError, OverflowError, struct.error, zlib.error) as exc:
        raise CorruptImage(f"could not encode the 16-bit image as {fmt}: {_said(exc)}") from exc
