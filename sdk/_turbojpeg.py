"""Lossless JPEG rotation and flipping through libjpeg-turbo's TurboJPEG library (optional).

When a JPEG only needs turning (EXIF orientation 2-8) and its size is a whole number of MCU
blocks in the directions the transform moves, libjpeg-turbo can rotate or flip the DCT
coefficients themselves: no decode, no re-encode, no generation loss, the same pixels
turned. veilpix uses it when the shared library is installed (Debian/Ubuntu:
``libturbojpeg0``; macOS: ``brew install jpeg-turbo``; or point ``VEILPIX_TURBOJPEG`` at the
library file) and falls back to decoding and re-encoding otherwise. Images stay in memory:
the library works on buffers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

__all__ = ["available", "perfect", "transform"]

# EXIF orientation -> TJXOP_* (the operation that makes the stored image upright)
_OPS = {2: 1, 3: 6, 4: 2, 5: 3, 6: 5, 7: 4, 8: 7}
_TJXOPT_PERFECT = 1
_TJXOPT_COPYNONE = 64


class _Region(ctypes.Structure):
    _fields_ = (("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int))


class _Transform(ctypes.Structure):
    _fields_ = (
        ("r", _Region),
        ("op", ctypes.c_int),
        ("options", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("customFilter", ctypes.c_void_p),
    )


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_loaded = False
_local = threading.local()


def _load() -> ctypes.CDLL | None:
    global _lib, _loaded  # noqa: PLW0603 - the library is loaded once per process
    with _lock:
        if _loaded:
            return _lib
        _loaded = True
        if os.environ.get("VEILPIX_TURBOJPEG", "").lower() in ("0", "off", "no"):
            return None
        names = [
            os.environ.get("VEILPIX_TURBOJPEG", ""),
            ctypes.util.find_library("turbojpeg") or "",
        ]
        names += ["libturbojpeg.so.0", "libturbojpeg.dylib", "turbojpeg.dll"]
        for name in filter(None, names):
            try:
                lib = ctypes.CDLL(name)
                lib.tjInitTransform.restype = ctypes.c_void_p
                lib.tjTransform.argtypes = [
                    ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_int,
                    ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)), ctypes.POINTER(ctypes.c_ulong),
                    ctypes.POINTER(_Transform), ctypes.c_int,
                ]  # fmt: skip
                lib.tjTransform.restype = ctypes.c_int
                lib.tjFree.argtypes = [ctypes.c_void_p]
                lib.tjFree.restype = None
            except (OSError, AttributeError):
                continue
            _lib = lib
            break
        return _lib


def perfect(orientation: int, size: tuple[int, int], mcu: tuple[int, int]) -> bool:
    """Whether the turn can be exact: the edges it moves to the top or left must be whole
    MCU blocks (jpegtran's "-perfect" rule). Checked up front: the library would find out
    only after reading the file."""
    width_ok = size[0] % mcu[0] == 0
    height_ok = size[1] % mcu[1] == 0
    need = {
        2: width_ok,  # mirror left-right: the right edge becomes the left
        3: width_ok and height_ok,
        4: height_ok,
        5: True,  # transpose keeps the top-left corner in place
        6: height_ok,  # 90 degrees clockwise: the bottom edge becomes the left
        7: width_ok and height_ok,
        8: width_ok,  # 90 degrees counter-clockwise: the right edge becomes the top
    }
    return need.get(orientation, False)


def available() -> bool:
    """True when libturbojpeg could be loaded."""
    return _load() is not None


def _handle(lib: ctypes.CDLL) -> int:
    # TurboJPEG handles are not thread-safe: one per thread, kept for the thread's life
    handle = getattr(_local, "handle", None)
    if handle is None:
        handle = lib.tjInitTransform()
        if not handle:
            raise OSError("tjInitTransform failed")
        _local.handle = handle
    return int(handle)


def transform(jpeg: bytes, orientation: int) -> bytes | None:
    """``jpeg`` turned upright without re-encoding, with no markers copied; None when the
    library is missing or the transform cannot be perfect (partial MCU blocks)."""
    op = _OPS.get(orientation)
    lib = _load()
    if op is None or lib is None:
        return None
    xform = _Transform(op=op, options=_TJXOPT_PERFECT | _TJXOPT_COPYNONE)
    buf = ctypes.POINTER(ctypes.c_ubyte)()
    size = ctypes.c_ulong(0)
    try:
        handle = _handle(lib)
    except OSError:
        return None
    rc = lib.tjTransform(
        handle, jpeg, len(jpeg), 1, ctypes.byref(buf), ctypes.byref(size), ctypes.byref(xform), 0
    )
    try:
        if rc != 0 or not buf or not size.value:
            return None
        return ctypes.string_at(buf, size.value)
    finally:
        if buf:
            lib.tjFree(buf)
