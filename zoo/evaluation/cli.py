"""``python -m zoo evaluate MODEL --data DIR --format FMT``: a zoo model's metrics on labelled photos.

An unreadable photo is counted in ``n_unreadable`` and skipped, never fatal. ``--json`` prints one JSON object;
``--report`` writes a plotly HTML page (ROC per class, confusion matrix); for an ensemble each member and the
fusion are measured too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fundus.datasets.splits import SPLIT_SEED, TEST_FRACTION, VAL_FRACTION
from fundus.tasks import MULTILABEL, grade_rule, task_of
from zoo.evaluation.figures import confusion_figure, roc_figure
from zoo.evaluation.metrics import compute_metrics, is_grading
from zoo.evaluation.outputs import collect_outputs, ensemble_members
from zoo.evaluation.report import format_value, write_html
from zoo.helpformat import DefaultsHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zoo evaluate",
        description="Evaluate a zoo model on a labelled data set: accuracy, precision/recall/F1 (micro, macro), "
                    "per-class AUC, sensitivity, specificity, quadratic weighted kappa (grading); ensembles per "
                    "member.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("model", help="shipped model name, local folder or hub repo id")
    p.add_argument("--data", action="append", type=Path, required=True, help="data set folder (repeatable)")
    p.add_argument("--format", action="append", dest="formats", required=True, metavar="FMT",
                   help="format of each --data (fundus.datasets); srahim-dr600 = imagefolder + that preset")
    p.add_argument("--preset", default=None, help="imagefolder preset")
    p.add_argument("--split", default="all",
                   help="all | train | val | test (the part of each data set's patients that training uses: same "
                        "--val-fraction, --test-fraction and --seed) | a split of the data set's own layout")
    p.add_argument("--val-fraction", type=float, default=VAL_FRACTION, help="with --split train/val/test")
    p.add_argument("--test-fraction", type=float, default=TEST_FRACTION, help="with --split train/val/test")
    p.add_argument("--seed", type=int, default=SPLIT_SEED, help="with --split train/val/test")
    p.add_argument("--by-source", action="store_true", help="also the metrics of each data set on its own")
    p.add_argument("--limit", type=int, default=None, help="only the first N usable photos")
    p.add_argument("--batch-size", type=int, default=16, help="photos per forward pass")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers reading and preprocessing photos")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report", type=Path, default=None, help="write a plotly HTML report here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def photos_of(args: argparse.Namespace, config: Any) -> list:
    """The photos the flags name, with targets in the model's labels (``fundus.datasets.labelled``)."""
    from fundus.datasets.labelled import labelled_photos

    return labelled_photos(args.data, args.formats, config.labels, config.task, split=args.split, preset=args.preset,
                           limit=args.limit, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                           seed=args.seed)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as the CLI flags say; returns the result dict (what --json prints)."""
    import zoo

    model = zoo.load(args.model, device=args.device)
    cfg = model.config
    items = photos_of(args, cfg)
    outputs, targets, n_bad = collect_outputs(model, items, args.batch_size, args.workers, args.device,
                                              progress=not args.quiet and not args.json)
    multilabel = task_of(cfg.task) is MULTILABEL
    thresholds = cfg.thresholds if multilabel else None
    grading = is_grading(cfg.task, cfg.labels, cfg.paper)
    rule = grade_rule(cfg)
    result = compute_metrics(cfg.task, outputs["model"], targets, cfg.labels, thresholds, rule["cutoffs"], grading,
                             rule["expected_cutoffs"])
    result.update(model=args.model, name=cfg.name, split=args.split, n_unreadable=int(n_bad))
    sources = [it.source for it in items]
    if getattr(args, "by_source", False) and n_bad == 0:
        result["by_source"] = {
            src: compute_metrics(cfg.task, outputs["model"][keep], targets[keep], cfg.labels, thresholds,
                                 rule["cutoffs"], grading, rule["expected_cutoffs"])
            for src in sorted(set(sources)) for keep in [np.array([x == src for x in sources])]}
    members = {}
    for name, m in ensemble_members(model):
        mt = m.config.thresholds if multilabel else None
        members[name] = compute_metrics(cfg.task, outputs[name], targets, cfg.labels, mt, cfg.grade_cutoffs, grading)
    if members:
        result["members"] = members
        result["fusion"] = {"lam": getattr(model, "lam", None), "sigma": getattr(model, "sigma", None)}
    if args.report:
        figs = [roc_figure(cfg.task, outputs["model"], targets, cfg.labels), confusion_figure(result)]
        summary = {k: result.get(k) for k in ("n_images", "n_unreadable", "accuracy", "f1_micro", "f1_macro",
                                               "auc_macro", "quadratic_kappa", "auc_per_class")}
        summary.update({f"member {k}": {"accuracy": v["accuracy"], "f1_macro": v["f1_macro"],
                                        "auc_macro": v["auc_macro"]} for k, v in members.items()})
        write_html(args.report, figs, f"{cfg.name}: evaluation on {', '.join(p.name for p in args.data)}", summary)
    return result


def print_table(result: dict[str, Any]) -> None:
    """The result as a text table (each source's first when ``--by-source``)."""
    for source, metrics in result.get("by_source", {}).items():
        print_table({**metrics, "name": f"{result['name']} [{source}]", "split": result["split"]})
    keys = ("n_images", "n_unreadable", "accuracy", "precision_micro", "precision_macro", "recall_micro",
            "recall_macro", "f1_micro", "f1_macro", "auc_macro", "quadratic_kappa")
    print(f"{result['name']} on {result['n_images']} photos ({result['split']})")
    for k in keys:
        print(f"  {k:<16} {format_value(result.get(k))}")
    for label in result["labels"]:
        print(f"  {label:<16} AUC {format_value(result['auc_per_class'].get(label))}  sensitivity "
              f"{format_value(result['sensitivity'].get(label))}  specificity "
              f"{format_value(result['specificity'].get(label))}")
    for name, m in result.get("members", {}).items():
        print(f"  member {name}: accuracy {format_value(m['accuracy'])}, F1 macro {format_value(m['f1_macro'])}, "
              f"AUC macro {format_value(m['auc_macro'])}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoo evaluate`` (the zoo CLI dispatches here)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        result = evaluate(args)
        if args.json:
            print(json.dumps(result, default=_json_default))
        else:
            print_table(result)
    except (ValueError, FileNotFoundError) as err:  # a bad flag value, a data set not found: a line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


if __name__ == "__main__":
    sys.exit(main())
