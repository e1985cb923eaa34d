"""libjpeg-turbo's TurboJPEG library (optional): lossless turns, re-coding, and the proof that
a JPEG's entropy-coded data ends where its last block ends.

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

__all__ = ["available", "decode_warning", "entropy_proof", "perfect", "recode", "transform"]

# EXIF orientation -> TJXOP_* (the operation that makes the stored image upright)
_OPS = {2: 1, 3: 6, 4: 2, 5: 3, 6: 5, 7: 4, 8: 7}
_TJXOPT_PERFECT = 1
_TJXOPT_COPYNONE = 64
_TJFLAG_FASTDCT = 2048
_TJFLAG_STOPONWARNING = 8192
_TJERR_WARNING = 0
_TJPF_RGB, _TJPF_GRAY, _TJPF_CMYK = 0, 6, 11
_SHORT = b"premature end of data segment"  # libjpeg's JWRN_HIT_MARKER


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
                    ctypes.c_void_p,
                    ctypes.c_char_p,
                    ctypes.c_ulong,
                    ctypes.c_int,
                    ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
                    ctypes.POINTER(ctypes.c_ulong),
                    ctypes.POINTER(_Transform),
                    ctypes.c_int,
                ]
                lib.tjTransform.restype = ctypes.c_int
                lib.tjFree.argtypes = [ctypes.c_void_p]
                lib.tjFree.restype = None
                lib.tjInitDecompress.restype = ctypes.c_void_p
                lib.tjDecompress2.argtypes = [
                    ctypes.c_void_p,
                    ctypes.c_char_p,
                    ctypes.c_ulong,
                    ctypes.c_void_p,
                    ctypes.c_int,
                    ctypes.c_int,
                    ctypes.c_int,
                    ctypes.c_int,
                    ctypes.c_int,
                ]
                lib.tjDecompress2.restype = ctypes.c_int
                lib.tjGetErrorStr2.argtypes = [ctypes.c_void_p]
                lib.tjGetErrorStr2.restype = ctypes.c_char_p
                lib.tjGetErrorCode.argtypes = [ctypes.c_void_p]
                lib.tjGetErrorCode.restype = ctypes.c_int
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


def _handle(lib: ctypes.CDLL, kind: str = "Transform") -> int:
    # TurboJPEG handles are not thread-safe: one per thread and kind, kept for the thread's life
    handle = getattr(_local, kind, None)
    if handle is None:
        handle = getattr(lib, f"tjInit{kind}")()
        if not handle:
            raise OSError(f"tjInit{kind} failed")
        setattr(_local, kind, handle)
    return int(handle)


def transform(jpeg: bytes, orientation: int) -> bytes | None:
    """``jpeg`` turned upright without re-encoding, with no markers copied; None when the
    library is missing or the transform cannot be perfect (partial MCU blocks)."""
    op = _OPS.get(orientation)
    if op is None:
        return None
    return _transform(jpeg, op, _TJXOPT_PERFECT | _TJXOPT_COPYNONE, warnings_ok=False)


def recode(jpeg: bytes) -> bytes | None:
    """``jpeg`` with its entropy-coded data written afresh by libjpeg from the DCT
    coefficients (the pixels do not change): one sequential scan with standard Huffman
    tables, no markers copied, nothing the writer hid between or after the coded blocks. A
    file libjpeg reads with a warning (such hidden bytes) is re-coded too. None when the
    library is missing or cannot read the file."""
    return _transform(jpeg, 0, _TJXOPT_COPYNONE, warnings_ok=True)


def _transform(jpeg: bytes, op: int, options: int, *, warnings_ok: bool) -> bytes | None:
    lib = _load()
    if lib is None:
        return None
    xform = _Transform(op=op, options=options)
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
        if rc != 0 and not (warnings_ok and lib.tjGetErrorCode(handle) == _TJERR_WARNING):
            return None
        if not buf or not size.value:
            return None
        return ctypes.string_at(buf, size.value)
    finally:
        if buf:
            lib.tjFree(buf)


def _decode(lib: ctypes.CDLL, jpeg: bytes, size: tuple[int, int], components: int) -> str | None:
    """Decode ``jpeg`` at 1/8 scale (every bit of the entropy-coded data is read, the
    inverse DCT is DC-only), stopping at the first warning: None when it decodes without
    one, else libjpeg's message."""
    handle = _handle(lib, "Decompress")
    w, h = (size[0] + 7) // 8, (size[1] + 7) // 8
    formats = [_TJPF_CMYK] if components == 4 else [_TJPF_GRAY, _TJPF_RGB]
    message = "the library could not read it"
    for pf in formats:
        out = ctypes.create_string_buffer(w * h * (1 if pf == _TJPF_GRAY else 4))
        flags = _TJFLAG_STOPONWARNING | _TJFLAG_FASTDCT
        if lib.tjDecompress2(handle, jpeg, len(jpeg), out, w, 0, h, pf, flags) == 0:
            return None
        message = (lib.tjGetErrorStr2(handle) or b"").decode("latin-1", "replace")
        if "color conversion" not in message:
            break
    return message


def entropy_proof(
    jpeg: bytes, size: tuple[int, int], components: int, *, coded_end: int
) -> tuple[str, str] | None:
    """Prove that the single scan of ``jpeg`` carries nothing but coded blocks: None when it
    does, else ``(what, libjpeg's words)`` with ``what`` "hidden" (bytes no block needs) or
    "damaged" (the data does not decode cleanly).

    ``coded_end`` is where the scan's entropy-coded data stops (the EOI marker). Two facts
    make the proof. libjpeg skips nothing silently: bytes before a marker that no block
    needs are "extraneous" and, with warnings stopping the decode, fail it, except the few
    its bit reader loaded ahead (up to 7). Those are closed by decoding the file with the
    last coded byte removed: when that byte belongs to the last block the decoder runs short
    ("premature end of data segment"); when the decode still succeeds, the byte was hidden
    data. One decode proves both: the warning that ends it comes only after every other
    block decoded without one. What stays unproved is the padding inside the last byte
    (fewer than 8 bits). Raises OSError when the library is missing."""
    lib = _load()
    if lib is None:
        raise OSError("libturbojpeg is not installed")
    if coded_end < 3 or jpeg[coded_end - 2] == 0xFF:
        return ("damaged", "the scan ends in a marker, not in coded data")
    cut = jpeg[: coded_end - 1] + jpeg[coded_end:]
    said = _decode(lib, cut, size, components)
    if said is None:
        return ("hidden", "bytes that no block needs after the compressed image data")
    if _SHORT.decode() in said.lower():
        return None
    return _classify(said)


def decode_warning(jpeg: bytes, size: tuple[int, int], components: int) -> tuple[str, str] | None:
    """What libjpeg warns about when decoding ``jpeg`` (as ``entropy_proof`` says it), None
    when it decodes cleanly. Catches hidden bytes except the few the bit reader loads ahead.
    Raises OSError when the library is missing."""
    lib = _load()
    if lib is None:
        raise OSError("libturbojpeg is not installed")
    said = _decode(lib, jpeg, size, components)
    return None if said is None else _classify(said)


def _classify(said: str) -> tuple[str, str]:
    if "extraneous bytes" in said.lower():
        return ("hidden", f"bytes that no block needs inside the compressed image data ({said})")
    return ("damaged", said)
