"""The ``flowmoe`` console script: the command layer is :mod:`flowmoe.commands`."""

from __future__ import annotations

import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
