"""Which output cells an explanation is taken for: class indices, "predicted", "all-predicted".

Resolved targets are one list of output indices per image; several indices for one image are
combined into an integrated map (paper 000 eq. 4, paper 001 eq. 4).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

TARGET_WORDS = ("predicted", "all-predicted")


def probabilities(model, outputs: torch.Tensor, task: str) -> torch.Tensor:
    """The model's own ``probabilities`` when it has one, else softmax / sigmoid / identity by task."""
    if hasattr(model, "probabilities"):
        return model.probabilities(outputs)
    if task == "multilabel":
        return torch.sigmoid(outputs)
    if task == "grade-regression":
        return outputs
    return torch.softmax(outputs, dim=1)


def resolve_targets(
    target,
    outputs: torch.Tensor,
    probs: torch.Tensor,
    task: str,
    thresholds: Sequence[float] | None,
) -> list[list[int]]:
    """Turn a user target into output indices per image.

    Args:
        target: an int (one class for every image); a list of ints (these classes for every image,
            integrated); a list of per-image ints/lists whose length is the batch size given as a
            tuple; "predicted" (argmax for multiclass, every class over its threshold for
            multilabel, falling back to the top one; the output cell for grade regression);
            "all-predicted" (multilabel: as "predicted"; multiclass: every class, integrated).
        outputs: (B, C) raw outputs.
        probs: (B, C) probabilities.
        task: "multiclass", "multilabel" or "grade-regression".
        thresholds: per-class decision thresholds for multilabel (default 0.5).

    Returns:
        One non-empty list of output indices per image.

    Raises:
        ValueError: unknown word, index out of range, per-image targets not matching the batch.
        TypeError: a target of an unsupported type.
    """
    batch, num_outputs = outputs.shape
    if isinstance(target, str):
        if target not in TARGET_WORDS:
            raise ValueError(f"target must be an index, a list of indices or one of {TARGET_WORDS}, got {target!r}")
        return [_predicted(probs[b], task, thresholds, integrated=target == "all-predicted") for b in range(batch)]
    if isinstance(target, tuple):  # per-image targets
        if len(target) != batch:
            raise ValueError(f"per-image targets must match the batch size: got {len(target)} for {batch} images")
        return [_indices(t, num_outputs) for t in target]
    return [_indices(target, num_outputs) for _ in range(batch)]


def _indices(target, num_outputs: int) -> list[int]:
    if isinstance(target, bool):
        raise TypeError("target must be an int class index, not a bool")
    if isinstance(target, int):
        items = [target]
    elif isinstance(target, Sequence) and not isinstance(target, str):
        items = list(target)
        if not items:
            raise ValueError("a list of target classes must not be empty")
    else:
        raise TypeError(f"target must be an int, a list of ints, a tuple of per-image targets or a word, got {type(target).__name__}")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"target class indices must be ints, got {item!r}")
        if not 0 <= item < num_outputs:
            raise ValueError(f"target class {item} out of range for a model with {num_outputs} outputs")
        if item not in out:
            out.append(item)
    return out


def _predicted(probs: torch.Tensor, task: str, thresholds, integrated: bool) -> list[int]:
    if task == "grade-regression":
        return [0]  # paper 004: the output cell is the "class" explained
    if task == "multilabel":
        if thresholds and len(thresholds) != probs.numel():
            raise ValueError(f"got {len(thresholds)} multilabel thresholds for {probs.numel()} outputs")
        limits = torch.as_tensor(list(thresholds) if thresholds else [0.5] * probs.numel(), dtype=probs.dtype)
        passing = [int(i) for i in torch.nonzero(probs >= limits).flatten()]
        passing.sort(key=lambda i: -float(probs[i]))
        return passing or [int(probs.argmax())]
    if integrated:
        return sorted(range(probs.numel()), key=lambda i: -float(probs[i]))
    return [int(probs.argmax())]


def decided_targets(model, x: torch.Tensor, *, keep_no_disease: bool = True) -> list[int]:
    """The classes "all predicted" explains for one photo under the model's own exclusive decision.

    ``model.decide`` (``zoo.model.FundusNet.decide``, exclusive) never lets a no-disease label ("healthy",
    "normal", "No DR", "N": ``zoo.model.is_no_disease``) stand together with a disease label, whereas the engine's
    own "all-predicted" takes every label over its threshold. One forward pass without gradients.

    Args:
        model: a zoo model (``probabilities``, ``decide`` and ``config``).
        x: (1, 3, H, W) normalised input.
        keep_no_disease: when no disease label was decided: True explains the decided no-disease label (the
            app: what that answer rests on); False explains the most probable disease label instead, so a
            no-disease label is never explained (``python -m explain --target all-predicted``).

    Returns:
        The decided disease labels' indices, most probable first; else as ``keep_no_disease`` says; with nothing
        decided, the most probable label (disease label unless ``keep_no_disease``). ``[0]`` for grade regression
        (its output cell).
    """
    from zoo.model import is_no_disease

    config = model.config
    if config.task == "grade-regression":
        return [0]
    with torch.no_grad():
        out = model(x)
        probs = model.probabilities(out)[0]
        decision = model.decide(out)[0]
    decided = decision.bool() if decision.dim() else torch.arange(probs.numel()) == int(decision)
    order = sorted(range(probs.numel()), key=lambda i: -float(probs[i]))
    disease = [i for i in order if i >= len(config.labels) or not is_no_disease(config.labels[i])]
    chosen = [i for i in disease if bool(decided[i])]
    if chosen:
        return chosen
    if keep_no_disease:
        return [i for i in order if bool(decided[i])] or order[:1]
    return disease[:1] or order[:1]
