"""``veilpix scrub``: clean copies of many files, in parallel, with progress and a summary.

Workers read, sanitize and write one file each and send back a small result (the report as a
dictionary), never image bytes. Output files are written atomically (temporary file in the
target folder, then rename), so an interrupted run never leaves half-written images.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from veilpix._errors import VeilpixError
from veilpix._policy import Policy
from veilpix.cli._files import Job, collect
from veilpix.cli._options import Subparsers, add_policy_options, policy_from_args, positive_int
from veilpix.formats._registry import FORMATS
from veilpix.image._pipeline import sanitize
from veilpix.metadata._facts import CATEGORIES, SENSITIVE

__all__ = ["add_parser", "run"]


@dataclass(frozen=True)
class _State:
    jobs: list[Job]
    targets: list[str]
    reserved: frozenset[str]
    shared_stems: frozenset[str]  # stems more than one job has: their outputs keep the name
    policy: Policy
    in_place: bool
    consent: str | None = None


_STATE: _State | None = None


def _init(state: _State) -> None:
    global _STATE  # noqa: PLW0603 - per-worker state set once by the pool initializer
    _STATE = state


def _write_atomic(path: str, data: bytes) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.veilpix-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _output_path(state: _State, index: int, fmt: str, extension: str) -> str:
    target = state.targets[index]
    stem, ext = os.path.splitext(target)
    if fmt in FORMATS and ext.lower() in FORMATS[fmt].extensions:
        return target
    candidate = stem + extension
    # example.avif and example.heic both become JPEG: "example.jpg" would be written twice,
    # by two workers at once, so both keep their whole name (example.avif.jpg, ...)
    taken = (
        os.path.normcase(candidate) in state.reserved
        or os.path.normcase(stem) in state.shared_stems
        or (state.in_place and os.path.exists(candidate))
    )
    return target + extension if taken else candidate


_MAX_WARNINGS = 20  # lines kept per file; a broken file can make a library print thousands


@contextlib.contextmanager
def _warnings_into(out: dict[str, Any]) -> Iterator[None]:
    """What the decoders say while one file is processed (Python warnings, and what C
    libraries such as libtiff print on file descriptor 2) goes into that file's entry under
    "warnings" instead of onto the terminal: ``--json`` output stays machine-readable.
    Workers handle one file at a time, so the descriptor is theirs while it is redirected."""
    said: list[str] = []
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            printed = sink.read(64 * 1024).decode("utf-8", "replace").splitlines()
            said = [f"{w.category.__name__}: {w.message}" for w in caught] + printed
    lines = [line.strip()[:300] for line in dict.fromkeys(said) if line.strip()]
    if lines:
        out["warnings"] = lines[:_MAX_WARNINGS]


def _process(index: int) -> dict[str, Any]:
    state = _STATE
    assert state is not None
    job = state.jobs[index]
    out: dict[str, Any] = {"index": index, "input": job.path}
    with _warnings_into(out):
        _process_into(out, state, index)
    return out


def _process_into(out: dict[str, Any], state: _State, index: int) -> None:
    job = state.jobs[index]
    try:
        target = state.targets[index]
        if not state.in_place and os.path.exists(target) and os.path.samefile(target, job.path):
            raise VeilpixError(
                "the output would overwrite the original",
                hint="choose another output folder, or pass --in-place",
            )
        with open(job.path, "rb") as fh:
            data = fh.read(state.policy.max_bytes + 1)
        result = sanitize(data, state.policy, consent=state.consent)
        path = _output_path(state, index, result.report.format_out, result.extension)
        _write_atomic(path, result.data)
        if state.in_place and os.path.normcase(path) != os.path.normcase(job.path):
            os.unlink(job.path)
        out.update(ok=True, output=path, report=result.report.to_dict())
    except VeilpixError as exc:
        out.update(ok=False, error={"type": type(exc).__name__, "message": str(exc)})
    except OSError as exc:
        out.update(
            ok=False,
            error={
                "type": type(exc).__name__,
                "message": f"{exc.strerror or exc}: {exc.filename or job.path}",
            },
        )


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _run(state: _State, workers: int, progress: bool) -> list[dict[str, Any]]:
    n = len(state.jobs)
    results: list[dict[str, Any]] = []
    bar = _Progress(n) if progress else None
    try:
        if workers <= 1 or n <= 1:
            _init(state)
            for i in range(n):
                results.append(_process(i))
                if bar:
                    bar.advance()
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
            # biggest files first, so the pool does not end waiting for one large straggler
            order = sorted(range(n), key=lambda i: -_size(state.jobs[i].path))
            chunk = 1 if n < 1000 else max(1, min(16, n // (workers * 8)))
            with ctx.Pool(min(workers, n), initializer=_init, initargs=(state,)) as pool:
                for res in pool.imap_unordered(_process, order, chunksize=chunk):
                    results.append(res)
                    if bar:
                        bar.advance()
    finally:
        if bar:
            bar.close()
    results.sort(key=lambda r: r["index"])
    return results


class _Progress:
    """A rich progress bar on stderr (only used when stderr is a terminal)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("scrubbing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.task = self.progress.add_task("scrub", total=total)
        self.progress.start()

    def advance(self) -> None:
        self.progress.advance(self.task)

    def close(self) -> None:
        self.progress.stop()


def _stems(targets: list[str]) -> list[str]:
    return [os.path.normcase(os.path.splitext(t)[0]) for t in targets]


def _targets(jobs: list[Job], output: str | None) -> list[str]:
    if output is None:
        return [job.path for job in jobs]
    return [os.path.join(output, job.rel) for job in jobs]


def add_parser(sub: Subparsers, summary: str) -> None:
    """The ``scrub`` command's parser."""
    p = sub.add_parser(
        "scrub",
        help=summary,
        description="Write a clean copy of every image: no metadata, upright, otherwise untouched. "
        "Folders are walked recursively and their layout is kept under OUTDIR. Originals are "
        "never changed unless --in-place is given. A file that fails is listed with its "
        "reason; the others are still done, and the exit code is 1.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  veilpix scrub photos -o clean\n  veilpix scrub a.jpg b.heic -o out --json\n"
        "  veilpix scrub photos --in-place -j 4",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "-o", "--output", metavar="OUTDIR", help="folder for the clean copies (created if missing)"
    )
    where.add_argument(
        "--in-place", action="store_true", help="replace each original with its clean copy"
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        metavar="N",
        help=f"parallel workers (default: number of cores, {os.cpu_count() or 1} here)",
    )
    p.add_argument("--json", action="store_true", help="print JSON results instead of tables")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no summary table"
    )
    add_policy_options(p)


