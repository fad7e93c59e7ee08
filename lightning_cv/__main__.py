"""``python -m lightning_cv``: the same as the ``lightning-cv`` command."""

import sys

from lightning_cv.cli import main

if __name__ == "__main__":
    sys.exit(main())
