"""Face hiding and the 16-bit codecs without OpenCV, against the OpenCV code they replace.

Both sides run in this process on the same pixels, ``--repeat`` times each after one untimed
warm-up; the table gives each side's best and median wall time and their ratio
(new / old: below 1.00 the numpy code is faster). The peer is the code veilpix used before
OpenCV was dropped, kept here verbatim: ``cv2.resize`` (INTER_AREA down, INTER_NEAREST or
INTER_LINEAR up) and ``cv2.GaussianBlur`` for the face filters, ``cv2.imdecode`` /
``cv2.imencode`` for the 16-bit PNG and TIFF re-encode. Without OpenCV only the new side runs.

    .venv/bin/python bench/blur.py
    .venv/bin/python bench/blur.py --repeat 7 --json

Cases
-----
blur / pixelate  ``veilpix.image._blur.anonymize`` on a 4000 x 3000 photograph-like picture
                 (8-bit RGB, and 16-bit RGB) with four faces of 300 to 1200 px, the old
                 filter patched in for the peer (the mask, padding and mixing are shared).
png16 decode     a 12 MP 16-bit RGB PNG with noise in its low bits (as a camera's), written
                 with every row Paeth-filtered (what libpng's adaptive filter picks for most
                 rows of a photograph), with Sub rows (OpenCV's default) and with a random
                 filter per row; decoded by ``_png16.decode_png`` vs ``cv2.imdecode``.
png16 / tiff16   ``veilpix.image._pixels.deep_reencode`` (decode, turn by orientation 6,
reencode         encode) vs the same steps through OpenCV; the TIFF is LZW with horizontal
                 differencing as OpenCV writes it. Output sizes are printed too.

One core is enough for the new code (numpy vector steps, zlib, libtiff through Pillow); BLAS
runs single-threaded here (its idle threads spin, and against OpenCV's pool that slowed both
sides threefold), OpenCV threads its resizes and blurs (``--threads``, default 2): ratios are
only comparable within one run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: see the docstring

import argparse
import json
import math
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import cv2
except ImportError:  # the peer is optional: the new side still runs
    cv2 = None


# -- the code that was replaced, verbatim (veilpix before OpenCV was dropped) ---------------


def old_filtered(patch: Any, mode: str, size: float) -> Any:
    from veilpix.image._blur import CELLS, SIGMA

    ph, pw = patch.shape[:2]
    if mode == "fill":
        return np.zeros_like(patch)
    if mode == "pixelate":
        cell = max(2, math.ceil(size / CELLS))
        small = cv2.resize(
            patch, (max(1, -(-pw // cell)), max(1, -(-ph // cell))), interpolation=cv2.INTER_AREA
        )
        big = cv2.resize(
            small, (small.shape[1] * cell, small.shape[0] * cell), interpolation=cv2.INTER_NEAREST
        )
        return big[:ph, :pw].reshape(patch.shape)
    sigma = max(1.0, SIGMA * size)
    k = max(1.0, sigma / 4.0)
    if k > 1.5:
        sw, sh = max(1, round(pw / k)), max(1, round(ph / k))
        small = cv2.resize(patch, (sw, sh), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma / k, borderType=cv2.BORDER_REPLICATE)
        out = cv2.resize(small, (pw, ph), interpolation=cv2.INTER_LINEAR)
    else:
        out = cv2.GaussianBlur(patch, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
    return out.reshape(patch.shape)


def old_deep_reencode(data: bytes, fmt: str, orientation: int) -> bytes:
    flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    turn = {6: lambda a: np.rot90(a, k=-1)}.get(orientation)
    if turn is not None:
        arr = np.ascontiguousarray(turn(arr))
    ok, buf = cv2.imencode(".png" if fmt == "PNG" else ".tiff", arr)
    assert ok
    return bytes(buf.tobytes())


# -- inputs ---------------------------------------------------------------------------------


def photo(width: int, height: int, depth: int) -> np.ndarray:
    """A smooth picture (the scikit-image astronaut, or gradients) enlarged, with noise."""
    from PIL import Image

    try:
        from skimage import data as skdata

        base = Image.fromarray(skdata.astronaut())
    except ImportError:
        ramp = np.linspace(0, 255, 256, dtype=np.float32)
        base = Image.fromarray(np.dstack([np.add.outer(ramp, ramp) / 2] * 3).astype(np.uint8))
    big = np.asarray(base.resize((width, height), Image.Resampling.BICUBIC)).astype(np.float32)
    rng = np.random.default_rng(7)
    if depth == 16:
        big = big * 257 + rng.normal(0, 40, big.shape).astype(np.float32)
        return np.clip(big, 0, 65535).astype(np.uint16)
    return np.clip(big + rng.normal(0, 2, big.shape).astype(np.float32), 0, 255).astype(np.uint8)


def png_rows(pixels: np.ndarray, kinds: np.ndarray) -> bytes:
    """A 16-bit RGB PNG with filter ``kinds[y]`` on row y (written here, vectorised)."""
    h, w, ch = pixels.shape
    raw = pixels.astype(">u2").view(np.uint8).reshape(h, -1).astype(np.int16)
    bpp = ch * 2
    prev = np.vstack([np.zeros((1, raw.shape[1]), np.int16), raw[:-1]])
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    upleft = np.zeros_like(raw)
    upleft[:, bpp:] = prev[:, :-bpp]
    p = left + prev - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
    preds = [np.zeros_like(raw), left, prev, (left + prev) >> 1, paeth]
    out = np.empty((h, 1 + raw.shape[1]), np.uint8)
    out[:, 0] = kinds
    for k in range(5):
        rows = kinds == k
        out[rows, 1:] = ((raw[rows] - preds[k][rows]) & 255).astype(np.uint8)
    chunk = lambda kind, body: (  # noqa: E731
        len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    )
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([16, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(out.tobytes(), 1))
        + chunk(b"IEND", b"")
    )


# -- timing ---------------------------------------------------------------------------------


def pair(new: Callable[[], Any], old: Callable[[], Any] | None, repeat: int) -> dict[str, Any]:
    """Each side: one warm-up run, then ``repeat`` timed runs (a side at a time: OpenCV's
    thread pool and the other side's work do not overlap)."""
    times: dict[str, list[float]] = {"new": [], "old": []}
    for side, fn in (("new", new), ("old", old)):
        if fn is None:
            continue
        fn()
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - start)
    row: dict[str, Any] = {}
    for side, values in times.items():
        if values:
            row[side] = {"best": min(values), "median": statistics.median(values)}
    if "old" in row:
        row["ratio_best"] = row["new"]["best"] / row["old"]["best"]
        row["ratio_median"] = row["new"]["median"] / row["old"]["median"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per side (5)")
    parser.add_argument("--threads", type=int, default=2, help="cv2.setNumThreads (2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    from veilpix.image import _blur, _png16
    from veilpix.image._faces import FaceBox
    from veilpix.image._pixels import deep_reencode

    if cv2 is not None:
        cv2.setNumThreads(args.threads)
    else:
        print("OpenCV is not installed: the old side (the peer) is skipped", file=sys.stderr)
    results: dict[str, Any] = {}
    boxes = [
        FaceBox(300, 300, 600, 680, 0.9),
        FaceBox(1200, 500, 1800, 1250, 0.9),
        FaceBox(2300, 900, 3500, 2400, 0.9),
        FaceBox(100, 2000, 450, 2450, 0.9),
    ]
    new_filtered = _blur._filtered
    for depth in (8, 16):
        pixels = photo(4000, 3000, depth)
        for mode in ("blur", "pixelate"):

            def run(filtered: Any, mode: str = mode, pixels: np.ndarray = pixels) -> Any:
                _blur._filtered = filtered
                try:
                    return _blur.anonymize(pixels, boxes, mode=mode)  # type: ignore[arg-type]
                finally:
                    _blur._filtered = new_filtered

            old = (lambda run=run: run(old_filtered)) if cv2 is not None else None
            row = pair(lambda run=run: run(new_filtered), old, args.repeat)
            if cv2 is not None:
                a, b = run(new_filtered), run(old_filtered)
                row["mean_abs_diff"] = float(np.abs(a.astype(float) - b).mean())
            results[f"{mode} {depth}-bit 12 MP, 4 faces"] = row

    deep = photo(4000, 3000, 16)
    rng = np.random.default_rng(3)
    h = deep.shape[0]
    pngs = {
        "Paeth rows": png_rows(deep, np.full(h, 4, np.uint8)),
        "Sub rows": png_rows(deep, np.full(h, 1, np.uint8)),
        "random filter per row": png_rows(deep, rng.integers(0, 5, h).astype(np.uint8)),
    }
    for name, data in pngs.items():
        old = None
        if cv2 is not None:
            old = lambda data=data: cv2.imdecode(np.frombuffer(data, np.uint8), -1)  # noqa: E731
        results[f"png16 decode, {name}"] = pair(
            lambda data=data: _png16.decode_png(data, max_pixels=1 << 40), old, args.repeat
        )
    sources: dict[str, bytes] = {"PNG": pngs["Paeth rows"]}
    if cv2 is not None:
        ok, buf = cv2.imencode(".tiff", deep[..., ::-1])
        assert ok
        sources["TIFF"] = buf.tobytes()
    for fmt, data in sources.items():
        old = (lambda data=data, fmt=fmt: old_deep_reencode(data, fmt, 6)) if cv2 else None
        row = pair(lambda data=data, fmt=fmt: deep_reencode(data, fmt, 6), old, args.repeat)
        row["bytes_in"] = len(data)
        row["bytes_new"] = len(deep_reencode(data, fmt, 6))
        if cv2 is not None:
            row["bytes_old"] = len(old_deep_reencode(data, fmt, 6))
        results[f"{fmt.lower()}16 reencode (turn 6)"] = row

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'case':44} {'new best':>9} {'new med':>9} {'old best':>9} {'old med':>9} {'ratio':>6}")
    for name, row in results.items():
        new, old_row = row["new"], row.get("old")
        cols = f"{new['best']:9.3f} {new['median']:9.3f}"
        if old_row:
            cols += f" {old_row['best']:9.3f} {old_row['median']:9.3f} {row['ratio_best']:6.2f}"
        extra = ""
        if "mean_abs_diff" in row:
            extra = f"  (mean |new - old| {row['mean_abs_diff']:.2f})"
        if "bytes_new" in row:
            extra = f"  (bytes in {row['bytes_in']:,}, new {row['bytes_new']:,}"
            extra += f", old {row['bytes_old']:,})" if "bytes_old" in row else ")"
        print(f"{name:44} {cols}{extra}")
    print("times in seconds; ratio = new best / old best (below 1.00: the numpy code is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
