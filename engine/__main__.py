"""``python -m engine`` is the ``tickforge`` command."""

import sys

from engine.cli import main

sys.exit(main())
