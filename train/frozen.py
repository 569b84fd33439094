"""Partial fine-tuning on cached features of frozen early layers (EfficientNet-Lite backbones).

On a CPU the early, high-resolution blocks of a network cost most of a training step while ImageNet
has already taught them what a fine-tuned model would keep (edges, colours, textures). So the stem and
``blocks[:k]`` stay frozen (ImageNet, eval mode) and their outputs are computed **once** per photo and
view; the loop then trains ``blocks[k:]``, ``conv_head``/``bn2`` and the head on those cached features
(``train.loop.fit`` takes feature tensors as they are). The trained top and the frozen bottom are one
ordinary zoo model: the shipped model runs the whole network on the photo.

Augmentation happens before the frozen part, so it is baked into the cache: view 0 of every photo is
the photo as it is, views 1…V−1 are drawn by the recipe's augmentation (flips, ``CameraShift``…).
Each epoch sees every view of every photo (an epoch costs V passes over the photos).

``benchmarks/train_throughput.py`` measures what this saves against full fine-tuning.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from train.augment import identity
from train.data import CachedImages
from train.loop import FitResult, LoopConfig, Stage, fit
from train.metrics import Metric


def lite_parts(model: nn.Module, first_trained: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """(frozen bottom, trained top) modules of a zoo EfficientNet-Lite model split before ``blocks[first_trained]``.

    Raises:
        ValueError: the model is not a zoo backbone + head model with EfficientNet blocks, or the split is out of range.
    """
    backbone = getattr(model, "backbone", None)
    blocks = getattr(backbone, "blocks", None)
    if blocks is None or not hasattr(backbone, "conv_stem") or not hasattr(model, "head"):
        raise ValueError(f"frozen-feature training needs an EfficientNet-Lite backbone, not {type(model).__name__}")
    if not 1 <= first_trained <= len(blocks):
        raise ValueError(f"--frozen-blocks must be in 1..{len(blocks)} for this backbone, got {first_trained}")
    bottom = [backbone.conv_stem, backbone.bn1, *blocks[:first_trained]]
    top = [*blocks[first_trained:], backbone.conv_head, backbone.bn2, model.head]
    return bottom, top


class FrozenBottom(nn.Sequential):
    """Stem and ``blocks[:k]`` of the model (shared modules, not copies)."""

    def __init__(self, model: nn.Module, first_trained: int) -> None:
        super().__init__(*lite_parts(model, first_trained)[0])


class TrainedTop(nn.Sequential):
    """``blocks[k:]``, conv_head, bn2 and the head of the model (shared modules): features → outputs."""

    def __init__(self, model: nn.Module, first_trained: int) -> None:
        super().__init__(*lite_parts(model, first_trained)[1])


@torch.no_grad()
def cache_features(bottom: FrozenBottom, images: CachedImages, mean, std, views: int = 1,
                   augment: Callable[[torch.Tensor], torch.Tensor] | None = None, seed: int = 0,
                   batch_size: int = 32, dtype: torch.dtype = torch.bfloat16, progress: bool = True,
                   forward_batch: int = 4) -> CachedImages:
    """The frozen bottom's outputs for every photo and view, as a data set the loop trains on.

    Args:
        bottom: the frozen part (run in eval mode).
        images: preprocessed photos (uint8).
        mean, std: the model's input normalisation.
        views: views per photo: view 0 as it is, the others through ``augment`` (float [0, 1] batches).
        seed: seeds the augmentation draws (the cache is reproducible).
        dtype: storage type of the features (bf16 halves the memory; the loop computes in fp32).
        batch_size: photos augmented together (the augmentation's draws depend on it).
        forward_batch: photos per forward pass of the bottom: its early, wide activations of 32 photos outgrow the
            CPU's caches (EfficientNet-Lite0 blocks[:4] at 256 px: 0.12 CPU s a photo in batches of 32, 0.05 in
            fours, benchmarks/train_throughput.py; docs/MODELS.md); each photo's features are its own (eval mode).

    Returns:
        ``CachedImages`` whose "images" are feature maps: ``len(images) × views`` items, view-major.
    """
    if views > 1 and augment is None:
        raise ValueError("views > 1 need an augmentation")
    was_training = bottom.training
    bottom.eval()
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    chunks = []
    bar = tqdm(total=len(images) * views, desc="frozen features", disable=not progress, leave=False)
    for view in range(views):
        for start in range(0, len(images), batch_size):
            x = images.images[start:start + batch_size].float().div_(255.0)
            if view > 0:
                x = augment(x)
            x = (x - m) / s
            chunks += [bottom(x[i:i + forward_batch]).to(dtype) for i in range(0, len(x), max(1, forward_batch))]
            bar.update(len(x))
    bar.close()
    torch.random.set_rng_state(generator_state)
    bottom.train(was_training)
    features = torch.cat(chunks) if chunks else torch.zeros((0, 1, 1, 1), dtype=dtype)
    targets = images.targets.repeat((views,) + (1,) * (images.targets.ndim - 1))
    meta = None if images.meta is None else images.meta.repeat(views, 1)
    names = [f"{n}#view{v}" if v else n for v in range(views) for n in images.names] if images.names else []
    return _FeatureSet(features, targets, meta, names)


def fit_on_frozen_features(model: nn.Module, loss: nn.Module, train_set: CachedImages, val_set: CachedImages | None,
                           cfg: LoopConfig, stages: Sequence[Stage], augment: Callable[[torch.Tensor], torch.Tensor],
                           metric: Metric, blocks: int, cached_views: int, progress: bool = True,
                           cache: Callable[..., CachedImages] = cache_features) -> FitResult:
    """``train.loop.fit`` of the trained top of ``model`` on cached features of its frozen bottom (``--frozen-blocks``).

    Args:
        stages: stages of the whole model; what they train of the bottom stays frozen.
        augment: drawn into views 1…V−1 of the cache (V = ``cached_views``; one view without augmentation).
        cache: the training features' cache (``train.frozen_lesions.cache_features_with_lesions`` keeps masks).
    """
    bottom, top = FrozenBottom(model, blocks), TrainedTop(model, blocks)
    views = 1 if augment is identity else max(1, cached_views)  # identical views teach nothing
    common = dict(mean=model.config.mean, std=model.config.std, progress=progress)
    train_feats = cache(bottom, train_set, views=views, augment=augment, seed=cfg.seed, **common)
    val_feats = cache_features(bottom, val_set, **common) if val_set is not None and len(val_set) else val_set
    return fit(top, loss, train_feats, val_feats, cfg, [trains_in_whole_model(s, model) for s in stages],
               metric=metric)


def trains_in_whole_model(stage: Stage, model: nn.Module) -> Stage:
    """A stage of the whole model's parameters as a stage of its trained top (the bottom stays frozen)."""
    choose = stage.trainable
    return stage if choose is None else dataclasses.replace(stage, trainable=lambda _top: choose(model))


class _FeatureSet(CachedImages):
    """``CachedImages`` holding float feature maps instead of uint8 photos."""

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or not self.images.is_floating_point():
            raise ValueError(f"features must be (N, C, H, W) floats, got {tuple(self.images.shape)} {self.images.dtype}")
        if len(self.targets) != len(self.images):
            raise ValueError(f"{len(self.images)} feature maps but {len(self.targets)} targets")
