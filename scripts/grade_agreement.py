"""Does a shipped grader grade a photo the same squashed to a square, or at 224 px? (issue 19, part 2)

For each data set's test photos (the patients training never saw, ``fundus.datasets.labelled.labelled_photos``), the
grade of the photo as it is against the grade of its squashed / downscaled copies (``zoo.evaluation.agreement``):
the share graded the same, the mean change of the graded value, and each version's quadratic kappa.

    python scripts/grade_agreement.py assets/dr-grading --data ../shared/data/eyepacs-1k --format eyepacs \\
        --data ../shared/data/srahim-dr600 --format srahim-dr600 --limit 120 [--json runs/agreement.json]

Natural photos (eyepacs-1k: about 3:2; srahim-dr600) are the ones whose squashed copy differs; aptos2019 and
eyepacs-5k are squares already (their 224 px copy still measures the resolution).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/grade_agreement.py", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a zoo model: assets/<name>, a shipped name or a hub repo id")
    p.add_argument("--data", action="append", type=Path, required=True, help="data set folder (repeatable)")
    p.add_argument("--format", action="append", dest="formats", required=True, help="its format (one per --data)")
    p.add_argument("--split", default="test", help="which part of each data set's patients (default: test)")
    p.add_argument("--limit", type=int, default=None, help="at most N photos per data set (first N of the split)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import zoo
    from fundus.datasets.labelled import labelled_photos
    from zoo.evaluation.agreement import grade_agreement

    args = build_parser().parse_args(argv)
    formats = args.formats * len(args.data) if len(args.formats) == 1 else args.formats
    model = zoo.load(args.model)
    results = {}
    for root, fmt in zip(args.data, formats):
        photos = labelled_photos([root], [fmt], model.config.labels, model.config.task, split=args.split)
        photos = photos[: args.limit] if args.limit else photos
        truth = [int(round(float(p.label))) for p in photos]
        result = grade_agreement(model, [p.image for p in photos], truth, batch_size=args.batch_size)
        results[root.name] = result
        print(f"{args.model} on {root.name} ({args.split}, {result['n_photos']} photos): "
              f"kappa as they are {_fmt(result['original']['kappa'])}")
        for name, row in result.items():
            if isinstance(row, dict) and "agreement" in row:
                print(f"  {name:<22} same grade {row['agreement']:.1%}  higher {row['changed_up']:.1%}  "
                      f"lower {row['changed_down']:.1%}  mean |Δ value| {row['mean_abs_value_change']:.3f}  "
                      f"kappa {_fmt(row['kappa'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "split": args.split, "results": results}, indent=1)
                             + "\n")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
