"""``python -m flowmoe ...``: the same as the ``flowmoe`` console script."""

import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
