"""``python -m kmsclient``: run the command line and exit with its status."""

import sys

from kmsclient.cli import main

if __name__ == "__main__":
    sys.exit(main())
