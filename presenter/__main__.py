"""`python -m presenter`: the same as the `presenter` command."""
import sys

from presenter.cli import main

if __name__ == "__main__":   # spawned worker processes re-import this module: do not run the CLI there
    sys.exit(main())
