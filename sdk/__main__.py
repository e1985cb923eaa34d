"""``python -m veilpix``: the same as the ``veilpix`` command."""

import sys

from veilpix.cli import main

sys.exit(main())
