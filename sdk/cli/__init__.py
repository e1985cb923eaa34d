"""The ``veilpix`` command line: one module per command, argparse only at start-up."""

from veilpix.cli._main import main

__all__ = ["main"]
