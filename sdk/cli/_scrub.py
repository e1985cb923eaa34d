"""``veilpix scrub``: clean copies of many files, in parallel, with progress and a summary.

Workers read, sanitize and write one file each and send back a small result (the report as a
dictionary), never image bytes. Output files are written atomically (temporary file in the
target folder, then rename), so an interrupted run never leaves half-written images.

Permissions: an output is never readable by more people than its source. ``--in-place`` keeps
the source's permission bits (and its owner and group where the system lets us; where it
cannot keep the group, the group gets no more than everyone else). An ``-o`` copy gets the
source's bits less the umask, as ``cp`` would.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veilpix._errors import VeilpixError
from veilpix._policy import Policy
from veilpix.cli._exit import EXIT_FAILED, EXIT_OK
from veilpix.cli._files import Found, Job, collect, os_error
from veilpix.cli._options import Subparsers, add_policy_options, policy_from_args, positive_int
from veilpix.cli._term import Column, Progress, Table, Term, json_text, plural, styled
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
    umask: int = 0o022  # read once by the parent: -o copies get the source's bits less this


_STATE: _State | None = None


def _init(state: _State) -> None:
    global _STATE  # noqa: PLW0603 - per-worker state set once by the pool initializer
    _STATE = state


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # elsewhere: set and put back (still one thread at this point)
    os.umask(mask)
    return mask


def _group_capped(mode: int) -> int:
    """``mode`` with the group given no more than everyone else: for a file that could not
    keep its source's group (a new group may hold other people)."""
    return (mode & ~0o070) | (mode & ((mode & 0o007) << 3))


def _write_atomic(
    path: str, data: bytes, *, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> None:
    """Write ``data`` at ``path`` through a temporary file beside it, with exactly ``mode``
    (whatever the umask). With ``owner`` (uid, gid; ``--in-place``) the file also gets that
    owner and group where the system allows, and is on disk before it replaces anything:
    the original it replaces is gone for good."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.veilpix-{os.getpid()}.tmp")
    # created private; opened to more people only once it is owned as it should be
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            if owner is not None:
                mode = _keep_owner(fh.fileno(), owner, mode)
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            if owner is not None:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _folders_like(folder: str, job: Job, umask: int) -> None:
    """Create the output folders a copy needs below the output folder, each no more open
    than the folder it mirrors (a 0700 folder of photos gives a 0700 copy, not 0755)."""
    parts = Path(job.rel).parts[:-1]
    source = Path(job.path).parent
    missing: list[tuple[str, Path]] = []
    out = Path(folder)
    for _ in parts:  # deepest first: the output folder and its source, level by level
        if out.is_dir():
            break
        missing.append((str(out), source))
        out, source = out.parent, source.parent
    out.mkdir(parents=True, exist_ok=True)  # the output folder itself: as the user made it
    for path, src in reversed(missing):
        try:
            mode = stat.S_IMODE(os.stat(src).st_mode) & 0o777 & ~umask
        except OSError:
            mode = 0o700
        try:
            os.mkdir(path, 0o700)  # private until it has its mode
        except FileExistsError:
            continue  # another worker made it
        os.chmod(path, mode)


def _keep_owner(fd: int, owner: tuple[int, int], mode: int) -> int:
    """Give the new file its source's owner and group where allowed; the mode to set."""
    uid, gid = owner
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) == (uid, gid):
        return mode
    for want in ((uid, gid), (-1, gid)):
        try:
            os.fchown(fd, *want)
            return mode
        except OSError:
            continue
    return _group_capped(mode)


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
            source = os.fstat(fh.fileno())
            data = fh.read(state.policy.max_bytes + 1)
        result = sanitize(data, state.policy, consent=state.consent)
        path = _output_path(state, index, result.report.format_out, result.extension)
        bits = stat.S_IMODE(source.st_mode) & 0o777  # never setuid, setgid or sticky
        if state.in_place:
            _write_atomic(path, result.data, mode=bits, owner=(source.st_uid, source.st_gid))
        else:
            _folders_like(os.path.dirname(path), job, state.umask)
            _write_atomic(path, result.data, mode=bits & ~state.umask)
        if state.in_place and os.path.normcase(path) != os.path.normcase(job.path):
            os.unlink(job.path)
        out.update(ok=True, output=path, report=result.report.to_dict())
    except VeilpixError as exc:
        out.update(ok=False, error={"type": type(exc).__name__, "message": str(exc)})
    except OSError as exc:
        out.update(ok=False, error=os_error(exc, job.path))


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _run(state: _State, workers: int, progress: bool) -> list[dict[str, Any]]:
    n = len(state.jobs)
    results: list[dict[str, Any]] = []
    bar = Progress(n, "scrubbing", enabled=progress)
    try:
        if workers <= 1 or n <= 1:
            _init(state)
            for i in range(n):
                results.append(_process(i))
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
                    bar.advance()
    finally:
        bar.close()
    results.sort(key=lambda r: r["index"])
    return results


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
    p.add_argument(
        "--include-hidden",
        action="store_true",
        help="also scrub hidden files and folders (names starting with a dot) in folders",
    )
    add_policy_options(p)


