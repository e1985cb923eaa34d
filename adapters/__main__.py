"""``python -m veilpix.adapters``: print the vendor matrix (``docs/vendors.md``)."""

from __future__ import annotations

import sys

from veilpix.adapters._matrix import render_markdown


def main() -> None:
    sys.stdout.write(render_markdown())


if __name__ == "__main__":
    main()
