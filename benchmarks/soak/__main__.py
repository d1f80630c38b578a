"""Entry point: ``python -m benchmarks.soak --help``."""

import sys

from benchmarks.soak.run import main

if __name__ == "__main__":
    sys.exit(main())
