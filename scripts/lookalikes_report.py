"""How the two guards treat real lookalikes: the fundus check and each shipped model's unlike-training indicator.

    python scripts/lookalikes_report.py [--data ../shared/data] [--models dr-grading eye-diseases …] [--limit N]

For every photo of ``not-fundus/`` (endoscopy, dermoscopy, eye surface, microscopy, natural) prints, per kind:
how many the whole fundus check (``zoo.fundus_check``) accepts, and how many each shipped model's unlike-training
indicator (``zoo.ood``) flags when the photo is classified anyway (``python -m zoo predict`` and the app never do:
the check comes first; this measures the second line of defence) — by either signal ("<model> flags"), by the
model's own distance alone ("<model> model distance flags"), and by the model-independent content distance alone
("content distance flags", ``zoo.fundus_check_reference``). A sample of held-out real fundus photos of each graded
folder (the check part of ``scripts/fit_fundus_check.py``: neither the head nor the content reference was fitted on
them) is the comparison row: the indicator should flag few of those. Runs at low priority.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads: sleeping threads on a shared CPU

from tqdm import tqdm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = "check"  # scripts/fit_fundus_check.py's part that nothing is fitted on
SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_MODELS = ("dr-grading", "dr-grade-classifier", "dr-lesions", "eye-diseases", "eye-diseases-ensemble")
FUNDUS_FOLDERS = ("eyepacs-1k", "odir-ngc", "aptos2019", "eyepacs-5k")


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("FUNDUS_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--limit", type=int, default=None, help="at most N photos per kind")
    parser.add_argument("--fundus-sample", type=int, default=40,
                        help="held-out real fundus photos per comparison folder")
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):  # not allowed everywhere
        os.nice(10)
    import zoo
    from fit_fundus_check import part_of
    from fundus import load_image
    from zoo.fundus_check import check_fundus_photo, content_model

    groups: dict[str, list[Path]] = defaultdict(list)
    for path in photos(args.data / "not-fundus"):
        groups[f"not-fundus/{path.relative_to(args.data / 'not-fundus').parts[0]}"].append(path)
    rng = random.Random(0)
    for name in FUNDUS_FOLDERS:
        if (args.data / name).is_dir():
            found = [p for p in photos(args.data / name) if part_of(str(p.relative_to(args.data))) == HELD_OUT]
            groups[f"fundus: {name}"] = rng.sample(found, min(args.fundus_sample, len(found)))
    if args.limit:
        groups = {k: v[:args.limit] for k, v in groups.items()}
    images = {path: load_image(path) for paths in groups.values() for path in tqdm(paths, desc="photos", leave=False)}
    table: dict[str, Counter] = defaultdict(Counter)
    content = content_model()
    for group, paths in groups.items():
        for path in tqdm(paths, desc=f"check {group}", leave=False):
            table[group]["photos"] += 1
            table[group]["check accepts"] += check_fundus_photo(images[path]).is_fundus
        distances = content.reference.distance(content.features([images[p] for p in paths]))
        table[group]["content distance flags"] = int((distances > content.reference.threshold).sum())
    for name in args.models:
        model = zoo.load(name)
        for group, paths in groups.items():
            results = zoo.predict(model, [images[p] for p in paths], batch_size=16)
            verdicts = [r.get("unlike_training", {}) for r in results]
            table[group][f"{name} flags"] = sum(bool(v.get("unlike_training")) for v in verdicts)
            table[group][f"{name} model distance flags"] = sum("model" in v.get("flagged_by", []) for v in verdicts)
    print(json.dumps({group: dict(counts) for group, counts in table.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
