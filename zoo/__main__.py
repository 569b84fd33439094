"""``python -m zoo``: see zoo/cli.py."""
import sys

from zoo.cli import main

sys.exit(main())
