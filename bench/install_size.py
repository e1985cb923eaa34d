"""Install size: what ``pip install`` of veilpix adds to a fresh venv, against the same
package before issue 18 (which dropped OpenCV and rich and put the face model in the wheel).

Both wheels are built here (``pip wheel --no-deps``): this work tree's and the one of
``--baseline`` (default: the last commit before issue 18, taken with ``git archive``). Each
is installed into a new empty venv per extra (none, ``heif``, ``faces``, ``proxy``), and the
size is what the venv's site-packages grew by (file sizes added up, as ``du
--apparent-size`` counts them; the venv's own pip and setuptools are left out). The
dependencies come from the package index (pip's cache makes later runs quick).

    .venv/bin/python bench/install_size.py
    .venv/bin/python bench/install_size.py --extras ,faces --json

Targets (issue 18): the base install at most 120 MB, the ``faces`` extra at most 60 MB on top
of it, and nothing that needs libGL (no ``opencv-python``: its desktop build links libGL,
which slim containers lack). Sizes are in MB of 10^6 bytes, MiB (2^20 bytes, what du -h and
ls -h call "M") in brackets; the targets are checked in MiB.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import venv
from pathlib import Path

from _common import progress, revision

BASELINE = "a0d4b1b"  # main before issue 18
ROOT = Path(__file__).resolve().parent.parent
# The "120 MB" and "60 MB", read as du and ls -h count them (MiB); the table prints
# both units, and the target line says how far the SI figure is from them too.
TARGET_BASE = 120 * 2**20
TARGET_FACES = 60 * 2**20
NEEDS_LIBGL = ("opencv-python", "opencv-contrib-python")


def tree_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def site_packages(env: Path) -> Path:
    found = list((env / "lib").glob("python3*/site-packages"))
    if not found:
        raise SystemExit(f"no site-packages in {env}")
    return found[0]


def checkout(ref: str, dest: Path) -> Path:
    """The files of revision ``ref`` that its wheel is built from (``git archive``)."""
    files = ["pyproject.toml", "README.md", "LICENSE", "sdk", "proxy", "adapters"]
    archive = subprocess.run(
        ["git", "archive", ref, *files], cwd=ROOT, check=True, capture_output=True, timeout=60
    ).stdout
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tree:
        tree.extractall(dest, filter="data")
    return dest


def build_wheel(src: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (wheel,) = out.glob("veilpix-*.whl")
    return wheel


def installed_size(wheel: Path, extra: str, work: Path) -> dict[str, object]:
    """What installing ``wheel[extra]`` adds to a new venv, and the distributions it brought."""
    env = work / f"venv-{wheel.parent.name}-{extra or 'base'}"
    venv.EnvBuilder(with_pip=True, clear=True).create(env)
    py = env / "bin" / "python"
    site = site_packages(env)
    before = tree_bytes(site)
    spec = f"{wheel}[{extra}]" if extra else str(wheel)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    after = tree_bytes(site)
    listed = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    )
    names = sorted(d["name"].lower() for d in json.loads(listed.stdout))
    return {"bytes": after - before, "distributions": names}


def mb(n: float) -> str:
    return f"{n / 1e6:6.1f} MB ({n / 2**20:5.1f} MiB)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--baseline", default=BASELINE, help=f"the peer revision ({BASELINE})")
    ap.add_argument(
        "--extras",
        default=",heif,faces,proxy",
        help="comma-separated extras to measure ('' = none; default: ,heif,faces,proxy)",
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    extras = args.extras.split(",")
    with tempfile.TemporaryDirectory(prefix="veilpix-size-") as tmp:
        work = Path(tmp)
        progress(f"building the wheels (work tree, {args.baseline})")
        new = build_wheel(ROOT, work / "new")
        old = build_wheel(checkout(args.baseline, work / "old-src"), work / "old")
        wheels = {"now": new.stat().st_size, "baseline": old.stat().st_size}
        rows = []
        for extra in extras:
            progress(f"installing [{extra or 'base'}] twice")
            now = installed_size(new, extra, work)
            before = installed_size(old, extra, work)
            rows.append({"extra": extra or "", "now": now, "baseline": before})
    base = next((r for r in rows if r["extra"] == ""), None)
    faces = next((r for r in rows if r["extra"] == "faces"), None)
    doc: dict[str, object] = {
        "veilpix": revision("sdk", "proxy", "adapters"),
        "baseline": args.baseline,
        "wheel_bytes": wheels,
        "rows": rows,
    }
    targets = []
    if base is not None:
        size = base["now"]["bytes"]  # type: ignore[index]
        verdict = "PASS" if size <= TARGET_BASE else "MISS"
        over = size - 120e6
        si = f"; {over / 1e6:.1f} MB over 120 SI megabytes" if over > 0 else ""
        targets.append(f"base ≤ 120 MiB: {mb(size)}: {verdict}{si}")
    if base is not None and faces is not None:
        extra = faces["now"]["bytes"] - base["now"]["bytes"]  # type: ignore[index]
        targets.append(
            f"faces ≤ +60 MB: {extra / 1e6:+.1f} MB: "
            + ("PASS" if extra <= TARGET_FACES else "MISS")
        )
    gl = sorted({d for r in rows for d in r["now"]["distributions"] if d in NEEDS_LIBGL})  # type: ignore[index]
    targets.append("nothing that needs libGL: " + ("PASS" if not gl else f"MISS ({', '.join(gl)})"))
    doc["targets"] = targets
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"veilpix {doc['veilpix']} against {args.baseline}; wheel {wheels['now'] / 1e6:.1f} MB "
        f"(was {wheels['baseline'] / 1e6:.1f} MB)"
    )
    print(f"{'install':<10} {'now':>24} {'before issue 18':>24} {'ratio':>6}")
    for r in rows:
        now_b, old_b = r["now"]["bytes"], r["baseline"]["bytes"]  # type: ignore[index]
        name = f"[{r['extra']}]" if r["extra"] else "base"
        print(f"{name:<10} {mb(now_b):>24} {mb(old_b):>24} {now_b / old_b:6.2f}")
    if base is not None:
        gone = sorted(set(base["baseline"]["distributions"]) - set(base["now"]["distributions"]))  # type: ignore[index]
        print(f"no longer installed by the base: {', '.join(gone) or '-'}")
    for line in targets:
        print("target " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
