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

DR_GRADE_NAMES = ("no dr", "mild", "moderate", "severe", "proliferative dr")
GRADING_PAPERS = ("003", "004")
# Lesion label aliases across data sets (IDRiD masks, YOLO class names, paper 001's labels).
LESION_ALIASES = {
    "MA": ("ma", "microaneurysms", "microaneurysm", "bp/ma", "bp", "red_small_dots"),
    "HE": ("he", "haemorrhages", "haemorrhage", "hemorrhage", "hemorrhages", "hm"),
    "EX": ("ex", "hard_exudates", "hard exudates", "hard_exudate", "hex"),
    "SE": ("se", "soft_exudates", "soft exudates", "cotton_wool_spots", "cws"),
}


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
            pred = np.digitize(values, cut)
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
    result["sensitivity"] = dict(zip(labels, rec))
    result["specificity"] = {name: _safe_div(t, t + f) for name, t, f in zip(labels, tn, fp)}
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
