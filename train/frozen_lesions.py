"""Frozen-feature training (``train.frozen``, ``--frozen-blocks K``) with the localisation term.

``train.frozen`` bakes the augmentation into its cache: view 0 of each photo plain, views 1…V−1 drawn by
the recipe's augmentation before the frozen bottom runs. The loop never sees those photos again, so the
lesion masks must move when the features are cached: ``cache_features`` calls the augmentation on the
views in order (view-major, batches of consecutive photos), and ``ViewMasks`` is that augmentation,
moving each batch's masks with its photos (``train.paired_augment``) and keeping them in the same order.
The trained top computes the class maps (``head.score`` is in it), so the term works as without K.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

import torch
import torch.nn as nn

from train import augment as aug
from train.data import CachedImages
from train.frozen import FrozenBottom, TrainedTop, cache_features
from train.loop import FitResult, LoopConfig, Stage, fit
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


def _trains_in_whole_model(stage: Stage, model: nn.Module) -> Stage:
    """A stage of the whole model's parameters as a stage of its trained top (the bottom stays frozen)."""
    choose = stage.trainable
    return stage if choose is None else dataclasses.replace(stage, trainable=lambda _top: choose(model))


def fit_frozen_with_lesions(recipe: Any, args: argparse.Namespace, model: nn.Module, train_set: CachedImages,
                            val_set: CachedImages | None, stages: list[Stage], cfg: LoopConfig,
                            augment: Callable[[torch.Tensor], torch.Tensor]) -> FitResult:
    """``Recipe.fit_sets``' ``--frozen-blocks`` path with ``cfg.localisation`` on: the views keep their masks."""
    blocks = args.frozen_blocks
    bottom, top = FrozenBottom(model, blocks), TrainedTop(model, blocks)
    common = dict(mean=model.config.mean, std=model.config.std, progress=not args.quiet)
    views = max(1, args.cached_views) if augment is not aug.identity else 1
    train_feats = cache_features_with_lesions(bottom, train_set, views=views, augment=augment, seed=args.seed,
                                              **common)
    val_feats = val_set if val_set is None or len(val_set) == 0 else cache_features(bottom, val_set, **common)
    return fit(top, recipe.loss(args, train_set.targets.numpy()), train_feats, val_feats, cfg,
               [_trains_in_whole_model(s, model) for s in stages], metric=recipe.metric(args))
