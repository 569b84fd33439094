"""The three tasks a fundus model answers, written once.

- ``multiclass``: one label of N (softmax; the most probable one);
- ``multilabel``: any of N labels (sigmoid; each label at its own threshold, paper 001), where a no-disease label
  and the disease labels exclude each other;
- ``grade-regression``: one value, the DR grade by cut-offs (paper 004).

Each task is a small object: ``task_of(config.task)`` gives it, and it says how raw outputs become probabilities
and decisions, which metric scores its training, and which explanation targets make sense. ``config.task`` stays
the name (config.json files keep it). Arrays may be numpy (evaluation and training metrics, in float64) or torch
tensors (the model, in its own dtype and device); numpy input imports torch only for the no-disease exclusion.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

DEFAULT_THRESHOLD = 0.5  # a multi-label model's threshold where its config gives none
# The least probability a multi-label finding needs, whatever threshold validation chose: a threshold fitted on
# few positives can fall to a fraction of a percent (dr-lesions' HM: 0.4 %), and a label at 0.5 % is noise, not a
# finding to show a clinician, let alone one that overrules "healthy 85 %". Evaluation keeps the raw thresholds
# (the card's metrics are the fitted rule's); what a model decides for a photo (``finding_thresholds``) floors them.
FINDING_FLOOR = 0.05
DEFAULT_GRADE_CUTOFFS = (0.5, 1.5, 2.5, 3.5)  # regression value -> grade: the number of cut-offs it exceeds
# The target menu's words (besides one class, ``class_target(index)``): the model's predicted class, or (multi-label)
# every decided label integrated into one map (paper 001 eq. 4).
PREDICTED = "predicted"
ALL_PREDICTED = "all predicted"
_CLASS_PREFIX = "class:"
_EPS = 1e-7  # probabilities and thresholds are clipped to [eps, 1 - eps] before their log-odds are taken


def class_target(index: int) -> str:
    """The target menu's value for one class."""
    return f"{_CLASS_PREFIX}{index}"


def target_class(value: str) -> int | None:
    """The class index of a ``class_target`` value, None for another value.

    Raises:
        ValueError: a class value whose index is not an integer.
    """
    if isinstance(value, str) and value.startswith(_CLASS_PREFIX):
        return int(value[len(_CLASS_PREFIX):])
    return None


