"""Before/after pictures: the original and veilpix's output side by side, the faces veilpix
found boxed on both, and a legend of what metadata was found and what was removed.

Drawn for ``veilpix preview`` and ``veilpix demo`` (veilpix.cli). The preview is built in memory and only
written where the user asks.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont, ImageOps  # noqa: TID253 - drawing is heavy by nature

from veilpix._errors import CorruptImage
from veilpix._words import plural
from veilpix.image._report import SanitizedImage

__all__ = ["legend", "render_preview"]

PANEL = 720  # longest side of each panel, in pixels
_RED, _GREEN, _GREY, _INK = (200, 30, 30), (20, 130, 50), (245, 245, 245), (40, 40, 40)


def _panel(data: bytes, *, upright: bool) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.seek(0)
            shown = ImageOps.exif_transpose(im) if upright else im.copy()
    except Exception as exc:
        raise CorruptImage(f"cannot draw a preview of this image: {exc}") from exc
    if shown.mode not in ("RGB", "RGBA"):
        shown = shown.convert(
            "RGBA" if "transparency" in shown.info or "A" in shown.mode else "RGB"
        )
    if shown.mode == "RGBA":
        bg = Image.new("RGBA", shown.size, (*_GREY, 255))
        shown = Image.alpha_composite(bg, shown).convert("RGB")
    return shown


def _fit(im: Image.Image) -> tuple[Image.Image, float]:
    scale = min(1.0, PANEL / max(im.size))
    if scale < 1.0:
        im = im.resize(
            (max(1, round(im.width * scale)), max(1, round(im.height * scale))),
            Image.Resampling.LANCZOS,
        )
    return im, scale


def legend(clean: SanitizedImage) -> list[tuple[str, tuple[int, int, int]]]:
    rep = clean.report
    lines: list[tuple[str, tuple[int, int, int]]] = []
    cats = rep.categories()
    if cats:
        found = ", ".join(f"{name} ({n})" for name, n in cats.items())
        lines.append((f"metadata found: {found}", _RED))
    else:
        lines.append(("metadata found: none", _INK))
    if rep.gps is not None:
        lines.append((f"GPS position removed: {rep.gps}", _RED))
    if rep.removed:
        kinds = sorted({r.container for r in rep.removed})
        lines.append(
            (f"removed: {plural(len(rep.removed), 'element')} ({', '.join(kinds)})", _GREEN)
        )
    if rep.faces_checked:
        text = f"faces found: {rep.faces_found}, hidden ({rep.face_mode}): {rep.faces_blurred}"
        if rep.consent:
            text += f", consent: {rep.consent}"
        lines.append((text, _GREEN if rep.faces_found == rep.faces_blurred else _RED))
    size = f"{rep.width_out}x{rep.height_out}"
    if rep.downscaled:
        size = f"downscaled to {size}"
    lines.append(
        (
            f"{rep.format_in} {rep.bytes_in:,} bytes -> {rep.format_out} {rep.bytes_out:,} bytes, {size}",
            _INK,
        )
    )
    return lines


def render_preview(before: bytes, clean: SanitizedImage, *, as_stored: bool = False) -> bytes:
    """A PNG: ``before`` (upright, or as stored with ``as_stored=True``) beside ``clean``.

    Face boxes from the report are drawn in red on the original and in green on the output;
    below, a legend lists what was found and removed.
    """
    rep = clean.report
    a, sa = _fit(_panel(before, upright=not as_stored))
    b, sb = _fit(_panel(clean.data, upright=False))
    draw_a, draw_b = ImageDraw.Draw(a), ImageDraw.Draw(b)
    down = rep.width_out / max(
        1, (rep.height_in if rep.orientation in (5, 6, 7, 8) else rep.width_in)
    )
    for box in rep.face_boxes:
        if not as_stored:
            draw_a.rectangle(
                [box.x0 * sa, box.y0 * sa, box.x1 * sa, box.y1 * sa], outline=_RED, width=3
            )
        k = sb * (down if rep.downscaled else 1.0)
        draw_b.rectangle([box.x0 * k, box.y0 * k, box.x1 * k, box.y1 * k], outline=_GREEN, width=2)
    font = ImageFont.load_default(size=16)
    lines = legend(clean)
    pad, head, line = 16, 40, 22
    w = a.width + b.width + 3 * pad
    h = max(a.height, b.height) + head + pad + line * len(lines) + pad
    canvas = Image.new("RGB", (w, h), _GREY)
    draw = ImageDraw.Draw(canvas)
    what = "as stored" if as_stored else "upright"
    draw.text(
        (pad, 10),
        f"before ({what}): {plural(len(rep.findings), 'metadata item')}",
        fill=_RED,
        font=font,
    )
    draw.text((2 * pad + a.width, 10), "after: what veilpix sends", fill=_GREEN, font=font)
    canvas.paste(a, (pad, head))
    canvas.paste(b, (2 * pad + a.width, head))
    y = head + max(a.height, b.height) + pad
    for text, colour in lines:
        draw.text((pad, y), text, fill=colour, font=font)
        y += line
    out = io.BytesIO()
    canvas.save(out, "PNG")
    return out.getvalue()
