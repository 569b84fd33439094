"""Training-time metrics: the recipes' headline metric (live in the progress bar, logged each epoch; each task's
default is ``default_metric``) and paper 001's per-class decision thresholds chosen on validation.

The full evaluation (precision/recall/F1 micro+macro, AUC, sensitivity/specificity, kappa) lives in
``zoo.evaluation.metrics.compute_metrics`` so that ``python -m zoo evaluate`` needs nothing from train/.
Probabilities and decisions are the task's (``fundus.tasks``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from fundus.tasks import DEFAULT_GRADE_CUTOFFS, GRADE_REGRESSION, MULTICLASS, MULTILABEL, expected_grade, task_of


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
        return quadratic_kappa(predictions(logits, task), targets)

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


def quadratic_kappa(grades: np.ndarray, truth: np.ndarray) -> float:
    """Quadratic weighted kappa between decided and true grades, as ``sklearn.metrics.cohen_kappa_score(truth,
    grades, weights="quadratic")`` (weights by the rank among the grades present) in numpy, fast enough for the
    cut-off search; 1 where both agree on one grade, 0 where only one grade occurs and they differ."""
    pred, true = np.asarray(grades).reshape(-1).astype(np.int64), np.asarray(truth).reshape(-1).astype(np.int64)
    present = np.unique(np.concatenate([pred, true]))
    n = len(present)
    if n < 2:
        return 1.0 if np.array_equal(pred, true) else 0.0
    i, j = np.searchsorted(present, true), np.searchsorted(present, pred)
    observed = np.bincount(i * n + j, minlength=n * n).reshape(n, n).astype(np.float64)
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    weights = (np.arange(n)[:, None] - np.arange(n)[None, :]) ** 2
    return float(1.0 - (weights * observed).sum() / (weights * expected).sum())


def fit_grade_cutoffs(values: np.ndarray, truth: np.ndarray,
                      start: Sequence[float] = DEFAULT_GRADE_CUTOFFS) -> tuple[list[float], float, float]:
    """Grade cut-offs of a value (paper 004's regression output, or a grader's expected grade) that maximise the
    quadratic weighted kappa on validation photos: the APTOS 2019 winners' ``OptimizedRounder`` (Nelder–Mead from
    0.5 / 1.5 / 2.5 / 3.5, ``scipy.optimize.minimize``) with the cut-offs kept in order, then each cut-off in turn
    moved to the best midpoint between neighbouring values (kappa is a step function of the cut-offs: the simplex
    alone can stall on a plateau). A fit that does not beat the start keeps the start.

    Args:
        values: ``(N,)`` or ``(N, 1)`` values.
        truth: ``(N,)`` true grades 0…len(start).
        start: the cut-offs the search starts from (and falls back to).

    Returns:
        (cut-offs, kappa at the start, kappa at the cut-offs).

    Raises:
        ValueError: values and grades that differ in number, or none.
    """
    from scipy.optimize import minimize

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    y = np.asarray(truth).reshape(-1).astype(np.int64)
    if len(v) != len(y) or not len(v):
        raise ValueError(f"need as many values as grades (and some), got {len(v)} and {len(y)}")
    start = np.asarray(start, dtype=np.float64)

    def kappa(cuts: np.ndarray) -> float:
        return quadratic_kappa(GRADE_REGRESSION.decide(v, cutoffs=np.sort(cuts).tolist()), y)

    cuts = np.sort(minimize(lambda c: -kappa(c), start, method="Nelder-Mead",
                            options={"xatol": 1e-3, "fatol": 1e-6, "maxiter": 400}).x)
    candidates = np.unique(v)
    midpoints = (candidates[1:] + candidates[:-1]) / 2 if len(candidates) > 1 else candidates
    for _ in range(2):  # coordinate passes over the midpoints between neighbouring cut-offs
        for k in range(len(cuts)):
            low = cuts[k - 1] if k else -np.inf
            high = cuts[k + 1] if k + 1 < len(cuts) else np.inf
            options = midpoints[(midpoints > low) & (midpoints < high)]
            if not len(options):
                continue
            scores = [kappa(np.concatenate([cuts[:k], [m], cuts[k + 1:]])) for m in options]
            if max(scores) > kappa(cuts):
                cuts[k] = options[int(np.argmax(scores))]
    before, after = kappa(start), kappa(cuts)
    if after <= before or np.any(np.diff(cuts) <= 0):
        return start.tolist(), before, before
    return [float(c) for c in cuts], before, after


@dataclass(frozen=True)
class GradeRule:
    """A multiclass grader's decision chosen on validation photos (``choose_grade_rule``)."""

    expected_cutoffs: list[float]  # [] = argmax; else the expected grade's cut-offs (config.expected_grade_cutoffs)
    kappa_argmax: float
    kappa_expected: float  # the expected grade at its fitted cut-offs

    def to_dict(self) -> dict[str, Any]:
        return {"rule": "expected grade" if self.expected_cutoffs else "argmax",
                "expected_cutoffs": self.expected_cutoffs, "kappa_argmax": self.kappa_argmax,
                "kappa_expected_grade": self.kappa_expected}


def choose_grade_rule(logits: np.ndarray, truth: np.ndarray) -> GradeRule:
    """Paper 003's grader decided by the argmax or by the expected grade Σ k·p_k cut at cut-offs fitted on these
    validation photos (``fit_grade_cutoffs``), whichever gives the higher quadratic kappa here (a tie keeps the
    argmax: the paper's rule).

    Args:
        logits: ``(N, K)`` raw outputs over ordered grades.
        truth: ``(N,)`` true grades.
    """
    probs = MULTICLASS.probabilities(np.asarray(logits))
    argmax = quadratic_kappa(MULTICLASS.decide(np.asarray(logits)), truth)
    cuts, _, fitted = fit_grade_cutoffs(expected_grade(probs), truth,
                                        start=np.arange(probs.shape[-1] - 1, dtype=np.float64) + 0.5)
    return GradeRule(cuts if fitted > argmax else [], argmax, fitted)
