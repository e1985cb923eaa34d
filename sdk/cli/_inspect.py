"""``veilpix inspect``: what an image carries, as tables or JSON, and a gate for CI jobs.

``--fail-on`` names what must not be there: ``any`` (any metadata finding), ``sensitive`` (a
finding that identifies a person, a place or a device on its own: the categories in
:data:`~veilpix.metadata._facts.SENSITIVE`), or finding categories. Exit codes: 0 every file
was read and (with ``--fail-on``) none holds what it names; 4 (``EXIT_FOUND``) every file was
read and at least one holds it; 1 a file or folder could not be read (this wins over 4: the
check is incomplete); 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from veilpix._errors import VeilpixError
from veilpix.cli._exit import EXIT_FAILED, EXIT_FOUND, EXIT_OK
from veilpix.cli._files import Found, collect, os_error
from veilpix.cli._options import Subparsers
from veilpix.cli._term import Column, Table, Term, json_text, plural, styled
from veilpix.image._pipeline import Inspection, inspect
from veilpix.metadata._facts import CATEGORIES, SENSITIVE

__all__ = [
    "FAIL_ON",
    "add_parser",
    "gate",
    "inspection_dict",
    "print_tables",
    "run",
]

# The words --fail-on takes: two groups, then the finding categories in report order.
FAIL_ON: tuple[str, ...] = ("any", "sensitive", *CATEGORIES)


def inspection_dict(path: str, ins: Inspection, *, containers: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": path,
        "format": ins.format,
        "width": ins.width,
        "height": ins.height,
        "frames": ins.frames,
        "bytes": ins.bytes,
        "sha256": ins.sha256,
        "orientation": ins.orientation,
        "sensitive": ins.sensitive,
        "gps": asdict(ins.gps) if ins.gps else None,
        "icc": ins.icc,
        "findings": [dict(asdict(f), sensitive=f.category in SENSITIVE) for f in ins.findings],
        "notes": list(ins.notes),
    }
    if containers:
        out["containers"] = [
            {
                "name": p.name,
                "kind": p.kind,
                "offset": p.offset,
                "length": p.length,
                "detail": p.detail,
            }
            for p in ins.containers
        ]
    return out


def osm_link(lat: float, lon: float) -> str:
    return (
        f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=15/{lat:.5f}/{lon:.5f}"
    )


def _fail_on(text: str) -> list[str]:
    words = [w.strip().lower() for w in text.split(",")]
    for word in words:
        if word not in FAIL_ON:
            raise argparse.ArgumentTypeError(
                f"unknown value {word!r}: choose from {', '.join(FAIL_ON)}"
            )
    return words


def gate(findings: list[dict[str, Any]], fail_on: list[str]) -> list[str]:
    """The categories among ``findings`` that ``fail_on`` names, in report order."""
    every = "any" in fail_on
    sensitive = "sensitive" in fail_on
    hit = {
        f["category"]
        for f in findings
        if every or f["category"] in fail_on or (sensitive and f["sensitive"])
    }
    return [c for c in CATEGORIES if c in hit]


_SENSITIVE_LIST = ", ".join(c for c in CATEGORIES if c in SENSITIVE)
_EPILOG = f"""\
examples:
  veilpix inspect IMG_0042.HEIC
  veilpix inspect photos/ --json | jq '.[].gps'
  veilpix inspect uploads/ --fail-on sensitive      fail a CI job on GPS, serials, owners
  veilpix inspect dist/img --fail-on any -q          no metadata at all may ship

--fail-on WHAT (comma-separated, or repeated):
  any        any metadata finding
  sensitive  a finding that identifies a person, place or device ({_SENSITIVE_LIST})
  CATEGORY   a finding of that category: {", ".join(CATEGORIES)}

exit codes: 0 read every file, and nothing --fail-on names was found;
  4 read every file, and at least one holds what --fail-on names;
  1 a file or folder could not be read (whatever the others hold); 2 usage error.
"""


def add_parser(sub: Subparsers, summary: str) -> None:
    """The ``inspect`` command's parser."""
    p = sub.add_parser(
        "inspect",
        help=summary,
        description="Show what an image carries: GPS position, device and serial numbers, owner, "
        "timestamps, software, thumbnails, XMP, IPTC, comments, C2PA, colour profile. "
        "Files are only read.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--containers", action="store_true", help="also list every container element")
    p.add_argument(
        "--include-hidden",
        action="store_true",
        help="also inspect hidden files and folders (names starting with a dot) in folders",
    )
    p.add_argument(
        "--fail-on",
        type=_fail_on,
        action="extend",
        metavar="WHAT",
        help="exit with code 4 when a file holds this metadata: any, sensitive, or a category "
        "(see below)",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no tables: only what --fail-on found, and errors",
    )