def _torch_of(x: Any):
    """The torch module when ``x`` is a tensor (torch is then imported already), else None."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(x, torch.Tensor) else None


@dataclass(frozen=True, repr=False)
class Task:
    """What a task says about a model's outputs (its subclasses: how).

    Attributes:
        name: the config's ``task`` string.
        description: the model card's words for it.
        default_metric: the name of the training's headline metric (``train.metrics.default_metric``).
        default_target: (menu text, value) of the explanation target offered first.
        regression: the output is one value, the grade by cut-offs, rather than one score per label.
        single_label: one label per photo (targets are an int class or grade, not a multi-hot vector).
    """

    name: str
    description: str
    default_metric: str
    default_target: tuple[str, str]
    regression: bool = False
    single_label: bool = True

    def num_outputs(self, labels: Sequence[str]) -> int:
        """The model's number of outputs for these labels."""
        return len(labels)

    def probabilities(self, outputs: Any) -> Any:
        """``(B, num_outputs)`` raw outputs -> the task's scores (same shape)."""
        raise NotImplementedError

    def decide(self, outputs: Any, *, thresholds: Sequence[float] | None = None,
               cutoffs: Sequence[float] | None = None, no_disease: int | None = None,
               expected_cutoffs: Sequence[float] | None = None) -> Any:
        """Decisions from ``(B, num_outputs)`` raw outputs; each task reads the rule's part it needs
        (``grade_rule(config)`` gives a config's grade parts).

        Args:
            thresholds: multilabel: one per label (default ``DEFAULT_THRESHOLD``).
            cutoffs: grade regression: value -> grade cut-offs (default ``DEFAULT_GRADE_CUTOFFS``).
            no_disease: multilabel: the index of the no-disease label to make exclusive, or None.
            expected_cutoffs: multiclass grader: cut-offs of the expected grade (``expected_grade``); empty or
                None: the most probable class.
        """
        raise NotImplementedError

    def decision_rule(self, labels: Sequence[str], cutoffs: Sequence[float] | None = None,
                      no_disease: int | None = None, expected_cutoffs: Sequence[float] | None = None) -> str:
        """The decision rule in one or two sentences, for model cards and the app."""
        raise NotImplementedError

    def target_menu(self, labels: Sequence[str]) -> list[tuple[str, str]]:
        """(text, value) pairs of the explanation targets that make sense; the first is the default."""
        classes = [] if self.regression else [(label, class_target(i)) for i, label in enumerate(labels)]
        return [self.default_target, *classes]

    def predicted_cells(self, probabilities: Any, thresholds: Sequence[float] | None = None, *,
                        every: bool = False) -> list[int]:
        """The output cells a "predicted" explanation of one photo takes, most probable first.

        Args:
            probabilities: ``(num_outputs,)`` of one photo.
            every: all the classes a multiclass model has, integrated (``explain.targets.AllPredicted``).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"task_of({self.name!r})"


def _ranked(probabilities: Any, cells: Sequence[int]) -> list[int]:
    """``cells`` ordered by probability, highest first (ties keep the order given)."""
    return sorted(cells, key=lambda i: -float(probabilities[i]))


class Multiclass(Task):
    """One label of N: softmax, the most probable."""

    def probabilities(self, outputs: Any) -> Any:
        if _torch_of(outputs) is not None:
            return outputs.softmax(dim=-1)
        z = np.asarray(outputs, dtype=np.float64)
        e = np.exp(z - z.max(-1, keepdims=True))  # shifted by the row's maximum: no overflow
        return e / e.sum(-1, keepdims=True)

    def decide(self, outputs: Any, *, expected_cutoffs=None, **rule: Any) -> Any:
        """``(B,)`` the most probable class (the argmax of the raw outputs: softmax keeps the order); with
        ``expected_cutoffs`` (ordered classes: DR grades) the number of them the expected grade exceeds."""
        if expected_cutoffs:
            return _cut(expected_grade(self.probabilities(outputs)), expected_cutoffs)
        if _torch_of(outputs) is not None:
            return outputs.argmax(dim=-1)
        return np.asarray(outputs).argmax(-1)

    def decision_rule(self, labels, cutoffs=None, no_disease=None, expected_cutoffs=None) -> str:
        if expected_cutoffs:
            cuts = ", ".join(f"{c:.3g}" for c in expected_cutoffs)
            return (f"One grade: the number of cut-offs ({cuts}, fitted on validation photos) the expected grade "
                    "(the grades weighted by their softmax probabilities) exceeds; the grades exclude each other.")
        return "One label: the most probable (softmax argmax); the labels exclude each other."

    def predicted_cells(self, probabilities, thresholds=None, *, every=False) -> list[int]:
        if every:
            return _ranked(probabilities, range(len(probabilities)))
        return [int(probabilities.argmax())]


class Multilabel(Task):
    """Any of N labels: sigmoid, each at its own threshold."""

    def probabilities(self, outputs: Any) -> Any:
        if _torch_of(outputs) is not None:
            return outputs.sigmoid()
        return 1.0 / (1.0 + np.exp(-np.asarray(outputs, dtype=np.float64)))

    def over_thresholds(self, probabilities: Any, thresholds: Sequence[float] | None = None) -> Any:
        """Bool, same shape: each label's probability reaches its threshold (compared in the probabilities' dtype).

        Raises:
            ValueError: a threshold count that is not the label count.
        """
        limits = _thresholds(thresholds, probabilities.shape[-1])
        torch = _torch_of(probabilities)
        if torch is not None:
            return probabilities >= torch.as_tensor(limits, dtype=probabilities.dtype, device=probabilities.device)
        return probabilities >= np.asarray(limits, dtype=probabilities.dtype)

    def decide(self, outputs: Any, *, thresholds=None, no_disease=None, **rule: Any) -> Any:
        """``(B, N)`` bool: each label whose probability reaches its threshold (paper 001's per-class thresholds);
        with ``no_disease``, that label and the disease labels exclude each other: when both sides reach their
        thresholds, the side whose best label lies further above its threshold in log-odds is kept (a tie keeps
        the disease side)."""
        probs = self.probabilities(outputs)
        over = self.over_thresholds(probs, thresholds)
        if no_disease is None:
            return over
        return _exclude_no_disease(probs, _thresholds(thresholds, probs.shape[-1]), over, no_disease)

    def decision_rule(self, labels, cutoffs=None, no_disease=None, expected_cutoffs=None) -> str:
        base = "Each label is predicted when its probability reaches its own threshold (the model's config)."
        if no_disease is None:
            return base
        others = ", ".join(label for i, label in enumerate(labels) if i != no_disease)
        return (f"{base} '{labels[no_disease]}' and the other labels ({others}) exclude each other: when both "
                f"sides reach their thresholds, the side further above its threshold in log-odds "
                f"(log p/(1-p) − log t/(1-t)) is kept and the other is overruled (a tie keeps the disease side).")

    def predicted_cells(self, probabilities, thresholds=None, *, every=False) -> list[int]:
        over = self.over_thresholds(probabilities, thresholds)
        passing = [i for i in range(len(probabilities)) if bool(over[i])]
        return _ranked(probabilities, passing) or [int(probabilities.argmax())]


def _thresholds(thresholds: Sequence[float] | None, n: int) -> list[float]:
    """One threshold per label (``DEFAULT_THRESHOLD`` each where none are given).

    Raises:
        ValueError: a threshold count that is not the label count.
    """
    limits = list(thresholds) if thresholds else [DEFAULT_THRESHOLD] * n
    if len(limits) != n:
        raise ValueError(f"got {len(limits)} multilabel thresholds for {n} outputs")
    return limits


def finding_thresholds(thresholds: Sequence[float] | None) -> list[float]:
    """The thresholds a multi-label model's findings are decided at: each at least ``FINDING_FLOOR`` (empty stays
    empty: ``DEFAULT_THRESHOLD`` each)."""
    return [max(float(t), FINDING_FLOOR) for t in thresholds or ()]


class GradeRegression(Task):
    """One value: the grade by cut-offs."""

    def num_outputs(self, labels: Sequence[str]) -> int:
        return 1

    def probabilities(self, outputs: Any) -> Any:
        """The value itself (there is no probability of a grade)."""
        if _torch_of(outputs) is not None:
            return outputs
        return np.asarray(outputs, dtype=np.float64)

    def decide(self, outputs: Any, *, cutoffs=None, **rule: Any) -> Any:
        """``(B,)`` grade: the number of cut-offs the value exceeds (a value on a cut-off keeps the lower grade)."""
        return _cut(outputs, list(cutoffs) if cutoffs else list(DEFAULT_GRADE_CUTOFFS))

    def decision_rule(self, labels, cutoffs=None, no_disease=None, expected_cutoffs=None) -> str:
        cuts = ", ".join(f"{c:g}" for c in (cutoffs or DEFAULT_GRADE_CUTOFFS))
        return (f"One grade: the number of cut-offs ({cuts}) the regression value exceeds; "
                "the grades exclude each other.")

    def predicted_cells(self, probabilities, thresholds=None, *, every=False) -> list[int]:
        return [0]  # paper 004: the output cell is the "class" explained


def expected_grade(probabilities: Any) -> Any:
    """``(B,)`` the expected grade Σ_k k·p_k of ``(B, K)`` class probabilities over ordered grades 0…K−1."""
    torch = _torch_of(probabilities)
    if torch is not None:
        return probabilities @ torch.arange(probabilities.shape[-1], dtype=probabilities.dtype,
                                            device=probabilities.device)
    p = np.asarray(probabilities, dtype=np.float64)
    return p @ np.arange(p.shape[-1], dtype=np.float64)


def _cut(values: Any, cutoffs: Sequence[float]) -> Any:
    """``(B,)`` the number of cut-offs each value exceeds (a value on a cut-off keeps the lower grade)."""
    torch = _torch_of(values)
    if torch is not None:
        limits = torch.as_tensor(list(cutoffs), dtype=values.dtype, device=values.device)
        return (values.reshape(-1, 1) > limits).sum(dim=-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    return (values > np.asarray(list(cutoffs), dtype=np.float64)).sum(-1)


def grade_rule(config: Any) -> dict[str, list[float]]:
    """The grade decision a model config holds, as ``Task.decide`` / ``decision_rule`` keywords: ``cutoffs``
    (grade regression: value cut-offs, ``config.grade_cutoffs``) and ``expected_cutoffs`` (multiclass grader:
    expected-grade cut-offs, ``config.expected_grade_cutoffs``; empty: argmax). Both are fitted on validation
    photos by the DR recipes (``train.metrics.fit_grade_cutoffs``); every decision on a model reads them here."""
    return {"cutoffs": list(getattr(config, "grade_cutoffs", None) or DEFAULT_GRADE_CUTOFFS),
            "expected_cutoffs": list(getattr(config, "expected_grade_cutoffs", None) or [])}


MULTICLASS = Multiclass("multiclass", "single-label classification (softmax)", default_metric="accuracy",
                        default_target=("the predicted class", PREDICTED))
MULTILABEL = Multilabel("multilabel", "multi-label classification (sigmoid, one threshold per label)",
                        default_metric="f1_micro",  # paper 002's score
                        default_target=("all predicted labels (integrated)", ALL_PREDICTED), single_label=False)
GRADE_REGRESSION = GradeRegression("grade-regression", "DR grade regression (one value, graded by cut-offs)",
                                   default_metric="quadratic_kappa",  # paper 004's score
                                   default_target=("the predicted grade", PREDICTED), regression=True)
_BY_NAME = {task.name: task for task in (MULTICLASS, MULTILABEL, GRADE_REGRESSION)}
TASKS = tuple(_BY_NAME)  # the names a config's ``task`` may hold
SINGLE_LABEL_TASKS = tuple(name for name, task in _BY_NAME.items() if task.single_label)


def task_of(task: str | Task) -> Task:
    """The task object of a config's ``task`` name (a Task is returned as it is).

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(task, Task):
        return task
    try:
        return _BY_NAME[task]
    except (KeyError, TypeError):
        raise ValueError(f"task must be one of {TASKS}, got {task!r}") from None


