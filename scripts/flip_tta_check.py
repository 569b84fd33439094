"""Flip test-time augmentation on validation photos (issue 19: use it only where validation shows it helps).

    python scripts/flip_tta_check.py assets/dr-grade-classifier assets/dr-grading \\
        --data ../shared/data/srahim-dr600 --format srahim-dr600 --data ../shared/data/eyepacs-1k --format eyepacs \\
        --data ../shared/data/eyepacs-5k --format eyepacs --data ../shared/data/aptos2019 --format aptos

Each data set's validation patients (the part that chose the epoch and the cut-offs; the test patients stay
untouched): quadratic kappa as they are and with flip averaging (``zoo.evaluation.flip_tta``), per source.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: Sequence[str] | None = None) -> int:
    import zoo
    from fundus.datasets.labelled import labelled_photos
    from zoo.evaluation.flip_tta import flip_tta_kappa

    p = argparse.ArgumentParser(prog="python scripts/flip_tta_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="zoo models: assets/<name>, shipped names or hub repo ids")
    p.add_argument("--data", action="append", type=Path, required=True, help="data set folder (repeatable)")
    p.add_argument("--format", action="append", dest="formats", required=True, help="its format (one per --data)")
    p.add_argument("--split", default="val", help="which part of each data set's patients (default: val)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    results: dict[str, dict] = {}
    for name in args.models:
        model = zoo.load(name)
        rows = {}
        for root, fmt in zip(args.data, args.formats):
            found = labelled_photos([root], [fmt], model.config.labels, model.config.task, split=args.split)
            grades = [int(round(float(s.label))) for s in found]
            rows[root.name] = flip_tta_kappa(model, [s.image for s in found], grades)
            print(f"{name} {root.name}: {json.dumps(rows[root.name])}", flush=True)
        results[name] = rows
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