def run(args: argparse.Namespace) -> int:
    policy = policy_from_args(args)
    started = time.perf_counter()
    jobs, skipped = collect(args.paths, exclude=args.output)
    if not jobs:
        print("veilpix: no image files found in the given paths", file=sys.stderr)
        return 1
    targets = _targets(jobs, args.output)
    state = _State(
        jobs=jobs,
        targets=targets,
        reserved=frozenset(os.path.normcase(t) for t in targets),
        shared_stems=frozenset(stem for stem, n in Counter(_stems(targets)).items() if n > 1),
        policy=policy,
        consent=args.consent,
        in_place=bool(args.in_place),
    )
    workers = args.jobs or os.cpu_count() or 1
    show_progress = not (args.json or args.quiet) and sys.stderr.isatty()
    results = _run(state, workers, show_progress)
    elapsed = time.perf_counter() - started
    failed = [r for r in results if not r["ok"]]
    summary = _summary(results, skipped, elapsed)
    if args.json:
        # compact: large batches print megabytes of JSON, and the C encoder only runs without
        # indentation (pipe through `jq .` to read it)
        sys.stdout.write(json.dumps({"summary": summary, "files": results}, ensure_ascii=False))
        sys.stdout.write("\n")
    elif not args.quiet:
        _print_summary(summary, failed)
    elif failed:
        for r in failed:
            print(
                f"veilpix: failed: {r['input']}: {r['error']['type']}: {r['error']['message']}",
                file=sys.stderr,
            )
    return 1 if failed else 0


def _summary(results: list[dict[str, Any]], skipped: list[str], elapsed: float) -> dict[str, Any]:
    ok = [r for r in results if r["ok"]]
    categories: dict[str, int] = {}
    for r in ok:
        for cat in {f["category"] for f in r["report"]["findings"]}:
            categories[cat] = categories.get(cat, 0) + 1
    return {
        "files": len(results),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "skipped": len(skipped),
        "lossless": sum(1 for r in ok if r["report"]["lossless"]),
        "reencoded": sum(1 for r in ok if not r["report"]["lossless"]),
        "bytes_in": sum(r["report"]["bytes_in"] for r in ok),
        "bytes_out": sum(r["report"]["bytes_out"] for r in ok),
        "files_with": categories,
        "faces_found": sum(r["report"]["faces_found"] for r in ok),
        "faces_blurred": sum(r["report"]["faces_blurred"] for r in ok),
        "downscaled": sum(1 for r in ok if r["report"]["downscaled"]),
        "repaired": sum(1 for r in ok if _noted(r, "repaired: ")),
        "hidden_data_removed": sum(1 for r in ok if _noted(r, "removed: ")),
        "with_warnings": sum(1 for r in results if r.get("warnings")),
        "seconds": round(elapsed, 3),
    }


def _noted(result: dict[str, Any], head: str) -> bool:
    return any(n.startswith(head) for n in result["report"]["notes"])


def _print_summary(summary: dict[str, Any], failed: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    secs = summary["seconds"]
    rate = summary["files"] / secs if secs else 0.0
    console.print(
        f"[bold]scrubbed {summary['ok']} of {summary['files']} files[/] in {secs:.2f} s ({rate:.0f} files/s): "
        f"{summary['lossless']} lossless, {summary['reencoded']} re-encoded; "
        f"{summary['bytes_in']:,} → {summary['bytes_out']:,} bytes"
        + (f"; {summary['skipped']} non-image files skipped" if summary["skipped"] else "")
    )
    notable = [
        f"{summary[key]} {label}"
        for key, label in (
            ("repaired", "repaired (damaged container, whole picture decoded)"),
            ("hidden_data_removed", "with data hidden in the image data, removed"),
            ("with_warnings", "with decoder warnings (see --json)"),
        )
        if summary[key]
    ]
    if notable:
        console.print("; ".join(notable))
    if summary["faces_found"] or summary["downscaled"]:
        console.print(
            f"faces found: {summary['faces_found']}, hidden: {summary['faces_blurred']}; "
            f"{summary['downscaled']} files downscaled"
        )
    if summary["files_with"]:
        table = Table(title="metadata removed", title_justify="left", box=None, header_style="bold")
        table.add_column("category")
        table.add_column("files", justify="right")
        for cat in CATEGORIES:
            if cat in summary["files_with"]:
                style = "red" if cat in SENSITIVE else ""
                table.add_row(cat, str(summary["files_with"][cat]), style=style)
        console.print(table)
    if failed:
        table = Table(
            title=f"{len(failed)} failed", title_justify="left", box=None, header_style="bold red"
        )
        table.add_column("file")
        table.add_column("error")
        table.add_column("reason", overflow="fold")
        for r in failed:
            table.add_row(r["input"], r["error"]["type"], r["error"]["message"])
        console.print(table)
