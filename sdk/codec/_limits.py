"""The codec's default limits (keyword arguments of its readers) and the error for nesting.

Every reader of the codec is bounded and fails closed: hostile input (a decompression bomb,
100 000 multipart parts, JSON nested 100 000 deep) raises a :class:`~veilpix.RequestError`
quickly instead of hanging or allocating without bound. These are the defaults the callers
may lower or raise; the fixed limits live beside the reader they bound.
"""

from __future__ import annotations

from veilpix._errors import RequestTooLarge

DEFAULT_MAX_BYTES = 128 << 20
DEFAULT_MAX_PARTS = 256
DEFAULT_MAX_DEPTH = 256
BASE64_MIN_LEN = 32  # characters; the smallest real images (a 1x1 GIF) are about 60


def _too_deep(max_depth: int) -> RequestTooLarge:
    return RequestTooLarge(f"the JSON body is nested more than {max_depth} levels deep")
