"""``python -m bertgeom``: the same as the ``bertgeom`` command."""

import sys

from bertgeom.cli import main

if __name__ == "__main__":
    sys.exit(main())
