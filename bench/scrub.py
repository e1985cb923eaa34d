"""Benchmark: ``veilpix scrub`` against exiftool and mat2 on the shared real-image corpus.

What is measured
----------------
Every tool runs as a user would start it: one fresh process per measurement, wall time from
process start to exit (``time.perf_counter`` around ``subprocess.run``):

* veilpix   ``veilpix scrub <copy> -o <out> --json [-j N]`` (default jobs = number of cores)
* exiftool  ``exiftool -all= -overwrite_original -q -q <copy>`` (one batch process)
* mat2      ``mat2 --inplace <files...>`` (one process; skipped with a note when missing)

Before every single measurement the corpus is copied into a fresh temporary folder (the peers
rewrite files in place), so every tool starts from the same untouched bytes. The copy is not
timed. Nothing is ever written into the shared folder. Each measurement is repeated
``--repeat`` times (default 3); the median is reported. The tools' order is rotated from one
repetition to the next, and one untimed warm-up call per tool (on a single file) comes first,
so no tool pays alone for a cold disk cache.

Two sets are measured in one run: the JPEG subset (``.jpg``/``.jpeg``/``.mpo``) and the whole
corpus. The issue's speed targets are about files/s relative to exiftool in the same run:
veilpix >= 3x exiftool on the JPEG subset and >= 0.5x exiftool on the whole corpus.

Quality columns (from the outputs of the first repetition, same oracle for every tool)
-------------------------------------------------------------------------------------
failed    files the tool reported an error for (veilpix: ``ok: false`` in its JSON or no entry;
          exiftool: an ``Error`` line naming the file; mat2: a ``[-]`` line naming the file).
broken    outputs the tool wrote that Pillow (+ pillow_heif) cannot decode any more.
dirty     outputs that ``<shared>/tools/residual.py --summary`` calls DIRTY. A file the tool
          failed on counts as dirty (veilpix wrote no copy; a peer left the original untouched).
sideways  outputs whose pixels are not upright. The reference is the ORIGINAL decoded with
          Pillow (+ pillow_heif) and ``ImageOps.exif_transpose``. The output is decoded plainly:
          the tools removed the orientation tag, which is how an API vendor would see the
          file. Exception: an output that is still AVIF gets ``exif_transpose`` too, because
          Pillow reports AVIF's irot/imir (container geometry, not metadata) as EXIF
          orientation; HEIF geometry is applied by pillow_heif itself. Both images are reduced
          to 48x48 normalised greyscale; the output is sideways when its size only matches
          the reference after a 90 degree turn, or when one of the other 7 flips/rotations
          matches the reference clearly better than the output as it is. Near-uniform
          references (std < 2), failed files and broken outputs are not judged.

How to read the output
----------------------
One table per set. ``files/s`` and ``MB/s`` use the median wall time (MB = 10^6 input bytes).
``vp x`` is veilpix files/s divided by that tool's files/s, i.e. how many times faster veilpix
is than that peer (below 1 = slower). The ``target`` line compares it with the issue's goal.
Then the veilpix breakdown (lossless strip vs re-encode, its own reported seconds) and, per
tool, the names behind the failed/dirty/sideways counts.

The cost of the proofs (``--proofs``, on by default)
----------------------------------------------------
The lossless strip proves every kept byte (structure, or compressed data whose extent the
codec proves; see docs/sanitize.md). Its price is measured in process, against ``--baseline``
(default: the commit before the proofs, taken with ``git archive``) in the same run: each tree
sanitizes every corpus file in a child process (``veilpix.sanitize``, default policy, every
file warmed up once), ``--repeat`` rounds in alternating order, the per-file minimum over the
rounds summed per format, over the files both trees strip losslessly. The same revision also runs
as a peer tool, ``veilpix-base``, in the tables above (``veilpix scrub`` as it was, started
the same way). The issue's target: the lossless path on the corpus JPEGs at most +25 %.

Run with the project's venv (Pillow, numpy, pillow_heif)::

    .venv/bin/python bench/scrub.py --repeat 3 [--jobs N] [--only jpeg|all] [--json] [--keep]
    .venv/bin/python bench/scrub.py --repeat 5 --proofs-only [--baseline REV]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, tree_at
from PIL import Image, ImageOps

try:
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # HEIC originals then cannot be judged for orientation
    pillow_heif = None

REPO = Path(__file__).resolve().parents[1]
JPEG_SUFFIXES = {".jpg", ".jpeg", ".mpo"}
NOT_IMAGES = {".tsv", ".csv", ".txt", ".md", ".json"}
TARGETS = {"jpeg": 3.0, "all": 0.5}  # veilpix files/s / exiftool files/s, from the issue
SET_TITLES = {"jpeg": "JPEG subset (.jpg/.jpeg/.mpo)", "all": "whole corpus"}
THUMB = 48  # side of the greyscale thumbnails compared for orientation
UNIFORM_STD = 2.0  # references flatter than this (0..255 scale) are not judged
CLEARLY_BETTER = 0.5  # another transform must have < half the error of the output as-is
MIN_GAIN = 0.2  # ... and be better by at least this much (normalised MSE, 0..4)


# --------------------------------------------------------------------------- locations


def shared_dir() -> Path:
    env = os.environ.get("VEILPIX_SHARED")
    return Path(env).expanduser() if env else REPO.parent / "shared"


def corpus_files(corpus: Path) -> list[str]:
    """Names of the images directly in ``corpus`` (corpus.tsv and other notes ignored)."""
    return sorted(
        p.name
        for p in corpus.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in NOT_IMAGES
    )


def find_veilpix() -> str | None:
    beside = Path(sys.executable).parent / "veilpix"
    return str(beside) if beside.exists() else shutil.which("veilpix")


# --------------------------------------------------------------------------- tool runs


@dataclass
class Run:
    """One timed tool invocation over one staged copy of a set."""

    seconds: float
    returncode: int
    outputs: dict[str, Path]  # corpus name -> file the tool left behind (absent: none)
    failed: dict[str, str]  # corpus name -> reason
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # veilpix only
    internal_seconds: float | None = None  # veilpix's own "seconds" from its JSON summary
    stderr: str = ""


# Measure veilpix as "pip install" leaves it, with compiled bytecode: an environment that sets
# PYTHONDONTWRITEBYTECODE (some CI images do) would make every run recompile every module.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run(
        argv, capture_output=True, text=True, errors="replace", check=False, env=ENV
    )
    return time.perf_counter() - start, proc


def named_in(line: str, in_dir: Path, names: list[str]) -> str | None:
    """The corpus file a tool's message line is about (longest match wins: a.tif vs a.tiff)."""
    hits = [n for n in names if str(in_dir / n) in line]
    return max(hits, key=len) if hits else None


