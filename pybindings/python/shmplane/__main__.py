"""``python -m shmplane``: the ``shmplane`` command (see ``shmplane.cli``)."""

import sys

from .cli import main

sys.exit(main())
