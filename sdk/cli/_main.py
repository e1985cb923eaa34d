"""The ``veilpix`` command line: one module per command, loaded when that command runs.

Only argparse is imported at start-up. ``COMMANDS`` names each command's module and its two
functions (``add(sub, summary)`` builds its parser, ``run(args)`` runs it), as pip lists its
commands: ``veilpix --help`` lists them all without importing any, and ``veilpix scrub``
imports the scrub command (and through it the image pipeline) only.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from veilpix import __version__
from veilpix._errors import VeilpixError
from veilpix.cli._exit import EXIT_OK, EXIT_USAGE

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

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
  veilpix proxy --config veilpix.toml   the local gateway apps point their base URL at
  veilpix config check --config veilpix.toml
                                        validate the settings file
  veilpix ca init                       the local CA of the intercept (HTTPS_PROXY) mode
  eval "$(veilpix env)"                 send this shell's apps through the intercept proxy

docs: https://github.com/veilpix/veilpix/tree/main/docs
"""


class Command(NamedTuple):
    """A command: its one-line summary, its module, and the names of its two functions.
    (A NamedTuple, not a dataclass: nothing here may cost start-up time.)"""

    summary: str
    module: str
    add: str = "add_parser"
    run: str = "run"

    def load(self, name: str) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module), name)  # type: ignore[no-any-return]


COMMANDS = {
    "inspect": Command("show the privacy-relevant metadata in image files", "veilpix.cli._inspect"),
    "scrub": Command("write metadata-free copies of image files", "veilpix.cli._scrub"),
    "demo": Command(
        "run veilpix on a built-in sample photo (no files needed)", "veilpix.cli._demo"
    ),
    "preview": Command(
        "draw a before/after picture of what veilpix does to one image", "veilpix.cli._preview"
    ),
    "audit": Command(
        "review, verify, export, erase and prune the transfer log",
        "veilpix.cli._audit",
        add="add_audit_parser",
        run="run_audit",
    ),
    "proxy": Command(
        "run the local gateway that sanitizes and logs apps' vendor calls", "veilpix.cli._proxy"
    ),
    "config": Command("check a veilpix.toml", "veilpix.cli._config"),
    "ca": Command(
        "create and manage the local CA of the intercept (HTTPS_PROXY) mode",
        "veilpix.cli._ca",
        add="add_ca_parser",
        run="run_ca",
    ),
    "env": Command(
        "print the shell lines that send apps through the intercept proxy",
        "veilpix.cli._ca",
        add="add_env_parser",
        run="run_ca",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the full arguments of ``command`` (None: of every command); the
    others appear with their summary only."""
    parser = argparse.ArgumentParser(
        prog="veilpix",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"veilpix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        if command is None or name == command:
            cmd.load(cmd.add)(sub, cmd.summary)
        else:
            sub.add_parser(name, help=cmd.summary, add_help=False)
    return parser


def _command(argv: Sequence[str]) -> str:
    """The command word (the first argument that is not an option), "" when there is none."""
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    word = _command(args_in)
    parser = build_parser(word if word in COMMANDS else "")
    args = parser.parse_args(args_in)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    cmd = COMMANDS[args.command]
    try:
        return int(cmd.load(cmd.run)(args))
    except KeyboardInterrupt:
        print("veilpix: interrupted", file=sys.stderr)
        return 130
    except VeilpixError as exc:
        # messages quote paths and log values: their control characters are made visible
        # (the terminal module is loaded only here, like the commands: start-up stays light)
        term = importlib.import_module("veilpix.cli._term").Term(sys.stderr)
        term.print(f"veilpix: error: {exc}")
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