def _exclude_no_disease(probs: Any, thresholds: Sequence[float], over: Any, k: int) -> Any:
    """``over`` with the no-disease label ``k`` and the disease labels made exclusive (``Multilabel.decide``);
    computed in torch (float64 log-odds), numpy in, numpy out."""
    import torch

    as_numpy = _torch_of(probs) is None
    if as_numpy:
        probs, over = torch.from_numpy(np.asarray(probs)), torch.from_numpy(np.asarray(over))
    limits = torch.as_tensor(thresholds, dtype=probs.dtype, device=probs.device)

    def logit(p):
        p = p.double().clamp(_EPS, 1 - _EPS)
        return torch.log(p) - torch.log1p(-p)

    margin = logit(probs) - logit(limits).expand_as(probs)
    disease = torch.ones(over.shape[-1], dtype=torch.bool, device=over.device)
    disease[k] = False
    disease_over = over & disease
    best_disease = torch.where(disease_over, margin, torch.full_like(margin, -torch.inf)).amax(dim=-1)
    conflict = over[..., k] & disease_over.any(dim=-1)
    keep_healthy = margin[..., k] > best_disease
    decided = over.clone()
    decided[conflict & keep_healthy] &= ~disease
    decided[..., k] &= ~(conflict & ~keep_healthy)
    return decided.numpy() if as_numpy else decided
