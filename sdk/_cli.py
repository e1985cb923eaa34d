"""The ``veilpix`` command line.

Kept light on purpose: only argparse is imported at start-up; the image pipeline, rich and the
worker pool are imported by the command that needs them, so ``veilpix scrub`` on a folder of
JPEGs spends its time on the JPEGs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from veilpix import __version__
from veilpix._errors import VeilpixError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_DESCRIPTION = """\
veilpix strips every piece of metadata from images (EXIF and GPS, XMP, IPTC, maker notes,
thumbnails and previews, comments, text chunks, C2PA manifests), keeps the picture upright
and otherwise untouched, and reports what it found.
"""
_EPILOG = """\
examples:
  veilpix demo                          see what veilpix finds and removes in a sample photo
  veilpix inspect IMG_0042.HEIC         list the privacy-relevant metadata of a file
  veilpix scrub ~/Pictures/trip -o out  clean a folder (recursive) into out/
  veilpix scrub photo.jpg --in-place    clean a file in place
  veilpix scrub photos -o out --json    machine-readable results for scripts
  veilpix scrub team.jpg -o out --blur-faces --max-side 1024
                                        hide faces and downscale before sending
  veilpix preview team.jpg -o p.png --blur-faces
                                        look at what would be sent
  veilpix audit verify                  check the transfer log's chain and signatures
  veilpix audit report -o register.html the transfer register for compliance

docs: https://github.com/veilpix/veilpix/tree/main/docs
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def _quality(text: str) -> int:
    value = _positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"quality runs from 1 to 100, got {value}")
    return value


def _add_policy_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("image policy")
    g.add_argument(
        "--format",
        choices=["auto", "jpeg", "png", "webp"],
        default="auto",
        help="output format (default: auto = keep each format; HEIC/AVIF become JPEG, or PNG with alpha)",
    )
    g.add_argument(
        "--quality",
        type=_quality,
        metavar="1-100",
        help="quality of re-encoded lossy output (default: the input's own JPEG tables, else 90)",
    )
    g.add_argument(
        "--no-standard-icc",
        action="store_true",
        help="drop every colour profile, converting pixels to sRGB (default keeps sRGB/Display P3/Adobe RGB)",
    )
    g.add_argument(
        "--verify-decode",
        action="store_true",
        help="also fully decode losslessly stripped files (slower; catches damage already in the input)",
    )
    g.add_argument(
        "--max-input-pixels",
        type=_positive_int,
        metavar="N",
        help="refuse images above N pixels per frame",
    )
    g.add_argument(
        "--max-bytes", type=_positive_int, metavar="N", help="refuse files above N bytes"
    )
    g.add_argument(
        "--max-side",
        type=_positive_int,
        metavar="N",
        help="downscale so neither side exceeds N pixels (aspect kept, never enlarged)",
    )
    g.add_argument(
        "--max-pixels",
        type=_positive_int,
        metavar="N",
        help="downscale to at most N pixels in all (e.g. 4000000)",
    )
    f = p.add_argument_group("faces (needs the 'faces' extra: pip install 'veilpix[faces]')")
    f.add_argument("--blur-faces", action="store_true", help="hide every face found")
    f.add_argument(
        "--blur-mode",
        choices=["blur", "pixelate", "fill"],
        default="blur",
        help="how faces are hidden (default: blur, a strong Gaussian)",
    )
    f.add_argument(
        "--face-padding",
        type=float,
        default=1.6,
        metavar="X",
        help="grow each face box X times before hiding it (default 1.6)",
    )
    f.add_argument(
        "--upright-only",
        action="store_true",
        help="skip the passes that look for faces in sideways and upside-down pictures",
    )
    f.add_argument(
        "--require-consent",
        action="store_true",
        help="refuse images with unblurred faces unless --consent is given",
    )
    f.add_argument(
        "--consent",
        metavar="REF",
        help="reference of the consent held for the people shown (recorded in the report)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veilpix",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"veilpix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "inspect",
        help="show the privacy-relevant metadata in image files",
        description="Show what an image carries: GPS position, device and serial numbers, owner, "
        "timestamps, software, thumbnails, XMP, IPTC, comments, C2PA, colour profile. "
        "Files are only read.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  veilpix inspect IMG_0042.HEIC\n  veilpix inspect photos/ --json | jq '.[].gps'",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--containers", action="store_true", help="also list every container element")

    p = sub.add_parser(
        "scrub",
        help="write metadata-free copies of image files",
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
        "-j", "--jobs", type=_positive_int, metavar="N",
        help=f"parallel workers (default: number of cores, {os.cpu_count() or 1} here)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON results instead of tables")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no summary table"
    )
    _add_policy_options(p)

    p = sub.add_parser(
        "demo",
        help="run veilpix on a built-in sample photo (no files needed)",
        description="Build a sample photo in memory with GPS, camera serial number, owner, "
        "timestamps, a thumbnail of a different picture, XMP, IPTC and a comment; sanitize "
        "it and show what was found and removed.",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="also write before.jpg, after.jpg and preview.png here",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser(
        "preview",
        help="draw a before/after picture of what veilpix does to one image",
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
    _add_policy_options(p)

    from veilpix._cli_audit import add_audit_parser

    add_audit_parser(sub)
    return parser


def _policy(args: argparse.Namespace) -> object:
    from veilpix._policy import Policy

    kwargs: dict[str, object] = {
        "output_format": args.format,
        "quality": args.quality,
        "keep_standard_icc": not args.no_standard_icc,
        "verify_decode": args.verify_decode,
        "faces": args.blur_mode if args.blur_faces else "off",
        "face_padding": args.face_padding,
        "face_rotations": not args.upright_only,
        "require_consent_for_faces": args.require_consent,
        "max_side": args.max_side,
        "max_pixels": args.max_pixels,
    }
    if args.max_input_pixels:
        kwargs["max_input_pixels"] = args.max_input_pixels
    if args.max_bytes:
        kwargs["max_bytes"] = args.max_bytes
    return Policy(**kwargs)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "inspect":
            from veilpix._cli_inspect import run_inspect

            return run_inspect(args)
        if args.command == "scrub":
            from veilpix._cli_scrub import run_scrub

            return run_scrub(args, _policy(args))
        if args.command == "preview":
            from veilpix._preview import run_preview

            return run_preview(args, _policy(args))
        if args.command == "audit":
            from veilpix._cli_audit import run_audit

            return run_audit(args)
        if args.command == "demo":
            from veilpix._demo import run_demo

            return run_demo(args)
    except KeyboardInterrupt:
        print("veilpix: interrupted", file=sys.stderr)
        return 130
    except VeilpixError as exc:
        print(f"veilpix: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    parser.error(f"unknown command {args.command!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
