"""What the benchmark scripts share: the camera metadata their test photos carry, the revision
they measured, and a progress line. (Scripts run as ``python bench/x.py``, so this folder is
on ``sys.path``.)"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

__all__ = ["SMALL", "camera_exif", "progress", "revision", "tree_at"]

ROOT = Path(__file__).resolve().parents[1]

# A small text-only Responses API body (160 bytes): the call every door sees most.
SMALL = json.dumps(
    {
        "model": "gpt-4.1-mini",
        "input": "Describe a red bicycle in three words.",
        "store": False,
        "max_output_tokens": 16,
        "metadata": {"ticket": "T-1042"},
    },
).encode()


def camera_exif() -> bytes:
    """EXIF as a phone writes it: make, model, serial, date and a GPS position."""
    import piexif

    return bytes(
        piexif.dump(
            {
                "0th": {piexif.ImageIFD.Make: b"Apple", piexif.ImageIFD.Model: b"iPhone 15 Pro"},
                "Exif": {
                    piexif.ExifIFD.DateTimeOriginal: b"2026:05:01 12:34:56",
                    piexif.ExifIFD.BodySerialNumber: b"F2LXK9QZ1234",
                },
                "GPS": {
                    piexif.GPSIFD.GPSLatitudeRef: b"N",
                    piexif.GPSIFD.GPSLatitude: ((52, 1), (22, 1), (1234, 100)),
                    piexif.GPSIFD.GPSLongitudeRef: b"E",
                    piexif.GPSIFD.GPSLongitude: ((4, 1), (53, 1), (4321, 100)),
                },
            }
        )
    )


def revision(*folders: str) -> str:
    """The commit measured, with "+changes" when ``folders`` differ from it ("?" outside git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *folders],
            cwd=ROOT,
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    if head.returncode != 0:
        return "?"
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def progress(message: str) -> None:
    """Overwrite one status line on stderr (only on a terminal)."""
    if sys.stderr.isatty():
        print(f"\r\033[K  {message}", end="", file=sys.stderr, flush=True)


def tree_at(ref: str | None, dest: Path) -> Path:
    """A folder importable as ``veilpix`` (put it first on ``sys.path``) holding revision
    ``ref`` of sdk/, proxy/ and adapters/ (``git archive``), or this work tree for None."""
    pkg = dest / "veilpix"
    if ref is None:
        src = ROOT
    else:
        src = dest / "src"
        src.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", ref, "sdk", "proxy", "adapters"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tree:
            tree.extractall(src, filter="data")
    pkg.mkdir(parents=True)
    for item in (src / "sdk").iterdir():
        (pkg / item.name).symlink_to(item)
    (pkg / "proxy").symlink_to(src / "proxy")
    (pkg / "adapters").symlink_to(src / "adapters")
    return dest
