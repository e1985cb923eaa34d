"""The pixel path: decode (bounded), apply orientation and colour profile, encode from pixels.

Used when the picture must change (orientation other than 1, a device colour profile, a
format change, HEIC/AVIF input, TIFF/BMP that cannot be rewritten in place). Output images
are built from pixels only: every Pillow image handed to an encoder has an empty ``info`` and
only what the picture needs (ICC when standard, transparency, durations, loop) is passed
explicitly, because Pillow otherwise copies comments, EXIF, XMP and ICC from ``info``.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from veilpix._errors import (
    CorruptImage,
    ImageTooLarge,
    UnsafeOutput,
    UnsupportedImage,
    VeilpixError,
)
from veilpix._icc import is_standard, to_srgb
from veilpix._policy import Policy
from veilpix._scan import check_limits

__all__ = [
    "Picture",
    "decode",
    "deep_reencode",
    "encode",
    "estimate_jpeg_quality",
    "orient",
]

_PIL_FORMATS = {
    "JPEG": ["JPEG", "MPO"],
    "PNG": ["PNG"],
    "WEBP": ["WEBP"],
    "GIF": ["GIF"],
    "TIFF": ["TIFF"],
    "BMP": ["BMP"],
    "AVIF": ["AVIF"],
}
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# IJG standard luminance quantization table (natural order), for the quality estimate.
_STD_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
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


def _transpose_table(table: list[int]) -> list[int]:
    return [table[c * 8 + r] for r in range(8) for c in range(8)]


def orient(im: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation (1-8) to the pixels."""
    op = _TRANSPOSE.get(orientation)
    return im.transpose(op) if op is not None else im


@contextlib.contextmanager
def decoding(what: str, *, output: bool = False) -> Iterator[None]:
    """Translate whatever a decoder raises on hostile input into the VeilpixError tree:
    too big -> ImageTooLarge; anything else -> CorruptImage (UnsafeOutput for veilpix's own
    output). Decoders (Pillow, pillow-heif, libavif, libtiff) raise many unrelated types."""
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
    try:
        with decoding(fmt):
            return Image.open(io.BytesIO(data), formats=_PIL_FORMATS[fmt])
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
            "HEIC/HEIF support is not installed", hint="pip install 'veilpix[heif]'"
        ) from exc
    with decoding("HEIF"):
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        img = heif[heif.primary_index]
        width, height = img.size
        check_limits(policy, width, height, 1)
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
            return _frames(im, fmt, policy)
    finally:
        im.close()


def _frames(im: Image.Image, fmt: str, policy: Policy) -> Picture:
    """Every frame that belongs to the picture, each checked against the limits."""
    n = 1 if fmt == "JPEG" else getattr(im, "n_frames", 1)
    check_limits(policy, im.width, im.height, n)
    pic = Picture([], fmt, loop=im.info.get("loop"))
    if fmt == "JPEG":
        pic.jpeg = {
            "qtables": getattr(im, "quantization", None),
            "subsampling": JpegImagePlugin.get_sampling(im),
            "progressive": bool(im.info.get("progressive") or im.info.get("progression")),
        }
    if fmt == "AVIF":
        pic.orientation = int(im.getexif().get(274, 1) or 1)
        pic.meta = {k: v for k, v in im.info.items() if isinstance(k, str)}
    pic.icc = _bytes(im.info.get("icc_profile"))
    page_orientations: list[int] = []
    seen = 0
    for i in range(n):
        if i:
            im.seek(i)
        seen += im.width * im.height  # pages and frames may differ in size
        check_limits(policy, im.width, im.height, n, total=seen)
        if fmt == "TIFF":
            tags = getattr(im, "tag_v2", {})
            if i and int(tags.get(254, 0) or 0) & 1:
                continue  # reduced-resolution copy (a thumbnail), not a page
            page = int(tags.get(274, 1) or 1)
            im.load()
            # Pillow's TIFF plugin turns the page itself (and drops the tag) on load
            page_orientations.append(1 if 274 not in getattr(im, "tag_v2", {}) else page)
        im.load()
        # a single frame is wrapped without copying its pixels; animation frames are
        # copied because seeking reuses the decoder's buffer
        pic.frames.append(_detach(im) if n == 1 else im.copy())
        pic.durations.append(int(im.info.get("duration", 0) or 0))
    if page_orientations:
        pic.jpeg["page_orientations"] = page_orientations
    if len(pic.frames) > 1 and fmt in ("GIF", "PNG", "WEBP", "AVIF"):
        pic.frames = _uniform(pic.frames)
    return pic