def run(args: argparse.Namespace) -> int:
    found = collect(args.paths, include_hidden=args.include_hidden)
    fail_on: list[str] | None = args.fail_on
    results: list[dict[str, Any]] = []
    failed = 0
    for job in found.jobs:
        try:
            with open(job.path, "rb") as fh:
                data = fh.read()
            ins = inspect(data)
        except VeilpixError as exc:
            failed += 1
            results.append(
                {"path": job.path, "error": {"type": type(exc).__name__, "message": str(exc)}}
            )
            continue
        except OSError as exc:
            failed += 1
            results.append({"path": job.path, "error": os_error(exc, job.path)})
            continue
        res = inspection_dict(job.path, ins, containers=args.containers)
        if fail_on is not None:
            res["fail_on"] = gate(res["findings"], fail_on)
        results.append(res)
    for bad in found.unreadable:
        failed += 1
        results.append({"path": bad.path, "error": bad.error()})
    hidden = found.hidden
    tripped = [r for r in results if r.get("fail_on")]
    if args.json:
        skipped = [
            {"path": s.path, "skipped": s.reason, "kind": s.to_dict()["kind"]} for s in hidden
        ]
        sys.stdout.write(json_text(results + skipped, indent=2) + "\n")
    else:
        term = Term()
        if args.quiet:
            for res in results:
                if "error" in res:
                    _print_error(term, res)
        else:
            print_tables(results, containers=args.containers, term=term)
            _print_skipped(term, found)
        if fail_on is not None:
            _print_gate(term, fail_on, tripped, read=len(results) - failed, failed=failed)
    if not found.jobs and not found.unreadable:
        hint = ""
        if hidden:
            hint = f" ({plural(len(hidden), 'hidden entry', 'hidden entries')} skipped: --include-hidden takes them)"
        print(f"veilpix: no image files found in the given paths{hint}", file=sys.stderr)
    if failed:
        return EXIT_FAILED
    return EXIT_FOUND if tripped else EXIT_OK


def _print_gate(
    term: Term, fail_on: list[str], tripped: list[dict[str, Any]], *, read: int, failed: int
) -> None:
    head = styled(f"--fail-on {','.join(fail_on)}: ", "bold")
    unread = (
        styled(f"; {plural(failed, 'file or folder', 'files or folders')} not read", "red")
        if failed
        else ""
    )
    if not tripped:
        term.print(head, f"none found in {plural(read, 'file')}", unread)
        return
    term.print(head, styled(f"found in {len(tripped)} of {plural(read, 'file')}", "red"), unread)
    for res in tripped:
        term.print("  ", res["path"], ": ", ", ".join(res["fail_on"]))


def _print_skipped(term: Term, found: Found) -> None:
    hidden = found.hidden
    if hidden:
        term.print(
            styled("hidden, skipped", "yellow"),
            f" ({plural(len(hidden), 'entry', 'entries')}; --include-hidden inspects them):",
        )
        for s in hidden:
            term.print("  ", s.path, " (folder)" if s.folder else "")
    if found.not_images:
        term.print(styled(f"{plural(len(found.not_images), 'file')} skipped: not images", "dim"))


def _print_error(term: Term, res: dict[str, Any]) -> None:
    err = res["error"]
    term.print(
        styled(res["path"], "bold"), "  ", styled(f"✗ {err['type']}: {err['message']}", "red")
    )


def print_tables(
    results: list[dict[str, Any]], *, containers: bool, term: Term | None = None
) -> None:
    term = term or Term()
    for res in results:
        if "error" in res:
            _print_error(term, res)
            term.print()
            continue
        n_sensitive = sum(1 for f in res["findings"] if f["sensitive"])
        size = f"{res['width']}×{res['height']}" + (
            f", {res['frames']} frames" if res["frames"] > 1 else ""
        )
        term.print(
            styled(res["path"], "bold"),
            f"  {res['format']} {size}  {res['bytes']:,} bytes",
            styled(f"  ⚠ {n_sensitive} sensitive", "bold", "red") if n_sensitive else "",
        )
        if not res["findings"]:
            term.print("  ", styled("no metadata found", "green"))
        else:
            table = Table(
                [
                    Column(""),
                    Column("category"),
                    Column("item", fold=True),
                    Column("value", fold=True),
                    Column("where", styles=("dim",)),
                ]
            )
            for f in res["findings"]:
                table.add_row(
                    "⚠" if f["sensitive"] else "",
                    f["category"],
                    f["label"],
                    f["value"],
                    f["source"],
                    styles=("red",) if f["sensitive"] else (),
                )
            term.table(table)
        if res["gps"]:
            g = res["gps"]
            # the link on a line of its own: never broken, whatever the width
            term.print("  ", styled(f"GPS {g['latitude']:.6f}, {g['longitude']:.6f}", "red"))
            term.print("  ", osm_link(g["latitude"], g["longitude"]))
        if res["icc"] and not any(f["category"] == "icc" for f in res["findings"]):
            term.print("  colour profile: ", res["icc"], " (a standard profile; scrub keeps it)")
        if res["orientation"] != 1:
            term.print(
                f"  orientation {res['orientation']}: stored rotated or mirrored; "
                "scrub turns the pixels upright"
            )
        for note in res["notes"]:
            term.print("  ", styled("note:", "yellow"), " ", note)
        if containers:
            ct = Table(
                [
                    Column("element"),
                    Column("kind"),
                    Column("offset", align="right"),
                    Column("bytes", align="right"),
                    Column("detail", fold=True),
                ],
                indent=2,
            )
            for p in res["containers"]:
                ct.add_row(p["name"], p["kind"], str(p["offset"]), str(p["length"]), p["detail"])
            term.table(ct)
        term.print()
