"""Training-time metrics: the recipes' headline metric (live in the progress bar, logged each epoch; each task's
default is ``default_metric``) and paper 001's per-class decision thresholds chosen on validation.

The full evaluation (precision/recall/F1 micro+macro, AUC, sensitivity/specificity, kappa) lives in
``zoo.evaluation.metrics.compute_metrics`` so that ``python -m zoo evaluate`` needs nothing from train/.
Probabilities and decisions are the task's (``fundus.tasks``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fundus.tasks import MULTICLASS, MULTILABEL, task_of


def predictions(logits: np.ndarray, task: str, thresholds: list[float] | None = None,
                cutoffs: list[float] | None = None) -> np.ndarray:
    """Decisions as int64: class index (multiclass, regression via cutoffs) or multi-hot (multilabel, per-class
    thresholds), by the task's rule (``fundus.tasks``; no no-disease exclusion: each label on its own)."""
    decided = task_of(task).decide(np.asarray(logits), thresholds=thresholds, cutoffs=cutoffs)
    return np.asarray(decided).astype(np.int64)


@dataclass(frozen=True)
class Metric:
    """A named score of (raw outputs, targets); higher is better."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]

    def __call__(self, logits: np.ndarray, targets: np.ndarray) -> float:
        if len(targets) == 0:
            return float("nan")
        return float(self.fn(np.asarray(logits), np.asarray(targets)))


def accuracy_metric(task: str = MULTICLASS.name) -> Metric:
    """Accuracy: exact class (multiclass/regression) or mean per-label agreement (multilabel)."""

    def fn(logits: np.ndarray, targets: np.ndarray) -> float:
        pred = predictions(logits, task)
        if not task_of(task).single_label:
            return float((pred == targets.astype(np.int64)).mean())
        return float((pred == targets.reshape(-1).astype(np.int64)).mean())

    return Metric("accuracy", fn)


def micro_f1_metric(thresholds: list[float] | None = None) -> Metric:
    """Micro-averaged F1 over labels (paper 002's score), sigmoid outputs at the thresholds (0.5)."""

    def fn(logits: np.ndarray, targets: np.ndarray) -> float:
        pred = predictions(logits, MULTILABEL.name, thresholds)
        known = np.isfinite(targets)  # NaN: label unknown for that photo
        t = np.nan_to_num(targets).astype(np.int64)
        tp = int(((pred == 1) & (t == 1) & known).sum())
        wrong = int(((pred != t) & known).sum())
        return 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0

    return Metric("f1_micro", fn)


def kappa_metric(task: str = MULTICLASS.name) -> Metric:
    """Quadratic weighted kappa between predicted and true grades (paper 004's score)."""

    def fn(logits: np.ndarray, targets: np.ndarray) -> float:
        from sklearn.metrics import cohen_kappa_score  # lazy: sklearn takes seconds to import

        pred = predictions(logits, task)
        true = targets.reshape(-1).astype(np.int64)
        if len(np.unique(np.concatenate([pred, true]))) < 2:
            return 1.0 if np.array_equal(pred, true) else 0.0
        return float(cohen_kappa_score(true, pred, weights="quadratic"))

    return Metric("quadratic_kappa", fn)


def default_metric(task: str) -> Metric:
    """The task's headline metric (``fundus.tasks``: accuracy, micro F1, quadratic kappa).

    Raises:
        ValueError: unknown task.
    """
    builders = {"accuracy": accuracy_metric, "f1_micro": lambda _: micro_f1_metric(), "quadratic_kappa": kappa_metric}
    return builders[task_of(task).default_metric](task)


def choose_thresholds(probs: np.ndarray, targets: np.ndarray, method: str = "youden",
                      default: float = 0.5) -> list[float]:
    """Per-class decision thresholds chosen on validation (paper 001: "each optimum threshold to each" class).

    Args:
        probs: (N, C) sigmoid probabilities.
        targets: (N, C) multi-hot.
        method: "youden" maximises sensitivity + specificity - 1 on the ROC curve; "f1" maximises F1.
        default: used for a class with only positives or only negatives in validation.

    Raises:
        ValueError: shapes differ, or unknown method.
    """
    from sklearn.metrics import f1_score, roc_curve
    p, t = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"probs {p.shape} and targets {t.shape} must both be (N, C)")
    if method not in ("youden", "f1"):
        raise ValueError(f"method must be 'youden' or 'f1', got {method!r}")
    out = []
    for c in range(p.shape[1]):
        known = np.isfinite(t[:, c])  # NaN: unknown label
        pc, tc = p[known, c], t[known, c].astype(np.int64)
        if tc.size == 0 or tc.min() == tc.max():
            out.append(float(default))
            continue
        if method == "youden":
            fpr, tpr, thr = roc_curve(tc, pc)
            j = np.where(np.isfinite(thr), tpr - fpr, -np.inf)
            best = float(thr[int(np.argmax(j))])
        else:
            cands = np.unique(pc)
            f1s = [f1_score(tc, (pc >= th).astype(np.int64), zero_division=0) for th in cands]
            best = float(cands[int(np.argmax(f1s))])
        # The best cut lies between this score and the next lower one: take the midpoint, so that a
        # validation photo is not decided by the last bit of its score (another batch size, another order).
        below = pc[pc < best]
        out.append(float(np.clip((best + below.max()) / 2 if below.size else best, 0.0, 1.0)))
    return out
