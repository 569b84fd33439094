"""Which output cells an explanation is taken for, as small objects: ``Predicted``, ``AllPredicted``, ``Classes``
(given classes), ``PerImage`` (one target per image) and ``Decided`` (the model's own decision).

Resolved targets are one list of output indices per image; several indices for one image are combined into an
integrated map (paper 000 eq. 4, paper 001 eq. 4). ``as_target`` turns the older conventions (an int, a list, a
tuple of per-image targets, "predicted", "all-predicted") into these objects.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from fundus.datasets.labels import is_no_disease
from fundus.tasks import finding_thresholds, task_of

TARGET_WORDS = ("predicted", "all-predicted")


def probabilities(model, outputs: torch.Tensor, task: str) -> torch.Tensor:
    """The model's own ``probabilities`` when it has one, else the task's (``fundus.tasks``)."""
    if hasattr(model, "probabilities"):
        return model.probabilities(outputs)
    return task_of(task).probabilities(outputs)


@dataclass(frozen=True)
class TargetContext:
    """What a target is resolved against: one pass's outputs and the model's decision rule."""

    outputs: torch.Tensor  # (B, C) raw outputs
    probabilities: torch.Tensor  # (B, C)
    task: str  # a config's task name (fundus.tasks.TASKS)
    thresholds: Sequence[float] | None = None  # per-class multilabel thresholds (default 0.5)
    model: Any = None  # the model (``Decided`` asks its ``decide``)

    @property
    def batch(self) -> int:
        return self.outputs.shape[0]

    def image(self, index: int) -> "TargetContext":
        """The context of one image of the batch."""
        return replace(self, outputs=self.outputs[index:index + 1], probabilities=self.probabilities[index:index + 1])


class Target:
    """Which output cells an explanation is taken for. ``resolve`` gives one non-empty list of class indices per
    image; several classes of one image are integrated (paper 000 eq. 4, paper 001 eq. 4).

    ``decided_only``: the model chose the classes (its decision), so regions are drawn only for the labels it
    decided (``explain.pipeline.Analysis.region_labels``); a target the user picked gets regions for what he
    picked.
    """

    decided_only: ClassVar[bool] = False

    def resolve(self, context: TargetContext) -> list[list[int]]:
        raise NotImplementedError


@dataclass(frozen=True)
class Predicted(Target):
    """The predicted class (multiclass argmax); multilabel: every label over its threshold, else the top one;
    grade regression: the output cell."""

    def resolve(self, context: TargetContext) -> list[list[int]]:
        task = task_of(context.task)
        return [task.predicted_cells(p, context.thresholds) for p in context.probabilities]


@dataclass(frozen=True)
class AllPredicted(Target):
    """Multilabel: as ``Predicted``; multiclass: every class, most probable first, integrated."""

    def resolve(self, context: TargetContext) -> list[list[int]]:
        task = task_of(context.task)
        return [task.predicted_cells(p, context.thresholds, every=True) for p in context.probabilities]


@dataclass(frozen=True)
class Classes(Target):
    """These classes for every image, integrated when several.

    Raises:
        TypeError: an index that is not an int. ValueError: no index.
    """

    indices: tuple[int, ...]

    def __post_init__(self) -> None:
        indices = self.indices
        if isinstance(indices, bool):
            raise TypeError("target must be an int class index, not a bool")
        if isinstance(indices, int):
            indices = (indices,)
        elif isinstance(indices, Sequence) and not isinstance(indices, str):
            indices = tuple(indices)
        else:
            raise TypeError(f"target must be an int, a list of ints, a tuple of per-image targets or a word, "
                            f"got {type(indices).__name__}")
        if not indices:
            raise ValueError("a list of target classes must not be empty")
        for item in indices:
            if isinstance(item, bool) or not isinstance(item, int):
                raise TypeError(f"target class indices must be ints, got {item!r}")
        object.__setattr__(self, "indices", tuple(dict.fromkeys(indices)))

    def resolve(self, context: TargetContext) -> list[list[int]]:
        num_outputs = context.outputs.shape[1]
        for item in self.indices:
            if not 0 <= item < num_outputs:
                raise ValueError(f"target class {item} out of range for a model with {num_outputs} outputs")
        return [list(self.indices) for _ in range(context.batch)]


@dataclass(frozen=True)
class PerImage(Target):
    """One target per image of the batch (each a Target, an int or a list of ints)."""

    targets: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(as_target(t, per_image=False) for t in self.targets))

    def resolve(self, context: TargetContext) -> list[list[int]]:
        if len(self.targets) != context.batch:
            raise ValueError(f"per-image targets must match the batch size: got {len(self.targets)} for "
                             f"{context.batch} images")
        return [t.resolve(context.image(b))[0] for b, t in enumerate(self.targets)]


@dataclass(frozen=True)
class Decided(Target):
    """The labels the model decides (``model.decide``, exclusive: ``zoo.model.FundusNet.decide`` never lets a
    no-disease label — "healthy", "normal", "No DR", "N" — stand with a disease label), most probable first.

    Args:
        keep_no_disease: when no disease label was decided: True explains the decided no-disease label (the app's
            "all predicted": what that answer rests on), False the most probable disease label instead, so that a
            no-disease label is never explained (``python -m explain --target all-predicted``). With nothing
            decided, the most probable label (a disease label unless ``keep_no_disease``). Grade regression: the
            output cell.
    """

    keep_no_disease: bool = True
    decided_only: ClassVar[bool] = True

    def resolve(self, context: TargetContext) -> list[list[int]]:
        model = context.model
        if model is None or not hasattr(model, "decide"):
            raise TypeError("a Decided target needs a zoo model (one with decide and config)")
        config = model.config
        task = task_of(config.task)
        if task.regression:
            return [task.predicted_cells(p) for p in context.probabilities]
        decisions = model.decide(context.outputs)
        found = []
        for probs, decision in zip(context.probabilities, decisions):
            decided = decision.bool() if decision.dim() else torch.arange(probs.numel()) == int(decision)
            order = sorted(range(probs.numel()), key=lambda i: -float(probs[i]))
            disease = [i for i in order if i >= len(config.labels) or not is_no_disease(config.labels[i])]
            chosen = [i for i in disease if bool(decided[i])]
            if not chosen and self.keep_no_disease:
                chosen = [i for i in order if bool(decided[i])] or order[:1]
            found.append(chosen or disease[:1] or order[:1])
        return found


def as_target(target, *, per_image: bool = True) -> Target:
    """A ``Target`` from a value: a Target as it is; an int or a list of ints (``Classes``); a tuple of per-image
    targets (``PerImage``); "predicted" or "all-predicted".

    Raises:
        ValueError: an unknown word. TypeError: a value of another type.
    """
    if isinstance(target, Target):
        return target
    if isinstance(target, str):
        if target not in TARGET_WORDS:
            raise ValueError(f"target must be an index, a list of indices or one of {TARGET_WORDS}, got {target!r}")
        return Predicted() if target == "predicted" else AllPredicted()
    if isinstance(target, tuple) and per_image:
        return PerImage(target)
    return Classes(target)


def resolve_targets(
    target,
    outputs: torch.Tensor,
    probs: torch.Tensor,
    task: str,
    thresholds: Sequence[float] | None,
    model: Any = None,
) -> list[list[int]]:
    """Turn a target (see ``as_target``) into output indices per image.

    Raises:
        ValueError: unknown word, index out of range, per-image targets not matching the batch.
        TypeError: a target of an unsupported type.
    """
    return as_target(target).resolve(TargetContext(outputs, probs, task, thresholds, model))


def decided_targets(model, x: torch.Tensor, *, keep_no_disease: bool = True) -> list[int]:
    """``Decided(keep_no_disease)`` resolved for one photo by a forward pass of its own (no gradients); an
    ``Explainer.explain`` call with a ``Decided`` target resolves it on its own pass instead.

    Args:
        model: a zoo model (``probabilities``, ``decide`` and ``config``).
        x: (1, 3, H, W) normalised input.
        keep_no_disease: see ``Decided``.
    """
    with torch.no_grad():
        out = model(x)
        probs = model.probabilities(out)
    context = TargetContext(out, probs, model.config.task, finding_thresholds(model.config.thresholds), model)
    return Decided(keep_no_disease).resolve(context)[0]
