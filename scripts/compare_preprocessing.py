"""Which preprocessing and augmentation survive a change of camera? (docs/MODELS.md, "Transfer to other cameras")

Trains paper 004's grade regressor (``python -m train ellg``, base phase only) on srahim-dr600's training
patients alone — one clinic, one camera — once per variant, then measures it with ``python -m zoo evaluate``
on the **validation** patients of srahim-dr600 (the camera it saw) and of eyepacs-1k (many cameras it never
saw). Test patients are not touched: this comparison chooses the shipped models' preprocessing.

    python scripts/compare_preprocessing.py --out runs/preprocessing      # ~5 min a variant on 2 CPU cores

Variants: the enhancement after the field-of-view crop (none, the papers' CLAHE, Graham's local average
colour subtraction), each without and with ``train.augment.CameraShift``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

VARIANTS = {  # name -> extra `python -m train ellg` flags
    "none": ["--preprocessing", "none"],
    "CLAHE (papers 001, 003)": ["--preprocessing", "clahe"],
    "Graham (local average subtraction)": ["--preprocessing", "graham"],
    "none + CameraShift": ["--preprocessing", "none", "--camera-augment"],
    "CLAHE + CameraShift": ["--preprocessing", "clahe", "--camera-augment"],
    "Graham + CameraShift": ["--preprocessing", "graham", "--camera-augment"],
}
TRAINING = ["--arch", "efficientnet_lite0", "--input-size", "256", "--epochs", "6", "--rounds", "0", "--lr", "5e-4",
            "--batch-size", "32", "--patience", "2", "--frozen-blocks", "4", "--cached-views", "3", "--channels-last",
            "--workers", "2",
            "--quiet"]


def evaluate(run: Path, data: Path, fmt: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "zoo", "evaluate", str(run), "--data", str(data), "--format", fmt,
                           "--split", "val", "--json", "--quiet"], capture_output=True, text=True, check=True)
    m = json.loads(done.stdout)
    return {"kappa": m["quadratic_kappa"], "accuracy": m["accuracy"], "auc_any_dr": m["auc_any_dr"],
            "auc_referable_dr": m["auc_referable_dr"], "n": m["n_images"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding the data sets")
    p.add_argument("--out", type=Path, default=Path("runs/preprocessing"))
    p.add_argument("--only", nargs="*", default=None, help="run only these variants")
    args = p.parse_args(argv)
    srahim, eyepacs = args.data / "srahim-dr600", args.data / "eyepacs-1k"
    if not srahim.is_dir() or not eyepacs.is_dir():
        print(f"needs {srahim} and {eyepacs}", file=sys.stderr)
        return 2
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for k, (name, flags) in enumerate(VARIANTS.items()):
        if (args.only and name not in args.only) or name in results:
            continue
        run = args.out / f"variant{k}"
        subprocess.run([sys.executable, "-m", "train", "ellg", "--data", str(srahim), "--format", "srahim-dr600",
                        *TRAINING, *flags, "--out", str(run)], check=True)
        results[name] = {"flags": " ".join(flags), "srahim-dr600 val": evaluate(run, srahim, "srahim-dr600"),
                         "eyepacs-1k val (never seen)": evaluate(run, eyepacs, "eyepacs")}
        args.out.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(results, indent=1) + "\n")
        print(name, json.dumps(results[name]), flush=True)
    print("| variant | srahim-dr600 val κ | eyepacs-1k val κ (never seen) | eyepacs-1k val any-DR AUC | "
          "eyepacs-1k val referable-DR AUC |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        s, e = r["srahim-dr600 val"], r["eyepacs-1k val (never seen)"]
        print(f"| {name} | {s['kappa']:.3f} | {e['kappa']:.3f} | {e['auc_any_dr']:.3f} | {e['auc_referable_dr']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
