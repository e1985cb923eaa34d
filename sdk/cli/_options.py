"""What several commands share: the sub-command parser type, whole-number and port
arguments, and the image policy options with the :class:`~veilpix.Policy` they ask for."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TypeAlias

from veilpix._config import is_log_url
from veilpix._policy import Policy

__all__ = [
    "Subparsers",
    "add_policy_options",
    "policy_from_args",
    "port_number",
    "positive_int",
]

# what add_subparsers() returns (subscripted only by the type checker)
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def log_location(value: str | None) -> Path | str | None:
    """``--log``'s value: a PostgreSQL URL as given (a fleet log), else a path."""
    if not value:
        return None
    return value.strip() if is_log_url(value) else Path(value).expanduser()


def shown_log(location: Path | str) -> str:
    """A log's location as veilpix shows it: a URL without its password."""
    if isinstance(location, str) and is_log_url(location):
        from veilpix.audit.fleet import redact  # noqa: PLC0415 - fleet logs only

        return redact(location)
    return str(location)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def port_number(text: str) -> int:
    """A TCP port (0: any free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"ports run from 0 to 65535, got {value}")
    return value


def _quality(text: str) -> int:
    value = positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"quality runs from 1 to 100, got {value}")
    return value


def add_policy_options(p: argparse.ArgumentParser) -> None:
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
        type=positive_int,
        metavar="N",
        help="refuse images above N pixels per frame",
    )
    g.add_argument("--max-bytes", type=positive_int, metavar="N", help="refuse files above N bytes")
    g.add_argument(
        "--max-side",
        type=positive_int,
        metavar="N",
        help="downscale so neither side exceeds N pixels (aspect kept, never enlarged)",
    )
    g.add_argument(
        "--max-pixels",
        type=positive_int,
        metavar="N",
        help="downscale to at most N pixels in all (e.g. 4000000)",
    )
    f = p.add_argument_group("faces (the CenterFace model ships with veilpix)")
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


def policy_from_args(args: argparse.Namespace) -> Policy:
    """The Policy the image options on the command line ask for."""
    kwargs: dict[str, Any] = {
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
    return Policy(**kwargs)
