"""Start-up time: ``import veilpix`` and the CLI, against the same code before issue 17.

The peer is veilpix itself at ``--baseline`` (default: the last commit before the package was
split into sub-packages), taken with ``git archive`` into a temporary folder, against this
work tree. Each case runs as a fresh interpreter (``python -c`` / ``python -m veilpix``), the
two trees alternated ``--repeat`` times after one warm-up run each (which compiles the
bytecode), and the table gives the median and the best wall time of each, and their ratios
(the best of many runs is the steadier figure on a busy machine). Below 1.00: the work tree
starts faster.

    .venv/bin/python bench/startup.py
    .venv/bin/python bench/startup.py --repeat 41 --json

What is measured:

- ``import veilpix``: the package alone (every public name is loaded on first use);
- ``veilpix --version`` and ``veilpix --help``: the CLI with nothing to do;
- ``veilpix scrub --help`` and ``veilpix audit --help``: one command's parser;
- ``veilpix inspect photo.jpg --json``: a whole small job (Pillow and the pipeline loaded).

The heavy third-party modules each case loads are listed too (the lint rule TID253 keeps
them out of start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import camera_exif, progress, revision, tree_at

BASELINE = "e5cea8d"  # main before the sub-packages (issue 17)
HEAVY = ("PIL", "numpy", "cv2", "rich", "cryptography", "httpx", "httpx2", "uvicorn")


def _cases(photo: Path) -> dict[str, list[str]]:
    return {
        "import veilpix": ["-c", "import veilpix"],
        "veilpix --version": ["-m", "veilpix", "--version"],
        "veilpix --help": ["-m", "veilpix", "--help"],
        "veilpix scrub --help": ["-m", "veilpix", "scrub", "--help"],
        "veilpix audit --help": ["-m", "veilpix", "audit", "--help"],
        "veilpix inspect photo.jpg": ["-m", "veilpix", "inspect", str(photo), "--json"],
    }


def _run(tree: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "0"}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True, timeout=60)
    return time.perf_counter() - start


def _heavy(tree: Path, args: list[str], out: Path) -> list[str]:
    """The heavy modules the case loads: the same command run once more, listing them from
    an exit hook into ``out`` (so what the command prints does not matter)."""
    hook = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write("
        f"','.join(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    if args[0] == "-c":
        code = hook + args[1]
    else:
        code = hook + f"import runpy\nsys.argv = {['veilpix', *args[2:]]!r}\n"
        code += "runpy.run_module('veilpix', run_name='__main__')"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, timeout=60, check=False
    )
    return [m for m in out.read_text().split(",") if m] if out.exists() else ["?"]


def _photo(folder: Path) -> Path:
    from PIL import Image

    path = folder / "photo.jpg"
    Image.new("RGB", (64, 48), (120, 160, 200)).save(path, "JPEG", exif=camera_exif())
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=21, help="runs per case and tree (21)")
    parser.add_argument("--baseline", default=BASELINE, help=f"the peer revision ({BASELINE})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vp-startup-") as tmp:
        base = tree_at(args.baseline, Path(tmp) / "base")
        work = tree_at(None, Path(tmp) / "work")
        cases = _cases(_photo(Path(tmp)))
        rows = []
        for name, case in cases.items():
            progress(f"{name}: {args.repeat} runs per tree")
            _run(base, case), _run(work, case)  # warm-up: bytecode compiled, files cached
            times: dict[str, list[float]] = {"work": [], "base": []}
            for _ in range(args.repeat):
                times["work"].append(_run(work, case))
                times["base"].append(_run(base, case))
            work_ms = statistics.median(times["work"]) * 1000
            base_ms = statistics.median(times["base"]) * 1000
            rows.append(
                {
                    "case": name,
                    "work_ms": round(work_ms, 1),
                    "base_ms": round(base_ms, 1),
                    "ratio": round(work_ms / base_ms, 3),
                    "work_min_ms": round(min(times["work"]) * 1000, 1),
                    "base_min_ms": round(min(times["base"]) * 1000, 1),
                    "heavy_work": _heavy(work, case, Path(tmp) / "heavy"),
                    "heavy_base": _heavy(base, case, Path(tmp) / "heavy"),
                }
            )
        progress("")
    bare = (
        statistics.median(_run(Path(tmp), ["-c", "pass"]) for _ in range(max(5, args.repeat // 2)))
        * 1000
    )
    if args.json:
        print(
            json.dumps(
                {
                    "work": revision("sdk", "proxy", "adapters"),
                    "baseline": args.baseline,
                    "repeat": args.repeat,
                    "python_ms": round(bare, 1),
                    "cases": rows,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"work tree {revision('sdk', 'proxy', 'adapters')} vs {args.baseline}, median of "
        f"{args.repeat} runs each, alternated; a bare `python -c pass` takes {bare:.0f} ms"
    )
    print(
        f"{'case':<28}{'work ms':>9}{'base ms':>9}{'ratio':>7}{'min work':>10}{'min base':>10}"
        f"{'ratio':>7}  heavy modules loaded (work / base)"
    )
    for r in rows:
        heavy = f"{','.join(r['heavy_work']) or '-'} / {','.join(r['heavy_base']) or '-'}"
        low = r["work_min_ms"] / r["base_min_ms"]
        print(
            f"{r['case']:<28}{r['work_ms']:>9.1f}{r['base_ms']:>9.1f}{r['ratio']:>7.2f}"
            f"{r['work_min_ms']:>10.1f}{r['base_min_ms']:>10.1f}{low:>7.2f}  {heavy}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
