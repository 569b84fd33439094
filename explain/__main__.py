"""``python -m explain`` entry point (see ``explain.cli``)."""
import sys

from explain.cli import main

if __name__ == "__main__":
    sys.exit(main())
