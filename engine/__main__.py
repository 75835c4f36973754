"""``python -m engine`` is the ``tickforge`` command."""

import sys

from engine.cli import main

if __name__ == "__main__":  # not when a spawned child (the embedded venue's process) imports it
    sys.exit(main())