def _uniform(frames: list[Image.Image]) -> list[Image.Image]:
    """Animation frames in one mode (Pillow returns GIF frame 0 as P, later ones as RGB(A))."""
    has_alpha = any(
        f.mode in ("RGBA", "LA", "PA") or (f.mode == "P" and "transparency" in f.info)
        for f in frames
    )
    mode = "RGBA" if has_alpha else "RGB"
    return [f if f.mode == mode else f.convert(mode) for f in frames]


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


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    )


def _flatten(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def _for_jpeg(im: Image.Image) -> Image.Image:
    if _has_alpha(im):
        return _flatten(im)
    if im.mode in ("L", "RGB", "CMYK"):
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return _to_8bit_gray(im)
    return im.convert("RGB")


def _to_8bit_gray(im: Image.Image) -> Image.Image:
    import numpy as np

    arr = np.asarray(im.convert("I"), dtype=np.int64)
    return Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8), "L")


def prepare(pic: Picture, policy: Policy, orientation: int) -> tuple[str, str]:
    """Apply orientation and colour management in place. Returns (icc status, icc note)."""
    pages = pic.jpeg.get("page_orientations")
    if pages:
        pic.frames = [orient(f, o) for f, o in zip(pic.frames, pages, strict=True)]
    elif orientation != 1:
        pic.frames = [orient(f, orientation) for f in pic.frames]
    if pic.icc is None:
        return "none", ""
    if policy.keep_standard_icc and is_standard(pic.icc):
        return "kept", ""
    converted = []
    real = True
    for frame in pic.frames:
        out, ok = to_srgb(frame, pic.icc)
        converted.append(out)
        real = real and ok
    pic.frames = converted
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
            if _has_alpha(frames[0]):
                notes.append("alpha flattened onto white for JPEG")
            args: dict[str, Any] = {"optimize": False}
            qtables = pic.jpeg.get("qtables")
            if policy.quality is None and qtables and im.mode in ("L", "RGB", "CMYK"):
                tables = {k: list(v) for k, v in qtables.items()}
                if pic.orientation in (5, 6, 7, 8):
                    tables = {k: _transpose_table(v) for k, v in tables.items()}
                args["qtables"] = tables
                sampling = pic.jpeg.get("subsampling", -1)
                if sampling == 1 and pic.orientation in (5, 6, 7, 8):
                    sampling = 0
                args["subsampling"] = sampling if sampling in (0, 1, 2) else 0
                est = estimate_jpeg_quality(qtables)
                notes.append(f"re-encoded with the input's quantization tables (quality ≈{est})")
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
            imgs = [_clean(f) for f in frames]
            im, transparency = imgs[0]
            args = {"optimize": False}
            if transparency is not None and not animated:
                args["transparency"] = transparency
            if animated:
                args.update(
                    save_all=True, append_images=[f for f, _ in imgs[1:]], duration=pic.durations
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
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CorruptImage(f"could not encode the image as {target}: {_said(exc)}") from exc
    return buf.getvalue(), notes


def _for_png(im: Image.Image) -> Image.Image:
    if im.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B", "I"):
        return im
    if im.mode == "PA":
        return im.convert("RGBA")
    return im.convert("RGBA" if _has_alpha(im) else "RGB")


def _for_webp(im: Image.Image) -> Image.Image:
    if im.mode in ("RGB", "RGBA"):
        return im
    return im.convert("RGBA" if _has_alpha(im) else "RGB")


def _for_tiff(im: Image.Image) -> Image.Image:
    if im.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I", "F"):
        return im
    return im.convert("RGBA" if _has_alpha(im) else "RGB")


def _for_bmp(im: Image.Image) -> Image.Image:
    if im.mode in ("1", "L", "P", "RGB", "RGBA"):
        return im
    return im.convert("RGBA" if _has_alpha(im) else "RGB")


def deep_reencode(data: bytes, fmt: str, orientation: int) -> bytes:
    """Re-encode a single-frame 16-bit PNG or TIFF with its bit depth intact.

    Pillow reads 16-bit RGB(A) as 8-bit, so this path decodes and encodes with OpenCV, whose
    PNG and TIFF writers emit structure only, and turns the pixels with numpy.
    """
    import cv2
    import numpy as np

    flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if arr is None:
        raise CorruptImage(f"16-bit {fmt} image could not be decoded")
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
        arr = np.ascontiguousarray(turn(arr))
    ok, buf = cv2.imencode(".png" if fmt == "PNG" else ".tiff", arr)
    if not ok:
        raise CorruptImage(f"could not encode the 16-bit image as {fmt}")
    return bytes(buf.tobytes())
