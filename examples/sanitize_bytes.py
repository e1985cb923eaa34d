"""Sanitize one image in memory and show what veilpix found and removed.

    python examples/sanitize_bytes.py PHOTO [OUT]

Writes the clean image to OUT (default: PHOTO's name with ".clean" before the extension).
Without arguments it uses veilpix's built-in sample photo.
"""

from __future__ import annotations

import sys
from pathlib import Path

import veilpix


def main(argv: list[str]) -> int:
    if argv:
        source = Path(argv[0])
        data = source.read_bytes()
    else:
        from veilpix.cli._demo import sample_photo

        source, data = Path("sample.jpg"), sample_photo()
    try:
        clean = veilpix.sanitize(data)
    except veilpix.VeilpixError as exc:
        # nothing was produced: never fall back to using the original bytes
        print(f"cannot sanitize {source}: {exc.message} ({exc.hint})", file=sys.stderr)
        return 1
    rep = clean.report
    print(
        f"{source}: {rep.format_in} {rep.width_in}x{rep.height_in} -> {clean.media_type} {rep.width_out}x{rep.height_out}"
    )
    print(
        f"  {rep.bytes_in:,} -> {rep.bytes_out:,} bytes, lossless={rep.lossless}, orientation={rep.orientation}"
    )
    if rep.gps:
        print(f"  removed GPS position {rep.gps}")
    for finding in rep.findings:
        flag = "!" if finding.sensitive else " "
        print(f"  {flag} {finding.category:10} {finding.label}: {finding.value}")
    out = (
        Path(argv[1])
        if len(argv) > 1
        else source.with_name(source.stem + ".clean" + clean.extension)
    )
    out.write_bytes(clean.data)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
