"""``python -m veilpix``: the same as the ``veilpix`` command."""

import sys

from veilpix._cli import main

sys.exit(main())
