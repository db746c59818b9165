"""``python -m framework``: the framework's command line (see ``framework.cli``), here so that ``-m`` finds it."""

import sys

from framework.cli import main

if __name__ == "__main__":
    sys.exit(main())
