"""Frozen-feature training (``train.frozen``, ``--frozen-blocks K``) with the localisation term.

``train.frozen`` bakes the augmentation into its cache: view 0 of each photo plain, views 1…V−1 drawn by
the recipe's augmentation before the frozen bottom runs. The loop never sees those photos again, so the
lesion masks must move when the features are cached: ``cache_features`` calls the augmentation on the
views in order (view-major, batches of consecutive photos), and ``ViewMasks`` is that augmentation,
moving each batch's masks with its photos (``train.paired_augment``) and keeping them in the same order.
The trained top computes the class maps (``head.score`` is in it), so the term works as without K:
``train.frozen.fit_on_frozen_features(..., cache=cache_features_with_lesions)``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn as nn

from train.data import CachedImages
from train.frozen import cache_features
from train.paired_augment import INSIDE, apply_jointly


class ViewMasks:
    """The augmentation ``cache_features`` runs on views 1…V−1, recording each photo's moved masks."""

    def __init__(self, augment: Callable[[torch.Tensor], torch.Tensor], lesions: torch.Tensor) -> None:
        self.augment, self.lesions = augment, lesions
        self.done = 0
        self.moved: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        start = self.done % len(self.lesions)
        masks = self.lesions[start:start + len(x)].to(x.device).float()
        if len(masks) != len(x):
            raise RuntimeError("cache_features augmented a batch across two views: the masks would not follow")
        x, masks = apply_jointly(self.augment, x, masks)
        self.moved.append((masks >= INSIDE).to(torch.uint8).cpu())
        self.done += len(x)
        return x


def cache_features_with_lesions(bottom: nn.Module, images: CachedImages, mean, std, views: int = 1,
                                augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                                **kwargs: Any) -> CachedImages:
    """``train.frozen.cache_features`` whose result carries each view's lesion masks (``.lesions``).

    Raises:
        ValueError: ``images`` without lesion masks.
    """
    if images.lesions is None:
        raise ValueError("cache_features_with_lesions needs CachedImages with lesions (train.lesion_masks)")
    record = ViewMasks(augment, images.lesions) if views > 1 else None
    feats = cache_features(bottom, images, mean, std, views=views, augment=record, **kwargs)
    moved = record.moved if record is not None else []
    if sum(len(m) for m in moved) != len(images) * (views - 1):
        raise RuntimeError("cache_features did not augment every view once: the masks would not follow")
    return dataclasses.replace(feats, lesions=torch.cat([images.lesions, *moved]))
