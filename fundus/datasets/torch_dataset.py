"""A torch ``Dataset`` over ``Sample`` rows that never crashes mid-epoch on a bad photo."""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from ..imageio import ImageError, load_image
from .base import Sample

log = logging.getLogger("fundus.datasets")
_COUNTER_SLOTS = 65  # the main process + up to 64 workers, each counting in its own slot


class ImageDataset(Dataset):
    """Reads each sample's photo with :func:`fundus.load_image` and returns ``(transform(rgb), target)``.

    An unreadable photo (corrupt, truncated, missing, too large…) is logged, counted in
    :attr:`skipped` and returned as ``None``; :func:`collate_skip_none` drops it from the batch.
    The counter is a shared-memory tensor with one slot per process (the main one and each
    DataLoader worker, fork or spawn), so workers add to the same count without a lock.

    Args:
        samples: the samples (e.g. ``load_dataset(...).samples`` or one part of a split).
        transform: ``rgb (H, W, 3) uint8 -> x``; default: the array itself.
        target_transform: applied to the target tensor.
        max_pixels, max_bytes: passed to :func:`fundus.load_image`.

    Targets: int64 scalar for a class/grade, float32 vector for multi-hot, -1 when unlabelled.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[np.ndarray], Any] | None = None,
        *,
        target_transform: Callable[[torch.Tensor], Any] | None = None,
        **load_kwargs: Any,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.target_transform = target_transform
        self.load_kwargs = load_kwargs
        self._skipped = torch.zeros(_COUNTER_SLOTS, dtype=torch.int64).share_memory_()
        self.skipped_paths: list[str] = []  # this process only (workers keep their own)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def skipped(self) -> int:
        """Photos skipped so far, in this process and its DataLoader workers."""
        return int(self._skipped.sum())

    def __getitem__(self, index: int):
        sample = self.samples[index]
        try:
            rgb = load_image(sample.image, **self.load_kwargs)
        except (ImageError, OSError) as exc:
            worker = get_worker_info()
            self._skipped[0 if worker is None else 1 + worker.id % (_COUNTER_SLOTS - 1)] += 1
            self.skipped_paths.append(str(sample.image))
            log.warning("skipping unreadable image %s: %s", sample.image, exc)
            return None
        x = self.transform(rgb) if self.transform is not None else rgb
        target = target_tensor(sample.label)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return x, target


def target_tensor(label: Any) -> torch.Tensor:
    if label is None:
        return torch.tensor(-1, dtype=torch.int64)
    if isinstance(label, np.ndarray):
        return torch.from_numpy(label.astype(np.float32))
    return torch.tensor(int(label), dtype=torch.int64)


def collate_skip_none(batch: list) -> Any:
    """``default_collate`` without the ``None`` items of skipped photos; ``None`` if all were skipped."""
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    return default_collate(kept)
