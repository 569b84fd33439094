"""Evaluation metrics from raw model outputs and targets (scikit-learn).

Accuracy, precision / recall / F1 (micro and macro), per-class AUC, sensitivity and specificity, quadratic
weighted kappa for grading tasks (papers 003, 004) with the screening views of a grader (any DR, referable DR),
the confusion matrix. Probabilities and decisions are the task's (``fundus.tasks``).

Multilabel targets may hold NaN for "unknown" (e.g. a data set that bundles two lesion types); those entries are
left out of that label's counts.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score

from fundus.datasets.labels import DR_GRADE_NAMES, REFERABLE_GRADE, any_dr, referable_dr
from fundus.tasks import DEFAULT_THRESHOLD, MULTICLASS, MULTILABEL, task_of

GRADING_PAPERS = ("003", "004")  # their five-class graders are scored by quadratic kappa too

Counts = tuple[int, int, int, int]  # (TP, FP, FN, TN) of one class


def _safe_div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None  # undefined with one class only
    return float(roc_auc_score(y, score))


def is_grading(task: str, labels: Sequence[str], paper: str = "") -> bool:
    """Whether quadratic weighted kappa applies: grade regression, or the five ordered DR grades."""
    task = task_of(task)
    if task.regression:
        return True
    names = tuple(str(label).strip().lower() for label in labels)
    return task is MULTICLASS and (names == DR_GRADE_NAMES or (paper in GRADING_PAPERS and len(names) == 5))


def _binary_counts(y: np.ndarray, p: np.ndarray) -> Counts:
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
    expected_cutoffs: Sequence[float] | None = None,
) -> dict[str, Any]:
    """All evaluation metrics from raw model outputs and targets.

    Args:
        task: a config's task name (``fundus.tasks.TASKS``).
        outputs: (N, C) raw outputs (logits), or (N,)/(N, 1) values for a grade regression.
        targets: (N,) class indices / grades, or (N, C) multi-hot (NaN = unknown).
        labels: class names (for regression: the grade names).
        thresholds: multilabel per-class decision thresholds (default 0.5).
        grade_cutoffs: regression value -> grade cutoffs (default ``fundus.tasks.DEFAULT_GRADE_CUTOFFS``).
        grading: add quadratic weighted kappa (default: regression, or multiclass DR grades).
        expected_cutoffs: multiclass grader: decide by the expected grade cut at these instead of the argmax
            (a config's ``expected_grade_cutoffs``; ``fundus.tasks.grade_rule``).

    Returns:
        dict with accuracy, precision/recall/f1 micro and macro, auc_per_class, auc_macro,
        sensitivity, specificity (per class), quadratic_kappa (grading, else None), confusion_matrix,
        n_images.

    Raises:
        ValueError: unknown task, or outputs/targets/labels that do not fit together.
    """
    task = task_of(task)
    labels = [str(label) for label in labels]
    out = np.asarray(outputs, dtype=np.float64)
    tgt = np.asarray(targets, dtype=np.float64)
    n = len(out)
    if len(tgt) != n:
        raise ValueError(f"{n} outputs but {len(tgt)} targets")
    grading = is_grading(task, labels) if grading is None else grading
    result: dict[str, Any] = {"n_images": int(n), "task": task.name, "labels": labels}
    if n == 0:
        return {**result, "accuracy": None, "quadratic_kappa": None, "auc_per_class": {}, "f1_macro": None}
    if task is MULTILABEL:
        counts, aucs = _multilabel(result, out, tgt, labels, thresholds)
    else:
        counts, aucs = _single_label(result, task, out, tgt, labels, grade_cutoffs, grading, expected_cutoffs)
    result.setdefault("quadratic_kappa", None)
    result.update(_rates(counts, labels))
    result["auc_per_class"] = aucs
    defined = [a for a in aucs.values() if a is not None]
    result["auc_macro"] = float(np.mean(defined)) if defined else None
    return result


def _multilabel(result: dict[str, Any], out: np.ndarray, tgt: np.ndarray, labels: list[str],
                thresholds: Sequence[float] | None) -> tuple[list[Counts], dict[str, float | None]]:
    """Per-label counts and AUCs over the known entries; exact-match and per-label accuracy into ``result``."""
    c = len(labels)
    if out.ndim != 2 or out.shape[1] != c or tgt.shape != out.shape:
        raise ValueError(f"multilabel outputs {out.shape} and targets {tgt.shape} must be (N, {c})")
    probs = MULTILABEL.probabilities(out)
    pred = MULTILABEL.decide(out, thresholds=thresholds).astype(np.int64)  # each label on its own
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
    result["thresholds"] = [float(t) for t in (thresholds or [DEFAULT_THRESHOLD] * c)]
    return counts, aucs


def _single_label(result: dict[str, Any], task, out: np.ndarray, tgt: np.ndarray, labels: list[str],
                  grade_cutoffs: Sequence[float] | None, grading: bool,
                  expected_cutoffs: Sequence[float] | None = None) -> tuple[list[Counts], dict[str, float | None]]:
    """One class (or grade) per photo: one-vs-rest counts and AUCs; accuracy, the confusion matrix and (grading)
    quadratic kappa with the screening AUCs into ``result``."""
    n, c = len(out), len(labels)
    if task.regression:
        values = out.reshape(n, -1)[:, 0]
        pred = task.decide(values, cutoffs=grade_cutoffs)
        scores = -np.abs(values[:, None] - np.arange(c)[None, :])  # per-grade AUC score: closeness to the grade
    else:
        if out.ndim != 2 or out.shape[1] != c:
            raise ValueError(f"multiclass outputs must be (N, {c}), got {out.shape}")
        scores = task.probabilities(out)
        pred = task.decide(out, expected_cutoffs=expected_cutoffs)
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
        dr = values if task.regression else 1 - scores[:, 0]
        referable = values if task.regression else scores[:, REFERABLE_GRADE:].sum(1)
        result["auc_any_dr"] = _auc(any_dr(y).astype(np.int64), dr)
        result["auc_referable_dr"] = _auc(referable_dr(y).astype(np.int64), referable)
    return counts, aucs


def _rates(counts: list[Counts], labels: list[str]) -> dict[str, Any]:
    """Precision, recall, F1 (micro and macro), and per-class sensitivity and specificity from the counts."""
    tp, fp, fn, tn = (np.array([x[i] for x in counts]) for i in range(4))
    prec = [_safe_div(a, a + b) for a, b in zip(tp, fp)]
    rec = [_safe_div(a, a + b) for a, b in zip(tp, fn)]
    f1 = [_safe_div(2 * p * r, p + r) for p, r in zip(prec, rec)]
    return {
        "precision_micro": _safe_div(tp.sum(), tp.sum() + fp.sum()),
        "recall_micro": _safe_div(tp.sum(), tp.sum() + fn.sum()),
        "f1_micro": _safe_div(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum()),
        "precision_macro": float(np.mean(prec)),
        "recall_macro": float(np.mean(rec)),
        "f1_macro": float(np.mean(f1)),
        # Undefined (None) where a label has no known positive / negative here (e.g. glaucoma in a DR screening set).
        "sensitivity": {name: _safe_div(a, a + b) if a + b else None for name, a, b in zip(labels, tp, fn)},
        "specificity": {name: _safe_div(t, t + f) if t + f else None for name, t, f in zip(labels, tn, fp)},
    }
