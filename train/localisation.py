"""A localisation loss on the model's own class activation maps: "right for the right reasons".

Ross, Hughes & Doshi-Velez (2017), "Right for the right reasons: training differentiable models by
constraining their explanations", penalise input gradients outside the annotated evidence; Li, Wu,
Peng, Ernst & Fu (2018), "Tell me where to look: guided attention inference network" (GAIN), train the
attention map itself against pixel annotations where a photo has them. This term does the latter with the
map the explanation engine shows, the CAM of ``explain``:

- ``config.cam == "score_map"`` (paper 001's FCN head): the class score maps at ``config.target_layer``
  (``head.score``) before global pooling; ``"linear"``: Σ_k w_k^c A^k, ``target_layer``'s activations A
  weighted by the ``cam_classifier``'s weights (Zhou et al. 2016), as ``explain.Explainer`` computes it.

For each positive label k of a photo with a lesion region M_k (``train.lesion_masks``, shrunk to the
map's size by "any lesion pixel", dilated by ``dilate`` cells since masks and boxes are coarse)::

    E_k = Σ relu(CAM_k) · (1 − M_k) / (Σ relu(CAM_k) + eps)

the share of the map's energy outside the lesions, averaged over the batch's annotated positive
(photo, label) pairs; a label the photo does not have, or whose region is unknown, adds nothing. Optional
per-label weights w_k scale each pair's E_k before the average (Σ w_k E_k / pairs): small lesions, whose
region a one-cell dilation mostly fills, can be weighted up without raising the term on the others. The loop
adds ``weight · term`` to the classification loss in training (``LoopConfig.localisation``); validation
and early stopping still see the classification loss alone. A map with no positive cell gives E = 0 and
no gradient (the classification loss raises the positive label's map first).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from train.paired_augment import INSIDE, apply_jointly


def region_at(masks: torch.Tensor, size: tuple[int, int], dilate: int = 0) -> torch.Tensor:
    """(B, L, m, m) masks in [0, 1] as (B, L, h, w) {0, 1} regions at a map's size: a cell is inside when
    it holds any lesion (≥ ``INSIDE`` after the augmentation's interpolation), then grown by ``dilate`` cells."""
    region = (F.adaptive_max_pool2d(masks.float(), size) >= INSIDE).float()
    if dilate > 0:
        region = F.max_pool2d(region, 2 * dilate + 1, stride=1, padding=dilate)
    return region


def outside_energy(cam: torch.Tensor, region: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """E = Σ relu(CAM)·(1 − M) / (Σ relu(CAM) + eps) per (photo, label): (B, L, h, w) each → (B, L).

    Raises:
        ValueError: map and region of different shapes.
    """
    if cam.shape != region.shape:
        raise ValueError(f"class maps {tuple(cam.shape)} and lesion regions {tuple(region.shape)} differ")
    energy = F.relu(cam)
    return (energy * (1 - region)).sum(dim=(2, 3)) / (energy.sum(dim=(2, 3)) + eps)


def positives(target: torch.Tensor, labels: int) -> torch.Tensor:
    """(B, L) bool: the labels each photo has (multi-hot > 0.5, NaN = unknown = no; or class indices)."""
    if target.ndim == 1 and not target.is_floating_point():
        return F.one_hot(target.long(), labels).bool()
    if target.ndim == 2 and target.shape[1] == labels:
        return target > 0.5
    raise ValueError(f"the localisation term needs multi-label (B, {labels}) or class-index targets, "
                     f"got {tuple(target.shape)} {target.dtype}")


def localisation_term(cam: torch.Tensor, masks: torch.Tensor, target: torch.Tensor, dilate: int = 1,
                      eps: float = 1e-6, label_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean (weighted) outside energy over the annotated positive (photo, label) pairs; 0 (in the graph) when none.

    Args:
        cam: (B, L, h, w) class maps, differentiable.
        masks: (B, L, m, m) lesion masks in [0, 1]; an all-zero mask is unknown.
        target: the batch's targets (multi-hot with NaN = unknown, or class indices).
        label_weights: (L,) weight of each label's pairs (None: all 1).
    """
    region = region_at(masks.to(cam.device), cam.shape[-2:], dilate)
    pairs = positives(target.to(cam.device), cam.shape[1]) & (region.flatten(2).amax(-1) > 0)
    if not bool(pairs.any()):
        return cam.sum() * 0.0
    energy = outside_energy(cam.float(), region, eps)
    if label_weights is not None:
        energy = energy * label_weights.to(energy.device, energy.dtype)
    return energy[pairs].mean()


def label_weights_from(pairs: Sequence[str], labels: Sequence[str]) -> torch.Tensor | None:
    """``["HM=2", …]`` (the CLI's LABEL=W) as an (L,) weight per label, 1 where not named; None for no pairs.

    Raises:
        ValueError: not LABEL=W, a label the model does not have, a weight below 0, or a label named twice.
    """
    if not pairs:
        return None
    weights = torch.ones(len(labels))
    named: set[str] = set()
    for pair in pairs:
        label, sep, value = pair.partition("=")
        if not sep or label not in labels:
            raise ValueError(f"expected LABEL=WEIGHT with LABEL one of {', '.join(labels)}; got {pair!r}")
        if label in named:
            raise ValueError(f"{label} is weighted twice")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"the weight of {label} is not a number: {value!r}") from None
        if not weight >= 0:
            raise ValueError(f"the weight of {label} must be ≥ 0, got {value}")
        weights[list(labels).index(label)] = weight
        named.add(label)
    return weights


class ClassMaps:
    """Captures a model's CAMs on every forward pass with gradients (a forward hook on ``target_layer``).

    Holds the modules themselves, so it also fires when the layers run inside another module that shares
    them (``train.frozen.TrainedTop``, DDP).

    Raises:
        ValueError: a model whose config defines no CAM (``config.cam`` None: ``cam_reason`` says why).
    """

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        if config.cam not in ("score_map", "linear"):
            why = config.cam_reason or "cam is None"
            raise ValueError(f"{config.arch} has no class activation map to train: {why}")
        self.layer = model.get_submodule(config.target_layer)
        self.weight = model.get_submodule(config.cam_classifier).weight if config.cam == "linear" else None
        self.latest: torch.Tensor | None = None

    def _keep(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            self.latest = output

    @contextmanager
    def capturing(self) -> Iterator["ClassMaps"]:
        handle = self.layer.register_forward_hook(self._keep)
        try:
            yield self
        finally:
            handle.remove()
            self.latest = None

    def take(self) -> torch.Tensor:
        """The last pass's (B, L, h, w) class maps (float32); forgets them.

        Raises:
            RuntimeError: no forward pass with gradients since the last take.
        """
        if self.latest is None:
            raise RuntimeError("no class maps captured: the model did not run its target layer with gradients")
        activations, self.latest = self.latest.float(), None
        if self.weight is None:
            return activations
        return F.conv2d(activations, self.weight.float()[:, :, None, None])  # Σ_k w_k^c A^k for every class c


class _Indexed(Dataset):
    """A training set whose items also carry their index (the loop looks the masks up by it)."""

    def __init__(self, data: Dataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.data[i], i


@dataclass
class LocalisationTerm:
    """What ``train.loop.fit`` needs for the term (``LoopConfig.localisation``).

    The training set brings the masks (``CachedImages.lesions``); the loop: ``with term.training(train_set,
    augment) as (data, augment)``, then per batch ``batch = term.take(batch)`` before the forward pass and
    ``term.loss(target)`` after it.
    """

    maps: ClassMaps
    weight: float = 1.0
    dilate: int = 1
    eps: float = 1e-6
    label_weights: torch.Tensor | None = None  # (L,) per label (``localisation_term``); None: all 1
    _lesions: torch.Tensor | None = field(default=None, repr=False)
    _masks: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def for_model(cls, model: nn.Module, weight: float, dilate: int = 1,
                  label_weights: Sequence[str] = ()) -> "LocalisationTerm":
        """The term on ``model``'s CAM (see ``ClassMaps``); ``label_weights`` as ``label_weights_from`` reads them."""
        if weight < 0 or dilate < 0:
            raise ValueError(f"weight and dilate must be ≥ 0, got {weight} and {dilate}")
        return cls(ClassMaps(model), float(weight), int(dilate),
                   label_weights=label_weights_from(label_weights, model.config.labels))

    @contextmanager
    def training(self, train_set: Dataset, augment: Callable[[torch.Tensor], torch.Tensor]):
        """(indexed training set, augmentation that moves the batch's masks with the photos), hooks on.

        Raises:
            ValueError: a training set without ``lesions`` for each item.
        """
        lesions = getattr(train_set, "lesions", None)
        if lesions is None or len(lesions) != len(train_set):
            raise ValueError("the localisation term needs a training set with lesion masks (CachedImages.lesions, "
                             "train.lesion_masks)")

        def follow(x: torch.Tensor) -> torch.Tensor:
            x, self._masks = apply_jointly(augment, x, self._masks.to(x.device).float())
            return x

        self._lesions = lesions
        try:
            with self.maps.capturing():
                yield _Indexed(train_set), follow
        finally:
            self._lesions = self._masks = None

    def take(self, batch: Any) -> Any:
        """The plain batch; keeps its photos' masks for the augmentation and ``loss``."""
        items, index = batch
        self._masks = self._lesions[index].float()
        return items

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        """The term for the last forward pass, label weights applied, before ``weight`` (the loop multiplies)."""
        masks, self._masks = self._masks, None
        return localisation_term(self.maps.take(), masks, target, self.dilate, self.eps, self.label_weights)
