"""List every image under a folder that reveals where it was taken, as CSV.

    python examples/gps_audit.py FOLDER > positions.csv

Uses veilpix.inspect(), which reads metadata without changing (or decoding) the images.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import veilpix

IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".gif",
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
    ".avif",
    ".mpo",
}


def main(folder: str) -> int:
    writer = csv.writer(sys.stdout)
    writer.writerow(["path", "latitude", "longitude", "source", "sensitive findings"])
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        try:
            info = veilpix.inspect(path.read_bytes())
        except veilpix.VeilpixError as exc:
            print(f"skipped {path}: {exc.message}", file=sys.stderr)
            continue
        if info.gps is None:
            continue
        sensitive = "; ".join(f"{f.label}={f.value}" for f in info.findings if f.sensitive)
        writer.writerow(
            [
                str(path),
                f"{info.gps.latitude:.6f}",
                f"{info.gps.longitude:.6f}",
                info.gps.source,
                sensitive,
            ]
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
