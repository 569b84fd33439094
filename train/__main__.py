"""``python -m train RECIPE --data DIR --format FMT [...]``; ``python -m train RECIPE --help`` for its flags.

Runs unchanged under ``torchrun --nproc_per_node=N -m train RECIPE ...`` (DDP).
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

# OpenMP threads that sleep instead of spinning while they wait (read when torch loads, below): on a
# shared CPU machine spinning threads made training steps 3-8x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: Sequence[str] | None = None) -> int:
    from train.recipes import RECIPES, available_recipes, get_recipe

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "ship":  # a trained run -> a shipped model (train.ship)
        from train.ship import main as ship_main

        return ship_main(argv[1:])
    names = available_recipes()
    if not argv or argv[0] in ("-h", "--help") or argv[0].startswith("-"):
        lines = [f"  {n:<16} paper {RECIPES[n].paper or '-'}: {RECIPES[n].description}" for n in names]
        print("usage: python -m train RECIPE --data DIR --format FMT [options]\n"
              "       python -m train RECIPE --help   (the recipe's flags and the paper's defaults)\n"
              "       python -m train ship RUN --out assets/NAME   (fp16, test metrics end to end, card)\n\n"
              "recipes:\n" + "\n".join(lines))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        recipe = get_recipe(argv[0])
        return recipe.main(argv[1:])
    except (ValueError, FileNotFoundError) as err:  # bad flags, data or device: a message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
