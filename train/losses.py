"""Losses of the papers: focal loss (paper 000 eq. 7), class-weighted BCE (paper 001) and CE (paper 003).

All take raw model outputs (logits) and float targets: multi-hot ``(B, C)`` for multilabel, class
indices ``(B,)`` for multiclass.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fundus.tasks import MULTICLASS, MULTILABEL, task_of


def inverse_frequency_weights(counts: Sequence[float] | np.ndarray) -> torch.Tensor:
    """Per-class weights inversely proportional to the class counts, normalised to mean 1.

    Paper 001: "a weight that was inversely proportional to the number of each category"; paper 003:
    "the majority class was given a small weight while the minority classes were given larger weights".
    A class with no example gets the largest weight of the others (it cannot contribute anyway).

    Raises:
        ValueError: empty counts, negative counts, or no class with examples.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D sequence, got shape {c.shape}")
    if (c < 0).any():
        raise ValueError(f"counts must be >= 0, got {c.tolist()}")
    if not (c > 0).any():
        raise ValueError("no class has any example: cannot weight by inverse frequency")
    w = np.zeros_like(c)
    w[c > 0] = 1.0 / c[c > 0]
    w[c == 0] = w.max()
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def class_counts(targets: np.ndarray, num_classes: int, task: str) -> np.ndarray:
    """Positives per class: multi-hot column sums (multilabel) or index histogram (multiclass)."""
    t = np.asarray(targets)
    if task_of(task) is MULTILABEL:
        return t.reshape(-1, num_classes).sum(0).astype(np.float64)
    return np.bincount(t.astype(np.int64).ravel(), minlength=num_classes).astype(np.float64)


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: torch.Tensor | Sequence[float] | None = None,
    gamma: float = 2.0,
    task: str = MULTILABEL.name,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss, paper 000 eq. 7: FL(p_c) = -α_c (1 - p_c)^γ log(p_c), with γ = 2 by default.

    p_c is the probability the model gives the true value of class c: sigmoid per label (multilabel:
    p for a positive, 1 - p for a negative) or softmax of the true class (multiclass). α_c is the
    loss weight of class c (None: all 1). γ = 0 and α = 1 give plain BCE / cross entropy.

    Args:
        logits: (B, C) raw outputs.
        targets: (B, C) multi-hot (multilabel; NaN = unknown, left out) or (B,) class indices (multiclass).
        alpha: (C,) per-class weights.
        gamma: focusing parameter, >= 0.
        task: the ``fundus.tasks`` name of MULTILABEL or MULTICLASS.
        reduction: "mean", "sum" or "none".

    Raises:
        ValueError: bad task, reduction, gamma, or shapes that do not match.
    """
    a = _check_focal_arguments(logits, alpha, gamma, task, reduction)
    if task == MULTILABEL.name:
        loss, known = _multilabel_focal_terms(logits, targets, a, gamma)
        if reduction == "mean":  # the mean over the known entries, like BCE
            return loss.sum() / known.sum().clamp_min(1)
        loss = loss.sum(1) / known.sum(1).clamp_min(1)  # per sample: mean over its known labels
    else:
        idx = targets.long().view(-1)
        if idx.shape[0] != logits.shape[0]:
            raise ValueError(f"multiclass targets must be (B,) with B={logits.shape[0]}, got {tuple(targets.shape)}")
        log_p_true = F.log_softmax(logits, 1).gather(1, idx[:, None]).squeeze(1)
        loss = -((1 - log_p_true.exp()) ** gamma) * log_p_true
        if a is not None:
            loss = loss * a[idx]
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_focal_arguments(logits: torch.Tensor, alpha: torch.Tensor | Sequence[float] | None, gamma: float,
                           task: str, reduction: str) -> torch.Tensor | None:
    """``focal_loss``'s checks; returns α as a tensor on the logits' device (None: no weights)."""
    if task not in (MULTILABEL.name, MULTICLASS.name):
        raise ValueError(f"focal_loss task must be {MULTILABEL.name!r} or {MULTICLASS.name!r}, got {task!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    if alpha is None:
        return None
    a = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
    if a.shape != (logits.shape[1],):
        raise ValueError(f"alpha must have one weight per class ({logits.shape[1]}), got {tuple(a.shape)}")
    return a


def _multilabel_focal_terms(logits: torch.Tensor, targets: torch.Tensor, a: torch.Tensor | None,
                            gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C) focal terms of multi-label targets (0 where unknown) and the mask of the known entries."""
    if targets.shape != logits.shape:
        raise ValueError(f"multilabel targets must match logits {tuple(logits.shape)}, got {tuple(targets.shape)}")
    t = targets.to(logits.dtype)
    known = torch.isfinite(t)  # NaN = a label the photo's data set does not grade: adds nothing (as WeightedBCE)
    log_p_true = -F.binary_cross_entropy_with_logits(logits, torch.where(known, t, torch.zeros_like(t)),
                                                     reduction="none")  # log p_c
    loss = -((1 - log_p_true.exp()) ** gamma) * log_p_true * known
    return (loss * a if a is not None else loss), known


class FocalLoss(nn.Module):
    """``focal_loss`` as a module (α kept as a buffer so it follows ``.to(device)``)."""

    def __init__(self, alpha: Sequence[float] | torch.Tensor | None = None, gamma: float = 2.0,
                 task: str = MULTILABEL.name) -> None:
        super().__init__()
        self.gamma, self.task = float(gamma), task
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, targets, self.alpha, self.gamma, self.task)


class WeightedBCE(nn.Module):
    """Binary cross entropy on sigmoid outputs with one weight per class (paper 001).

    A NaN target means "unknown" (a data set that does not annotate that label) and adds nothing;
    the mean runs over the known entries, so without NaN this is ``BCEWithLogitsLoss(weight=w)``.
    """

    def __init__(self, class_weights: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", w)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.shape != logits.shape:
            raise ValueError(f"targets {tuple(targets.shape)} must match logits {tuple(logits.shape)}")
        t = targets.to(logits.dtype)
        known = torch.isfinite(t)
        loss = F.binary_cross_entropy_with_logits(logits, torch.where(known, t, torch.zeros_like(t)),
                                                  weight=self.class_weights, reduction="none")
        return (loss * known).sum() / known.sum().clamp_min(1)


class WeightedCrossEntropy(nn.Module):
    """Softmax cross entropy with per-class weights (paper 003's class-weighted loss)."""

    def __init__(self, class_weights: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", w)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets.long().view(-1), weight=self.class_weights)
