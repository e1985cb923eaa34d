"""``veilpix inspect``: what an image carries, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from veilpix._errors import VeilpixError
from veilpix.cli._files import collect
from veilpix.cli._options import Subparsers
from veilpix.image._pipeline import Inspection, inspect
from veilpix.metadata._facts import SENSITIVE

__all__ = ["add_parser", "inspection_dict", "print_tables", "run"]


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
        out["containers"] = [asdict(p) for p in ins.containers]
    return out


def osm_link(lat: float, lon: float) -> str:
    return (
        f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=15/{lat:.5f}/{lon:.5f}"
    )


def add_parser(sub: Subparsers, summary: str) -> None:
    """The ``inspect`` command's parser."""
    p = sub.add_parser(
        "inspect",
        help=summary,
        description="Show what an image carries: GPS position, device and serial numbers, owner, "
        "timestamps, software, thumbnails, XMP, IPTC, comments, C2PA, colour profile. "
        "Files are only read.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  veilpix inspect IMG_0042.HEIC\n  veilpix inspect photos/ --json | jq '.[].gps'",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--containers", action="store_true", help="also list every container element")


def run(args: argparse.Namespace) -> int:
    jobs, _skipped = collect(args.paths)
    results: list[dict[str, Any]] = []
    failed = 0
    for job in jobs:
        try:
            with open(job.path, "rb") as fh:
                data = fh.read()
            ins = inspect(data)
        except (VeilpixError, OSError) as exc:
            failed += 1
            results.append(
                {"path": job.path, "error": {"type": type(exc).__name__, "message": str(exc)}}
            )
            continue
        results.append(inspection_dict(job.path, ins, containers=args.containers))
    if args.json:
        json.dump(results, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print_tables(results, containers=args.containers)
    return 1 if failed else 0


def print_tables(results: list[dict[str, Any]], *, containers: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    for res in results:
        if "error" in res:
            console.print(
                f"[bold]{res['path']}[/]  [red]✗ {res['error']['type']}: {res['error']['message']}[/]"
            )
            console.print()
            continue
        n_sensitive = sum(1 for f in res["findings"] if f["sensitive"])
        flag = f"  [bold red]⚠ {n_sensitive} sensitive[/]" if n_sensitive else ""
        size = f"{res['width']}×{res['height']}" + (
            f", {res['frames']} frames" if res["frames"] > 1 else ""
        )
        console.print(
            f"[bold]{res['path']}[/]  {res['format']} {size}  {res['bytes']:,} bytes{flag}"
        )
        if not res["findings"]:
            console.print("  [green]no metadata found[/]")
        else:
            table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
            table.add_column("", width=1)
            table.add_column("category")
            table.add_column("item")
            table.add_column("value", overflow="fold")
            table.add_column("where", style="dim")
            for f in res["findings"]:
                style = "red" if f["sensitive"] else ""
                table.add_row(
                    "⚠" if f["sensitive"] else "",
                    f["category"],
                    f["label"],
                    f["value"],
                    f["source"],
                    style=style,
                )
            console.print(table)
        if res["gps"]:
            g = res["gps"]
            console.print(
                f"  [red]GPS {g['latitude']:.6f}, {g['longitude']:.6f}[/]  {osm_link(g['latitude'], g['longitude'])}"
            )
        if res["icc"] and not any(f["category"] == "icc" for f in res["findings"]):
            console.print(f"  colour profile: {res['icc']} (a standard profile; scrub keeps it)")
        if res["orientation"] != 1:
            console.print(
                f"  orientation {res['orientation']}: stored rotated or mirrored; scrub turns the pixels upright"
            )
        for note in res["notes"]:
            console.print(f"  [yellow]note:[/] {note}")
        if containers:
            ct = Table(show_edge=False, box=None, header_style="bold")
            for col in ("element", "kind", "offset", "bytes", "detail"):
                ct.add_column(col)
            for p in res["containers"]:
                ct.add_row(p["name"], p["kind"], str(p["offset"]), str(p["length"]), p["detail"])
            console.print(ct)
        console.print()
