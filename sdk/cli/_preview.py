"""``veilpix preview``: a before/after picture of what veilpix does to one image."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from veilpix._errors import ConfigError
from veilpix.cli._options import Subparsers, add_policy_options, policy_from_args
from veilpix.cli._term import Term, json_text
from veilpix.image._pipeline import sanitize
from veilpix.image._preview import legend, render_preview

__all__ = ["add_parser", "run"]


def add_parser(sub: Subparsers, summary: str) -> None:
    """The ``preview`` command's parser."""
    p = sub.add_parser(
        "preview",
        help=summary,
        description="Sanitize one image in memory with the given policy and write a PNG: the "
        "original (upright) beside what veilpix would send, faces boxed, and a legend of the "
        "metadata found and removed. The image itself is not written anywhere.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  veilpix preview IMG_0042.jpg -o preview.png\n"
        "  veilpix preview team.jpg -o team-preview.png --blur-faces --max-side 1024",
    )
    p.add_argument("path", metavar="FILE", help="the image to preview")
    p.add_argument(
        "-o", "--output", required=True, metavar="PNG", help="where to write the preview"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_policy_options(p)


def run(args: argparse.Namespace) -> int:
    policy = policy_from_args(args)
    if not args.output.lower().endswith(".png"):
        raise ConfigError(f"the preview is a PNG: give -o a .png name, not {args.output!r}")
    try:
        with open(args.path, "rb") as fh:
            before = fh.read(policy.max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {args.path}: {exc.strerror or exc}") from exc
    clean = sanitize(before, policy, consent=args.consent)
    png = render_preview(before, clean)
    with open(args.output, "wb") as fh:
        fh.write(png)
    rep = clean.report
    result: dict[str, Any] = {
        "input": args.path,
        "preview": args.output,
        "faces_found": rep.faces_found,
        "faces_blurred": rep.faces_blurred,
        "findings": len(rep.findings),
        "removed": len(rep.removed),
        "size_out": [rep.width_out, rep.height_out],
    }
    if args.json:
        sys.stdout.write(json_text(result | {"report": rep.to_dict()}, indent=2) + "\n")
    else:
        term = Term()
        for text, _ in legend(clean):
            term.print(text)
        term.print("wrote ", args.output)
    return 0
