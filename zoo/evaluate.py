"""Evaluate a zoo model on a labelled data set: ``python -m zoo evaluate MODEL --data DIR --format FMT``.

Metrics (scikit-learn): accuracy, precision / recall / F1 (micro and macro), per-class AUC,
sensitivity and specificity, quadratic weighted kappa for grading tasks (papers 003, 004), the
confusion matrix; for an ensemble each member and the fusion. An unreadable photo is counted in
``n_unreadable`` and skipped, never fatal. ``--json`` prints one JSON object; ``--report`` writes a
plotly HTML page (ROC per class, confusion matrix).

Multilabel targets may hold NaN for "unknown" (e.g. a data set that bundles two lesion types);
those entries are left out of that label's counts.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score, roc_curve

from fundus.datasets.labels import (  # noqa: F401 - sample_target and the aliases are re-exported
    DR_GRADE_NAMES, LESION_ALIASES, REFERABLE_GRADE, any_dr, referable_dr, sample_target)
from fundus.datasets.splits import PARTS, SPLIT_SEED, TEST_FRACTION, VAL_FRACTION
from zoo.helpformat import DefaultsHelpFormatter

GRADING_PAPERS = ("003", "004")


# ------------------------------------------------------------------------------------ metrics


def _probabilities(outputs: np.ndarray, task: str) -> np.ndarray:
    z = np.asarray(outputs, dtype=np.float64)
    if task == "multiclass":
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    if task == "multilabel":
        return 1.0 / (1.0 + np.exp(-z))
    return z.reshape(-1)


def _safe_div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None  # undefined with one class only
    return float(roc_auc_score(y, score))


def is_grading(task: str, labels: Sequence[str], paper: str = "") -> bool:
    """Whether quadratic weighted kappa applies: grade regression, or the five ordered DR grades."""
    if task == "grade-regression":
        return True
    names = tuple(str(l).strip().lower() for l in labels)
    return task == "multiclass" and (names == DR_GRADE_NAMES or (paper in GRADING_PAPERS and len(names) == 5))


def _binary_counts(y: np.ndarray, p: np.ndarray) -> tuple[int, int, int, int]:
    tn, fp, fn, tp = confusion_matrix(y, p, labels=[0, 1]).ravel()
    return int(tp), int(fp), int(fn), int(tn)


def compute_metrics(
    task: str,
    outputs: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    thresholds: Sequence[float] | None = None,
    grade_cutoffs: Sequence[float] | None = None,
    grading: bool | None = None,
) -> dict[str, Any]:
    """All evaluation metrics from raw model outputs and targets.

    Args:
        task: "multiclass", "multilabel" or "grade-regression".
        outputs: (N, C) raw outputs (logits), or (N,)/(N, 1) values for grade-regression.
        targets: (N,) class indices / grades, or (N, C) multi-hot (NaN = unknown).
        labels: class names (for regression: the grade names).
        thresholds: multilabel per-class decision thresholds (default 0.5).
        grade_cutoffs: regression value -> grade cutoffs (default 0.5, 1.5, 2.5, 3.5).
        grading: add quadratic weighted kappa (default: regression, or multiclass DR grades).

    Returns:
        dict with accuracy, precision/recall/f1 micro and macro, auc_per_class, auc_macro,
        sensitivity, specificity (per class), quadratic_kappa (grading, else None), confusion_matrix,
        n_images.

    Raises:
        ValueError: unknown task, or outputs/targets/labels that do not fit together.
    """
    if task not in ("multiclass", "multilabel", "grade-regression"):
        raise ValueError(f"task must be multiclass, multilabel or grade-regression, got {task!r}")
    labels = [str(l) for l in labels]
    out = np.asarray(outputs, dtype=np.float64)
    tgt = np.asarray(targets, dtype=np.float64)
    n = len(out)
    if len(tgt) != n:
        raise ValueError(f"{n} outputs but {len(tgt)} targets")
    grading = is_grading(task, labels) if grading is None else grading
    result: dict[str, Any] = {"n_images": int(n), "task": task, "labels": labels}
    if n == 0:
        return {**result, "accuracy": None, "quadratic_kappa": None, "auc_per_class": {}, "f1_macro": None}
    c = len(labels)
    if task == "multilabel":
        if out.ndim != 2 or out.shape[1] != c or tgt.shape != out.shape:
            raise ValueError(f"multilabel outputs {out.shape} and targets {tgt.shape} must be (N, {c})")
        probs = _probabilities(out, task)
        thr = np.asarray(thresholds if thresholds else [0.5] * c, dtype=np.float64)
        pred = (probs >= thr).astype(np.int64)
        counts, aucs, cms = [], {}, {}
        for k, name in enumerate(labels):
            known = np.isfinite(tgt[:, k])
            y = tgt[known, k].astype(np.int64)
            counts.append(_binary_counts(y, pred[known, k]) if known.any() else (0, 0, 0, 0))
            aucs[name] = _auc(y, probs[known, k]) if known.any() else None
            tp, fp, fn, tn = counts[-1]
            cms[name] = [[tn, fp], [fn, tp]]
        known_all = np.isfinite(tgt)
        agree = (pred == np.nan_to_num(tgt).astype(np.int64)) | ~known_all
        result["accuracy"] = float(agree.all(1).mean())  # exact match (subset accuracy)
        result["label_accuracy"] = float(agree[known_all].mean()) if known_all.any() else None
        result["confusion_matrix"] = cms
        result["thresholds"] = thr.tolist()
    else:
        if task == "multiclass":
            if out.ndim != 2 or out.shape[1] != c:
                raise ValueError(f"multiclass outputs must be (N, {c}), got {out.shape}")
            probs = _probabilities(out, task)
            pred = probs.argmax(1)
            scores = probs
        else:
            values = out.reshape(n, -1)[:, 0]
            cut = np.asarray(grade_cutoffs or [0.5, 1.5, 2.5, 3.5], dtype=np.float64)
            pred = np.digitize(values, cut, right=True)  # value > cut-off, as FundusNet.decide
            # Per-grade score for AUC: closeness of the value to the grade.
            scores = -np.abs(values[:, None] - np.arange(c)[None, :])
        y = tgt.reshape(-1).astype(np.int64)
        if y.min() < 0 or y.max() >= c:
            raise ValueError(f"targets must be class indices in [0, {c}), got range [{y.min()}, {y.max()}]")
        cm = confusion_matrix(y, pred, labels=list(range(c)))
        counts, aucs = [], {}
        for k, name in enumerate(labels):
            tp = int(cm[k, k])
            fp = int(cm[:, k].sum() - tp)
            fn = int(cm[k, :].sum() - tp)
            counts.append((tp, fp, fn, int(cm.sum() - tp - fp - fn)))
            aucs[name] = _auc((y == k).astype(np.int64), scores[:, k])
        result["accuracy"] = float((pred == y).mean())
        result["confusion_matrix"] = cm.tolist()
        if grading:
            if len(np.unique(np.concatenate([y, pred]))) < 2:
                result["quadratic_kappa"] = 1.0 if np.array_equal(y, pred) else 0.0
            else:
                result["quadratic_kappa"] = float(cohen_kappa_score(y, pred, weights="quadratic"))
            # Screening views of a grader (fundus.datasets.labels): any DR (grade ≥ 1), referable DR.
            dr = values if task == "grade-regression" else 1 - probs[:, 0]
            referable = values if task == "grade-regression" else probs[:, REFERABLE_GRADE:].sum(1)
            result["auc_any_dr"] = _auc(any_dr(y).astype(np.int64), dr)
            result["auc_referable_dr"] = _auc(referable_dr(y).astype(np.int64), referable)
    result.setdefault("quadratic_kappa", None)
    tp, fp, fn, tn = (np.array([x[i] for x in counts]) for i in range(4))
    prec = [_safe_div(a, a + b) for a, b in zip(tp, fp)]
    rec = [_safe_div(a, a + b) for a, b in zip(tp, fn)]
    f1 = [_safe_div(2 * p * r, p + r) for p, r in zip(prec, rec)]
    result["precision_micro"] = _safe_div(tp.sum(), tp.sum() + fp.sum())
    result["recall_micro"] = _safe_div(tp.sum(), tp.sum() + fn.sum())
    result["f1_micro"] = _safe_div(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum())
    result["precision_macro"] = float(np.mean(prec))
    result["recall_macro"] = float(np.mean(rec))
    result["f1_macro"] = float(np.mean(f1))
    # Undefined (None) where a label has no known positive / negative here (e.g. glaucoma in a DR screening set).
    result["sensitivity"] = {name: _safe_div(a, a + b) if a + b else None for name, a, b in zip(labels, tp, fn)}
    result["specificity"] = {name: _safe_div(t, t + f) if t + f else None for name, t, f in zip(labels, tn, fp)}
    result["auc_per_class"] = aucs
    defined = [a for a in aucs.values() if a is not None]
    result["auc_macro"] = float(np.mean(defined)) if defined else None
    return result


# ------------------------------------------------------------------------------------ figures


def roc_figure(task: str, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str]):
    """Plotly figure: one ROC curve per class (one-vs-rest for multiclass)."""
    import plotly.graph_objects as go

    out, tgt = np.asarray(outputs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="grey"),
                             name="chance", showlegend=False))
    if task == "grade-regression" or len(out) == 0:
        fig.update_layout(title="ROC per class (not applicable)")
        return fig
    probs = _probabilities(out, task)
    for k, name in enumerate(labels):
        if task == "multilabel":
            known = np.isfinite(tgt[:, k])
            y, s = tgt[known, k].astype(int), probs[known, k]
        else:
            y, s = (tgt.reshape(-1).astype(int) == k).astype(int), probs[:, k]
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUC {roc_auc_score(y, s):.3f})"))
    fig.update_layout(title="ROC per class", xaxis_title="1 - specificity", yaxis_title="sensitivity",
                      xaxis=dict(range=[0, 1]), yaxis=dict(range=[0, 1.02]))
    return fig


def confusion_figure(metrics: dict[str, Any]):
    """Plotly heatmap of the confusion matrix (multilabel: one 2×2 row per label, as TN FP FN TP)."""
    import plotly.graph_objects as go

    labels = metrics.get("labels", [])
    cm = metrics.get("confusion_matrix")
    if isinstance(cm, dict):
        z = [sum(cm[name], []) for name in labels]
        fig = go.Figure(go.Heatmap(z=z, x=["TN", "FP", "FN", "TP"], y=labels, text=z, texttemplate="%{text}",
                                   colorscale="Blues"))
        fig.update_layout(title="Per-label confusion counts")
    else:
        fig = go.Figure(go.Heatmap(z=cm or [[0]], x=labels, y=labels, text=cm, texttemplate="%{text}",
                                   colorscale="Blues"))
        fig.update_layout(title="Confusion matrix", xaxis_title="predicted", yaxis_title="true",
                          yaxis=dict(autorange="reversed"))
    return fig


def write_html(path: str | Path, figures: Sequence[Any], title: str, summary: dict[str, Any] | None = None) -> Path:
    """One self-contained HTML page (plotly.js embedded: it opens offline) with the figures and a summary table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>{title}</h1>"]
    if summary:
        rows = "".join(f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>" for k, v in summary.items())
        parts.append(f"<table border='1' cellpadding='4'>{rows}</table>")
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    html = ("<!doctype html><html><head><meta charset='utf-8'><title>" + title + "</title></head><body>"
            + "\n".join(parts) + "</body></html>")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html)
    tmp.replace(path)
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return "n/a" if v is None else str(v)