def run(args: argparse.Namespace) -> int:
    policy = policy_from_args(args)
    started = time.perf_counter()
    found = collect(
        args.paths,
        exclude=args.output,
        include_hidden=args.include_hidden,
        refuse_links=bool(args.in_place),
    )
    if not found.jobs and not found.unreadable:
        hint = ""
        if found.hidden:
            hint = f" ({plural(len(found.hidden), 'hidden entry', 'hidden entries')} skipped: --include-hidden takes them)"
        print(f"veilpix: no image files found in the given paths{hint}", file=sys.stderr)
        return EXIT_FAILED
    jobs = found.jobs
    targets = _targets(jobs, args.output)
    state = _State(
        jobs=jobs,
        targets=targets,
        reserved=frozenset(os.path.normcase(t) for t in targets),
        shared_stems=frozenset(stem for stem, n in Counter(_stems(targets)).items() if n > 1),
        policy=policy,
        consent=args.consent,
        in_place=bool(args.in_place),
        umask=_umask(),
    )
    workers = args.jobs or os.cpu_count() or 1
    results = _run(state, workers, progress=not (args.json or args.quiet))
    for k, bad in enumerate(found.unreadable):
        results.append(
            {"index": len(jobs) + k, "input": bad.path, "ok": False, "error": bad.error()}
        )
    elapsed = time.perf_counter() - started
    failed = [r for r in results if not r["ok"]]
    summary = _summary(results, found, elapsed)
    if args.json:
        # compact: large batches print megabytes of JSON, and the C encoder only runs without
        # indentation (pipe through `jq .` to read it)
        doc = {
            "summary": summary,
            "files": results,
            "skipped": [s.to_dict() for s in found.skipped],
        }
        sys.stdout.write(json_text(doc) + "\n")
    elif not args.quiet:
        _print_summary(Term(), summary, failed)
    elif failed:
        err = Term(sys.stderr)
        for r in failed:
            err.print(
                "veilpix: failed: ", r["input"], f": {r['error']['type']}: {r['error']['message']}"
            )
    return EXIT_FAILED if failed else EXIT_OK


def _summary(results: list[dict[str, Any]], found: Found, elapsed: float) -> dict[str, Any]:
    ok = [r for r in results if r["ok"]]
    categories: dict[str, int] = {}
    for r in ok:
        for cat in {f["category"] for f in r["report"]["findings"]}:
            categories[cat] = categories.get(cat, 0) + 1
    return {
        "files": len(results),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "unreadable": len(found.unreadable),
        "skipped": len(found.not_images),
        "hidden": sum(1 for s in found.hidden if not s.folder),
        "hidden_folders": sum(1 for s in found.hidden if s.folder),
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


def _print_summary(term: Term, summary: dict[str, Any], failed: list[dict[str, Any]]) -> None:
    secs = summary["seconds"]
    files = summary["files"] - summary["unreadable"]
    rate = files / secs if secs else 0.0
    skipped = []
    if summary["skipped"]:
        skipped.append(f"{plural(summary['skipped'], 'non-image file')} skipped")
    hidden = [
        plural(summary[key], word)
        for key, word in (("hidden", "hidden file"), ("hidden_folders", "hidden folder"))
        if summary[key]
    ]
    if hidden:
        skipped.append(f"{' and '.join(hidden)} skipped (--include-hidden takes them)")
    term.print(
        styled(f"scrubbed {summary['ok']} of {plural(files, 'file')}", "bold"),
        f" in {secs:.2f} s ({rate:.0f} files/s): "
        f"{summary['lossless']} lossless, {summary['reencoded']} re-encoded; "
        f"{summary['bytes_in']:,} → {summary['bytes_out']:,} bytes",
        "".join(f"; {text}" for text in skipped),
    )
    notable = [
        f"{plural(summary[key], 'file')} {label}"
        for key, label in (
            ("repaired", "repaired (damaged container, whole picture decoded)"),
            ("hidden_data_removed", "with data hidden in the image data, removed"),
            ("with_warnings", "with decoder warnings (see --json)"),
        )
        if summary[key]
    ]
    if notable:
        term.print("; ".join(notable))
    if summary["faces_found"] or summary["downscaled"]:
        term.print(
            f"faces found: {summary['faces_found']}, hidden: {summary['faces_blurred']}; "
            f"{plural(summary['downscaled'], 'file')} downscaled"
        )
    if summary["files_with"]:
        table = Table(
            [Column("category"), Column("files", align="right")],
            title=styled("metadata removed", "bold"),
            indent=1,
        )
        for cat in CATEGORIES:
            if cat in summary["files_with"]:
                style: tuple[Any, ...] = ("red",) if cat in SENSITIVE else ()
                table.add_row(cat, str(summary["files_with"][cat]), styles=style)
        term.table(table)
    if failed:
        table = Table(
            [Column("file"), Column("error"), Column("reason", fold=True)],
            title=styled(f"{len(failed)} failed", "bold", "red"),
            indent=1,
        )
        for r in failed:
            table.add_row(r["input"], r["error"]["type"], r["error"]["message"])
        term.table(table)
