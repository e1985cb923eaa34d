"""What a :class:`veilpix.Client` call returns: a :class:`Result` holding the vendor's
:class:`GeneratedImage` s, its text and raw answer, and what veilpix did on the way out (the
transfer-log records of the call, the metadata removed from the images sent).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veilpix._errors import VendorError
from veilpix.formats._registry import extension_for

if TYPE_CHECKING:
    from PIL import Image

    from veilpix.guard import Receipt

__all__ = ["GeneratedImage", "Result"]


@dataclass(frozen=True)
class GeneratedImage:
    """One image a vendor returned, exactly as it returned it (veilpix changes nothing).

    ``provenance`` lists the marks found in it (see
    :func:`veilpix.formats._provenance.detect_provenance`);
    ``invisible_watermark`` names a watermark the vendor documents but nobody outside can
    detect (Google's SynthID); ``url`` is where it was downloaded from, when the vendor gave
    a URL (such URLs expire: BFL's after 10 minutes)."""

    data: bytes = field(repr=False)
    media_type: str
    url: str | None = field(default=None, repr=False)
    provenance: list[str] = field(default_factory=list)
    invisible_watermark: str | None = None

    @property
    def extension(self) -> str:
        """The usual file extension for ``media_type`` (with the dot)."""
        return extension_for(self.media_type) or ".bin"

    @property
    def has_provenance(self) -> bool:
        return bool(self.provenance)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bytes unchanged to ``path`` (a folder gets ``image<ext>`` inside it)."""
        target = Path(path)
        if target.is_dir():
            target = target / f"image{self.extension}"
        target.write_bytes(self.data)
        return target

    def to_pil(self) -> Image.Image:
        """The image as a loaded Pillow image."""
        from PIL import Image

        im = Image.open(io.BytesIO(self.data))
        im.load()
        return im


@dataclass(frozen=True)
class Result:
    """What one :class:`Client` call produced.

    ``images`` and ``text`` are the vendor's output; ``raw`` its final JSON answer.
    ``record_ids`` are the transfer-log records of every request the call made (the submit
    first, then polls); ``removed`` counts the metadata categories veilpix found and removed
    from the images sent (from the guard's receipts, also in ``receipts``).
    ``finish_reason`` is the vendor's own (Stability ``CONTENT_FILTERED`` means the vendor
    blurred its image). ``request_id`` is the vendor's job or request id.
    """

    vendor: str
    model: str
    operation: str
    images: list[GeneratedImage]
    text: str | None
    record_ids: list[str]
    removed: dict[str, int]
    raw: Any = field(repr=False)
    finish_reason: str | None = None
    request_id: str | None = None
    receipts: list[Receipt] = field(default_factory=list, repr=False)

    @property
    def image(self) -> GeneratedImage:
        """The first image; raises :class:`VendorError` (with any text the vendor sent
        instead) when there is none."""
        if not self.images:
            raise VendorError(
                f"{self.vendor}/{self.model} returned no image"
                + (f": {self.text[:300]}" if self.text else ""),
                vendor=self.vendor,
                vendor_message=self.text,
                request_id=self.request_id,
                hint="the text is the vendor's reply; change the prompt or the model",
            )
        return self.images[0]

    @property
    def record_id(self) -> str | None:
        """The record of the first request (the one carrying the prompt and images)."""
        return self.record_ids[0] if self.record_ids else None

    @property
    def provenance(self) -> list[str]:
        """Every provenance mark found in any of the images."""
        return list(dict.fromkeys(m for img in self.images for m in img.provenance))