# ------------------------------------------------------------------------------------ targets


def _members(model: Any) -> list[tuple[str, Any]]:
    """(name, member) of an ensemble (paper 000's fusion: g1.<i>, g2.<i>); [] for a single model."""
    out = []
    for group in ("g1", "g2"):
        for i, m in enumerate(getattr(model, group, None) or []):
            out.append((f"{group}.{i} ({m.config.arch})", m))
    return out


def collect_outputs(model: Any, items: Sequence[Any], batch_size: int = 16, workers: int = 0,
                    device: str = "cpu", progress: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """Run the model (and each ensemble member) over items with ``.image`` and ``.label``.

    Returns:
        ``({"model": outputs, member name: outputs, …}, targets, n_unreadable)``.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from fundus import preprocess
    from fundus.datasets import ImageDataset, collate_skip_none

    cfg = model.config
    ds = ImageDataset(items, transform=lambda rgb: preprocess(rgb, cfg).tensor[0])
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_skip_none)
    members = _members(model)
    outs: dict[str, list[np.ndarray]] = {"model": [], **{name: [] for name, _ in members}}
    targets = []
    model.eval()
    with torch.no_grad():
        for batch in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
            if batch is None:
                continue
            x, y = batch
            x = x.to(device)
            outs["model"].append(model(x).float().cpu().numpy())
            for name, m in members:
                outs[name].append(m(x).float().cpu().numpy())
            targets.append(y.numpy())
    arrays = {k: np.concatenate(v) if v else np.zeros((0, cfg.num_outputs)) for k, v in outs.items()}
    return arrays, (np.concatenate(targets) if targets else np.zeros((0,))), ds.skipped


class _Item:
    """A photo with its target in the model's label space (what ImageDataset reads)."""

    def __init__(self, image: Path, label: Any, patient_id: str, source: str = "") -> None:
        self.image, self.label, self.patient_id, self.source = image, label, patient_id, source


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zoo evaluate",
        description="Evaluate a zoo model on a labelled data set: accuracy, precision/recall/F1 (micro, macro), "
                    "per-class AUC, sensitivity, specificity, quadratic weighted kappa (grading); ensembles per member.",
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


def load_items(args: argparse.Namespace, config: Any) -> list[_Item]:
    """The photos of every --data/--format pair with targets in the model's label space, split as asked.

    Raises:
        ValueError: --data/--format counts that do not pair, or no usable photo.
    """
    from fundus.datasets import load_dataset, train_val_test_split

    formats = args.formats * len(args.data) if len(args.formats) == 1 else args.formats
    if len(formats) != len(args.data):
        raise ValueError(f"{len(args.data)} --data but {len(args.formats)} --format: give one, or one per --data")
    items: list[_Item] = []
    own_split = args.split not in ("all", *PARTS)
    for root, fmt in zip(args.data, formats):
        kwargs: dict[str, Any] = {}
        if fmt == "srahim-dr600":
            fmt, kwargs["preset"] = "imagefolder", "srahim-dr600"
        elif fmt == "imagefolder" and args.preset:
            kwargs["preset"] = args.preset
        split = args.split if own_split else ("all" if fmt in ("imagefolder", "yolo", "hrf") else "train")
        ds = load_dataset(fmt, root, split, **kwargs)
        for s in ds:
            target = sample_target(s, ds, config.labels, config.task)
            if target is not None:
                name = Path(ds.root).name
                items.append(_Item(Path(s.image), target, f"{name}:{s.patient_id or Path(s.image).stem}", name))
    if args.limit:
        items = items[: args.limit]
    if args.split in PARTS and len(items) > 1:
        class _Strat:  # the split reads .label (NaN: unknown = absent), .patient_id and .source
            def __init__(self, it: _Item) -> None:
                self.item, self.patient_id, self.source = it, it.patient_id, it.source
                self.label = np.nan_to_num(it.label) if isinstance(it.label, np.ndarray) else it.label

        parts = train_val_test_split([_Strat(i) for i in items], val_fraction=args.val_fraction,
                                     test_fraction=args.test_fraction, seed=args.seed)
        items = [s.item for s in parts[args.split]]
    if not items:
        raise ValueError(f"no photo in {', '.join(map(str, args.data))} has a target for this model's labels "
                         f"({', '.join(config.labels)})")
    return items


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate as the CLI flags say; returns the result dict (what --json prints)."""
    import zoo

    model = zoo.load(args.model, device=args.device)
    cfg = model.config
    items = load_items(args, cfg)
    outputs, targets, n_bad = collect_outputs(model, items, args.batch_size, args.workers, args.device,
                                              progress=not args.quiet and not args.json)
    thresholds = cfg.thresholds if cfg.task == "multilabel" else None
    grading = is_grading(cfg.task, cfg.labels, cfg.paper)
    result = compute_metrics(cfg.task, outputs["model"], targets, cfg.labels, thresholds, cfg.grade_cutoffs, grading)
    result.update(model=args.model, name=cfg.name, split=args.split, n_unreadable=int(n_bad))
    sources = [it.source for it in items]
    if getattr(args, "by_source", False) and n_bad == 0:
        result["by_source"] = {
            src: compute_metrics(cfg.task, outputs["model"][keep], targets[keep], cfg.labels, thresholds,
                                 cfg.grade_cutoffs, grading)
            for src in sorted(set(sources)) for keep in [np.array([x == src for x in sources])]}
    members = {}
    for name, m in _members(model):
        mt = m.config.thresholds if cfg.task == "multilabel" else None
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


def _print_table(result: dict[str, Any]) -> None:
    for source, metrics in result.get("by_source", {}).items():
        _print_table({**metrics, "name": f"{result['name']} [{source}]", "split": result["split"]})
    keys = ("n_images", "n_unreadable", "accuracy", "precision_micro", "precision_macro", "recall_micro",
            "recall_macro", "f1_micro", "f1_macro", "auc_macro", "quadratic_kappa")
    print(f"{result['name']} on {result['n_images']} photos ({result['split']})")
    for k in keys:
        print(f"  {k:<16} {_fmt(result.get(k))}")
    for label in result["labels"]:
        print(f"  {label:<16} AUC {_fmt(result['auc_per_class'].get(label))}  sensitivity "
              f"{_fmt(result['sensitivity'].get(label))}  specificity {_fmt(result['specificity'].get(label))}")
    for name, m in result.get("members", {}).items():
        print(f"  member {name}: accuracy {_fmt(m['accuracy'])}, F1 macro {_fmt(m['f1_macro'])}, "
              f"AUC macro {_fmt(m['auc_macro'])}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoo evaluate`` (the zoo CLI dispatches here)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        result = evaluate(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, default=_json_default))
    else:
        _print_table(result)
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
