"""``python -m rlstack``: the ``rlstack`` command."""

import sys

from .cli import main

sys.exit(main())
