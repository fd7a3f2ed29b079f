"""`python -m debusine.worker`: the same as the `debusine-worker` command."""

import sys

from debusine.worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