def run_veilpix(exe: str, in_dir: Path, names: list[str], out_dir: Path, jobs: int | None) -> Run:
    argv = [exe, "scrub", str(in_dir), "-o", str(out_dir), "--json"]
    if jobs:
        argv += ["-j", str(jobs)]
    seconds, proc = timed(argv)
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(
            f"veilpix did not print JSON (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        ) from None
    outputs: dict[str, Path] = {}
    failed: dict[str, str] = {}
    reports: dict[str, dict[str, Any]] = {}
    for entry in doc["files"]:
        name = Path(entry["input"]).name
        if entry.get("ok"):
            outputs[name] = Path(entry["output"])
            reports[name] = entry["report"]
        else:
            err = entry.get("error") or {}
            failed[name] = f"{err.get('type', 'error')}: {err.get('message', '')}".strip()
    for name in names:
        if name not in outputs and name not in failed:
            failed[name] = "no entry in veilpix's JSON (skipped)"
    return Run(
        seconds,
        proc.returncode,
        outputs,
        failed,
        reports,
        doc.get("summary", {}).get("seconds"),
        proc.stderr,
    )


def run_exiftool(exe: str, in_dir: Path, names: list[str], out_dir: Path, jobs: int | None) -> Run:
    seconds, proc = timed([exe, "-all=", "-overwrite_original", "-q", "-q", str(in_dir)])
    failed: dict[str, str] = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("Error") and (name := named_in(line, in_dir, names)):
            failed[name] = line.rsplit(" - ", 1)[0]
    return Run(seconds, proc.returncode, {n: in_dir / n for n in names}, failed, stderr=proc.stderr)


def run_mat2(exe: str, in_dir: Path, names: list[str], out_dir: Path, jobs: int | None) -> Run:
    seconds, proc = timed([exe, "--inplace", *(str(in_dir / n) for n in names)])
    failed: dict[str, str] = {}
    for line in (proc.stdout + proc.stderr).splitlines():  # mat2 reports on stdout
        if line.startswith("[-]") and (name := named_in(line, in_dir, names)):
            failed[name] = line.replace(str(in_dir / name), "<file>")
    return Run(seconds, proc.returncode, {n: in_dir / n for n in names}, failed, stderr=proc.stderr)


Runner = Callable[[str, Path, list[str], Path, int | None], Run]


@dataclass
class Tool:
    name: str
    exe: str
    runner: Runner
    version: str


def tool_version(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "?"


def baseline_cli(ref: str, tmp: Path) -> Path:
    """An executable that runs ``veilpix`` as it was at revision ``ref``."""
    tree = tree_at(ref, tmp / "baseline-tree")
    shim = tmp / "veilpix-baseline"
    shim.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(tree)!r})\n"
        "from veilpix.cli._main import main\nsys.exit(main())\n"
    )
    shim.chmod(0o755)
    return shim


def discover_tools(notes: list[str], baseline: Path | None = None) -> list[Tool]:
    tools: list[Tool] = []
    veilpix = find_veilpix()
    if veilpix is None:
        raise SystemExit("veilpix CLI not found (install the project into the venv first)")
    tools.append(Tool("veilpix", veilpix, run_veilpix, tool_version([veilpix, "--version"])))
    if baseline is not None:
        tools.append(Tool("veilpix-base", str(baseline), run_veilpix, "the --baseline revision"))
    if exiftool := shutil.which("exiftool"):
        tools.append(Tool("exiftool", exiftool, run_exiftool, tool_version([exiftool, "-ver"])))
    else:
        notes.append("exiftool not installed: no speed targets can be checked")
    if mat2 := shutil.which("mat2"):
        tools.append(Tool("mat2", mat2, run_mat2, tool_version([mat2, "--version"])))
    else:
        notes.append("mat2 not installed: skipped")
    return tools


# --------------------------------------------------------------------------- quality


def residual_dirty(oracle: Path | None, files: dict[str, Path]) -> tuple[set[str] | None, str]:
    """Names whose file the oracle calls DIRTY; None (and a reason) when it cannot run."""
    if oracle is None:
        return None, "oracle residual.py not found"
    existing = {str(p): n for n, p in files.items() if p.is_file()}
    if not existing:
        return set(), ""
    python = shutil.which("python3") or sys.executable
    proc = subprocess.run(
        [python, str(oracle), "--summary", *existing],
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if proc.returncode not in (0, 1):
        return None, f"oracle exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    dirty: set[str] = set()
    seen = 0
    for line in proc.stdout.splitlines():
        status, _, rest = line.partition("\t")
        path = rest.split("\t", 1)[0]
        if status in ("CLEAN", "DIRTY") and path in existing:
            seen += 1
            if status == "DIRTY":
                dirty.add(existing[path])
    if seen != len(existing):
        return None, f"oracle judged {seen} of {len(existing)} files"
    return dirty, ""


def grey_thumb(im: Image.Image) -> np.ndarray:
    """48x48 greyscale (0..255 scale) of the current frame; alpha composited on mid-grey."""
    if im.mode.startswith("I;16"):
        grey = Image.fromarray((np.asarray(im, dtype=np.float32) / 257.0).astype(np.float32), "F")
    elif im.mode in ("I", "F"):
        grey = im.convert("F")
    else:
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
            canvas.alpha_composite(rgba)
            im = canvas
        grey = im.convert("L").convert("F")
    return np.asarray(grey.resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float64)


def decode(path: Path, *, upright: bool) -> tuple[np.ndarray, tuple[int, int]]:
    """Thumbnail and full (width, height) of the first frame, optionally exif_transposed."""
    with Image.open(path) as im:
        width, height = im.size
        im.draft("RGB", (THUMB * 4, THUMB * 4))  # JPEG: decode at a reduced scale (fast)
        frame: Image.Image = im
        if upright or im.format == "AVIF":
            try:
                frame = ImageOps.exif_transpose(im)
            except Exception:
                frame = im
            if frame.size != im.size and frame.size == (im.size[1], im.size[0]):
                width, height = height, width
        return grey_thumb(frame), (width, height)


def dihedral(a: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of a square array; index 0 is the identity."""
    return [np.rot90(a, k) for k in range(4)] + [np.rot90(np.fliplr(a), k) for k in range(4)]


def normalised(a: np.ndarray) -> np.ndarray:
    std = float(a.std())
    return (a - a.mean()) / std if std > 1e-9 else a - a.mean()


@dataclass
class Reference:
    thumb: np.ndarray  # normalised
    size: tuple[int, int]
    uniform: bool


def is_sideways(ref: Reference, thumb: np.ndarray, size: tuple[int, int]) -> bool:
    (rw, rh), (ow, oh) = ref.size, size
    if rw != rh and (ow, oh) == (rh, rw):
        return True  # sizes only match after a 90 degree turn
    errors = [float(np.mean((ref.thumb - t) ** 2)) for t in dihedral(normalised(thumb))]
    best_other = min(errors[1:])
    return best_other < CLEARLY_BETTER * errors[0] and errors[0] - best_other > MIN_GAIN


def load_references(corpus: Path, names: list[str]) -> dict[str, Reference | None]:
    refs: dict[str, Reference | None] = {}
    for name in names:
        try:
            thumb, size = decode(corpus / name, upright=True)
        except Exception:
            refs[name] = None  # original not decodable here: not judged
            continue
        refs[name] = Reference(normalised(thumb), size, float(thumb.std()) < UNIFORM_STD)
    return refs


def sideways_of(run: Run, refs: dict[str, Reference | None]) -> tuple[list[str], int, list[str]]:
    """(sideways names, number judged, undecodable outputs)."""
    sideways: list[str] = []
    undecodable: list[str] = []
    judged = 0
    for name, out in sorted(run.outputs.items()):
        ref = refs.get(name)
        if ref is None or ref.uniform or name in run.failed:
            continue
        try:
            thumb, size = decode(out, upright=False)
        except Exception:
            undecodable.append(name)
            continue
        judged += 1
        if is_sideways(ref, thumb, size):
            sideways.append(name)
    return sideways, judged, undecodable


# --------------------------------------------------------------------------- bench loop


@dataclass
class ToolResult:
    tool: str
    files: int
    megabytes: float
    runs: list[float]
    median: float
    files_per_s: float
    mb_per_s: float
    failed: dict[str, str]
    dirty: list[str] | None
    dirty_note: str
    sideways: list[str]
    judged: int
    undecodable: list[str]
    untouched: int  # outputs byte-identical to the original (peers only)
    veilpix_x: float | None = None  # veilpix files/s / this tool's files/s
    lossless: int | None = None
    reencoded: int | None = None
    reencoded_by_format: dict[str, int] | None = None
    internal_seconds: float | None = None


def stage(root: Path, corpus: Path, names: list[str]) -> Path:
    """A fresh folder holding untouched copies of ``names``."""
    root.mkdir(parents=True)
    in_dir = root / "in"
    in_dir.mkdir()
    for name in names:
        shutil.copy2(corpus / name, in_dir / name)
    return in_dir


def same_bytes(a: Path, b: Path) -> bool:
    return a.is_file() and a.read_bytes() == b.read_bytes()


def evaluate(
    tool: Tool,
    run: Run,
    names: list[str],
    corpus: Path,
    oracle: Path | None,
    refs: dict[str, Reference | None],
) -> ToolResult:
    dirty, dirty_note = residual_dirty(oracle, run.outputs)
    if dirty is not None:
        dirty |= set(run.failed)  # no clean copy exists for a failed file
    sideways, judged, undecodable = sideways_of(run, refs)
    result = ToolResult(
        tool=tool.name,
        files=len(names),
        megabytes=sum((corpus / n).stat().st_size for n in names) / 1e6,
        runs=[],
        median=0.0,
        files_per_s=0.0,
        mb_per_s=0.0,
        failed=dict(sorted(run.failed.items())),
        dirty=sorted(dirty) if dirty is not None else None,
        dirty_note=dirty_note,
        sideways=sideways,
        judged=judged,
        undecodable=undecodable,
        untouched=0,
    )
    if tool.name == "veilpix":
        paths = [bool(r.get("lossless")) for r in run.reports.values()]
        result.lossless = sum(paths)
        result.reencoded = len(paths) - result.lossless
        result.reencoded_by_format = dict(
            Counter(
                str(r.get("format_in")) for r in run.reports.values() if not r.get("lossless")
            ).most_common()
        )
        result.internal_seconds = run.internal_seconds
    else:
        result.untouched = sum(same_bytes(p, corpus / n) for n, p in run.outputs.items())
    return result


def bench_set(
    set_name: str,
    names: list[str],
    tools: list[Tool],
    corpus: Path,
    oracle: Path | None,
    refs: dict[str, Reference | None],
    args: argparse.Namespace,
    tmp: Path,
) -> list[ToolResult]:
    times: dict[str, list[float]] = {t.name: [] for t in tools}
    results: dict[str, ToolResult] = {}
    for rep in range(args.repeat):
        order = tools[rep % len(tools) :] + tools[: rep % len(tools)]  # rotate for fairness
        for tool in order:
            progress(f"{set_name}: run {rep + 1}/{args.repeat} {tool.name}")
            root = tmp / set_name / tool.name / f"run{rep + 1}"
            in_dir = stage(root, corpus, names)
            run = tool.runner(tool.exe, in_dir, names, root / "out", args.jobs)
            times[tool.name].append(run.seconds)
            if rep == 0:  # outputs are deterministic: judge quality once
                results[tool.name] = evaluate(tool, run, names, corpus, oracle, refs)
            if not args.keep:
                shutil.rmtree(root)
    for tool in tools:
        r = results[tool.name]
        r.runs = [round(s, 4) for s in times[tool.name]]
        r.median = statistics.median(times[tool.name])
        r.files_per_s = r.files / r.median
        r.mb_per_s = r.megabytes / r.median
    vp = results["veilpix"].files_per_s
    for r in results.values():
        r.veilpix_x = vp / r.files_per_s
    return [results[t.name] for t in tools]


def progress(message: str) -> None:
    if sys.stderr.isatty():
        print(f"\r\033[K  {message}", end="", file=sys.stderr, flush=True)


def warm_up(tools: list[Tool], corpus: Path, names: list[str], tmp: Path) -> None:
    """One untimed call per tool on the smallest JPEG: loads binaries and libraries into cache."""
    jpegs = [n for n in names if Path(n).suffix.lower() in JPEG_SUFFIXES] or names
    smallest = min(jpegs, key=lambda n: (corpus / n).stat().st_size)
    for tool in tools:
        root = tmp / "warmup" / tool.name
        in_dir = stage(root, corpus, [smallest])
        tool.runner(tool.exe, in_dir, [smallest], root / "out", 1)
        shutil.rmtree(root)


# --------------------------------------------------------------------------- report


def print_set(set_name: str, results: list[ToolResult], repeat: int) -> None:
    first = results[0]
    print(
        f"\n== {SET_TITLES[set_name]}: {first.files} files, {first.megabytes:.1f} MB, "
        f"median of {repeat} run(s) =="
    )
    header = (
        f"{'tool':<9} {'files':>5} {'MB':>6} {'median s':>9} {'runs (s)':>20} "
        f"{'files/s':>8} {'MB/s':>6} {'vp x':>6} {'failed':>6} {'broken':>6} {'dirty':>5} "
        f"{'sideways':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        runs = " ".join(f"{s:.2f}" for s in r.runs)
        dirty = "n/a" if r.dirty is None else f"{len(r.dirty)}"
        print(
            f"{r.tool:<9} {r.files:>5} {r.megabytes:>6.1f} {r.median:>9.3f} {runs:>20} "
            f"{r.files_per_s:>8.1f} {r.mb_per_s:>6.1f} {r.veilpix_x:>5.2f}x {len(r.failed):>6} "
            f"{len(r.undecodable):>6} {dirty:>5} {f'{len(r.sideways)}/{r.judged}':>8}"
        )
    print(
        "  vp x = veilpix files/s / tool files/s; broken = outputs Pillow cannot decode; "
        "sideways = count / outputs judged"
    )
    exif = next((r for r in results if r.tool == "exiftool"), None)
    if exif is not None and exif.veilpix_x is not None:
        goal = TARGETS[set_name]
        verdict = "MET" if exif.veilpix_x >= goal else "NOT MET"
        print(
            f"  target: veilpix >= {goal:g}x exiftool files/s -> {exif.veilpix_x:.2f}x  {verdict}"
        )
    for r in results:
        if r.tool == "veilpix":
            formats = ", ".join(f"{k} {v}" for k, v in (r.reencoded_by_format or {}).items())
            internal = (
                f"; its own reported time {r.internal_seconds:.2f} s of {r.runs[0]:.2f} s wall"
                if r.internal_seconds is not None
                else ""
            )
            print(
                f"  veilpix paths: {r.lossless} lossless strip, {r.reencoded} re-encoded"
                f"{f' ({formats})' if formats else ''}{internal} (run 1)"
            )
    for r in results:
        details: list[str] = []
        if r.failed:
            details.append(
                "failed: " + "; ".join(f"{n} ({why[:70]})" for n, why in r.failed.items())
            )
        if r.dirty:
            details.append("dirty: " + ", ".join(r.dirty))
        elif r.dirty is None:
            details.append(f"dirty: not measured ({r.dirty_note})")
        if r.sideways:
            details.append("sideways: " + ", ".join(r.sideways))
        if r.undecodable:
            details.append("broken (Pillow cannot decode the output): " + ", ".join(r.undecodable))
        if r.tool != "veilpix":
            details.append(f"untouched (byte-identical to the original): {r.untouched}")
        for line in details:
            print(f"  [{r.tool}] {line}")


# --------------------------------------------------------------------------- cost of proofs

_PROOF_CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import veilpix
rounds = int(sys.argv[2])
files = [Path(p) for p in sys.argv[3:]]
data = {p.name: p.read_bytes() for p in files}
best, lossless, fmt = {}, {}, {}
for r in range(rounds + 1):  # round 0 warms up (imports, libraries, caches)
    for name, raw in data.items():
        start = time.perf_counter()
        try:
            out = veilpix.sanitize(raw)
        except veilpix.VeilpixError:
            continue
        took = time.perf_counter() - start
        if r:
            best[name] = min(best.get(name, took), took)
        lossless[name] = out.report.lossless
        fmt[name] = out.report.format_in
print(json.dumps({"best": best, "lossless": lossless, "format": fmt,
                  "veilpix": veilpix.__file__}))
"""


def default_baseline() -> str:
    """The commit before the lossless proofs came in (HEAD when they are not committed yet)."""
    added = subprocess.run(
        ["git", "log", "--format=%H", "-S", "entropy_proof", "--", "sdk/_turbojpeg.py"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    ref = f"{added[-1]}^" if added else "HEAD"
    short = subprocess.run(
        ["git", "rev-parse", "--short", ref],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    return short or ref


def bench_proofs(corpus: Path, names: list[str], baseline: str, repeat: int) -> dict[str, Any]:
    """Seconds per format for the files both trees strip losslessly, this tree and baseline."""
    files = [str(corpus / n) for n in names]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {
            "this tree": tree_at(None, Path(tmp) / "now"),
            baseline: tree_at(baseline, Path(tmp) / "base"),
        }
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
        for r in range(repeat):
            for name in list(trees) if r % 2 == 0 else list(trees)[::-1]:
                progress(f"proof cost: {name}, round {r + 1}/{repeat}")
                env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
                got = subprocess.run(
                    [sys.executable, "-c", _PROOF_CHILD, str(trees[name]), "1", *files],
                    check=True,
                    capture_output=True,
                    text=True,
                    timeout=1200,
                    env=env,
                    cwd=tmp,
                )
                result = json.loads(got.stdout)
                assert result["veilpix"].startswith(str(trees[name])), result["veilpix"]
                runs[name].append(result)
    now, base = (runs[k] for k in trees)
    both = [
        n
        for n in now[0]["lossless"]
        if now[0]["lossless"].get(n)
        and base[0]["lossless"].get(n)
        and all(n in run["best"] for run in now + base)
    ]
    out: dict[str, Any] = {"baseline": baseline, "formats": {}}
    for fmt in sorted({now[0]["format"][n] for n in both}):
        group = [n for n in both if now[0]["format"][n] == fmt]
        t_now = sum(min(run["best"][n] for run in now) for n in group)
        t_base = sum(min(run["best"][n] for run in base) for n in group)
        out["formats"][fmt] = {
            "files": len(group),
            "this tree ms": round(t_now * 1e3, 1),
            "baseline ms": round(t_base * 1e3, 1),
            "change": round(t_now / t_base - 1, 4),
        }
    out["only_now_lossless"] = sorted(
        n for n in now[0]["lossless"] if now[0]["lossless"][n] and n not in both
    )
    out["no_longer_lossless"] = sorted(
        n for n in base[0]["lossless"] if base[0]["lossless"][n] and not now[0]["lossless"].get(n)
    )
    return out


def print_proofs(proofs: dict[str, Any]) -> None:
    print(f"\nCost of the lossless proofs (in process, this tree vs {proofs['baseline'][:12]}):")
    print("| format | files | baseline ms | this tree ms | change | target |")
    print("|---|---:|---:|---:|---:|---|")
    for fmt, row in proofs["formats"].items():
        target = "<= +25 %" if fmt in ("JPEG", "MPO") else ""
        print(
            f"| {fmt} | {row['files']} | {row['baseline ms']} | {row['this tree ms']} | "
            f"{row['change']:+.1%} | {target} |"
        )
    if proofs["no_longer_lossless"]:
        print("no longer stripped losslessly: " + ", ".join(proofs["no_longer_lossless"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per tool and set (median)")
    ap.add_argument("--jobs", type=int, default=None, help="passed to veilpix -j (default: cores)")
    ap.add_argument("--json", action="store_true", help="print machine-readable results only")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    ap.add_argument("--corpus", type=Path, help="image folder (default: <shared>/corpus)")
    ap.add_argument("--only", choices=["jpeg", "all"], help="measure only one set")
    ap.add_argument(
        "--baseline",
        help="git revision for the proof-cost peer (default: the commit before the proofs)",
    )
    ap.add_argument("--no-proofs", action="store_true", help="skip the proof-cost measurement")
    ap.add_argument("--proofs-only", action="store_true", help="measure only the proof cost")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    shared = shared_dir()
    corpus = (args.corpus or shared / "corpus").resolve()
    if not corpus.is_dir():
        if args.corpus:
            ap.error(f"--corpus {args.corpus}: not a folder")
        print(
            f"corpus not found at {corpus}: nothing to measure. Put the shared folder at "
            f"{REPO.parent / 'shared'}, set VEILPIX_SHARED, or pass --corpus DIR."
        )
        return 0
    names = corpus_files(corpus)
    if not names:
        print(f"no images in {corpus}: nothing to measure.")
        return 0
    oracle = next(
        (
            p
            for p in (shared / "tools" / "residual.py", corpus.parent / "tools" / "residual.py")
            if p.is_file()
        ),
        None,
    )

    notes: list[str] = []
    if pillow_heif is None:
        notes.append("pillow_heif missing: HEIC originals are not judged for orientation")
    tmp = Path(tempfile.mkdtemp(prefix="veilpix-bench-"))
    baseline = args.baseline or default_baseline()
    peer = baseline_cli(baseline, tmp) if not args.no_proofs else None
    tools = discover_tools(notes, peer)
    sets = {
        "jpeg": [n for n in names if Path(n).suffix.lower() in JPEG_SUFFIXES],
        "all": names,
    }
    if args.only:
        sets = {args.only: sets[args.only]}

    proofs = None
    try:
        started = time.perf_counter()
        report: dict[str, list[ToolResult]] = {}
        if not args.proofs_only:
            refs = load_references(corpus, names)
            warm_up(tools, corpus, names, tmp)
            report = {
                name: bench_set(name, files, tools, corpus, oracle, refs, args, tmp)
                for name, files in sets.items()
                if files
            }
        if not args.no_proofs:
            proofs = bench_proofs(corpus, names, baseline, args.repeat)
        elapsed = time.perf_counter() - started
        progress("")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        doc = {
            "corpus": str(corpus),
            "oracle": str(oracle) if oracle else None,
            "repeat": args.repeat,
            "jobs": args.jobs,
            "cores": os.cpu_count(),
            "tools": {t.name: {"path": t.exe, "version": t.version} for t in tools},
            "targets_vs_exiftool_files_per_s": TARGETS,
            "sets": {k: [asdict(r) for r in v] for k, v in report.items()},
            "notes": notes,
            "proofs": proofs,
            "kept": str(tmp) if args.keep else None,
            "bench_seconds": round(elapsed, 1),
        }
        print(json.dumps(doc, indent=1))
        return 0

    print(f"veilpix scrub benchmark: corpus {corpus} ({len(names)} images)")
    print(
        f"cores {os.cpu_count()}, veilpix jobs {args.jobs or 'default (cores)'}, "
        f"repeat {args.repeat}, oracle {oracle or 'missing'}"
    )
    print("tools: " + "; ".join(f"{t.name} {t.version} ({t.exe})" for t in tools))
    for note in notes:
        print(f"note: {note}")
    for name, results in report.items():
        print_set(name, results, args.repeat)
    if proofs is not None:
        print_proofs(proofs)
    print(f"\nbench took {elapsed:.1f} s")
    if args.keep:
        print(f"temporary folders kept in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
