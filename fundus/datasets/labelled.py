"""The photos of several data sets with their targets in a model's label space (``labels.sample_target``), split
the way training splits them: what ``python -m zoo evaluate``, ``python -m explain evaluate --split`` and
``python -m train ship --also-test`` score.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .labels import sample_target
from .registry import format_of, load_dataset
from .splits import PARTS, SPLIT_SEED, TEST_FRACTION, VAL_FRACTION, train_val_test_split


def load_layout(root: Path, fmt: str, split: str | None = None, *, preset: str | None = None) -> Any:
    """One data set folder in its format (``registry.format_of``: a preset, or a named data set's folder).

    Args:
        split: the layout's own split; None: the format's default (its first official split, else the whole folder).
        preset: a data set read in ``fmt``'s layout (``imagefolder`` + srahim-dr600).
    """
    spec = format_of(fmt, root, preset=preset)
    return load_dataset(spec.name, root, split or spec.default_split)


@dataclass
class LabelledPhoto:
    """A photo with its target in the model's label space (what ``ImageDataset`` reads)."""

    image: Path
    label: Any  # int class, float grade, or float32 multi-hot (NaN: unknown)
    patient_id: str  # "<data set folder>:<patient>": patients of two data sets never merge
    source: str  # the data set's folder name


def labelled_photos(data: Sequence[Path], formats: Sequence[str], labels: Sequence[str], task: str, *,
                    split: str = "all", preset: str | None = None, limit: int | None = None,
                    val_fraction: float = VAL_FRACTION, test_fraction: float = TEST_FRACTION,
                    seed: int = SPLIT_SEED) -> list[LabelledPhoto]:
    """The photos of every (data folder, format) pair that have a target for these labels, split as asked.

    Args:
        data, formats: the data set folders and their formats (one format for all, or one per folder).
        labels, task: the model's (``config.labels``, ``config.task``).
        split: "all"; "train", "val" or "test" (``PARTS``: each source's part of the patients, as training draws
            it with ``val_fraction``, ``test_fraction`` and ``seed``); else a split of the layouts' own.
        preset: an imagefolder preset.
        limit: only the first N photos (before a ``PARTS`` split).

    Raises:
        ValueError: data/format counts that do not pair, or no photo with a target.
    """
    formats = list(formats) * len(data) if len(formats) == 1 else list(formats)
    if len(formats) != len(data):
        raise ValueError(f"{len(data)} --data but {len(formats)} --format: give one, or one per --data")
    own_split = split not in ("all", *PARTS)
    photos: list[LabelledPhoto] = []
    for root, fmt in zip(data, formats):
        ds = load_layout(root, fmt, split if own_split else None, preset=preset)
        name = Path(ds.root).name
        for s in ds:
            target = sample_target(s, ds, labels, task)
            if target is not None:
                photos.append(LabelledPhoto(Path(s.image), target, f"{name}:{s.patient_id or Path(s.image).stem}",
                                            name))
    if limit:
        photos = photos[:limit]
    if split in PARTS and len(photos) > 1:
        parts = train_val_test_split([_Stratified(p) for p in photos], val_fraction=val_fraction,
                                     test_fraction=test_fraction, seed=seed)
        photos = [s.photo for s in parts[split]]
    if not photos:
        raise ValueError(f"no photo in {', '.join(map(str, data))} has a target for this model's labels "
                         f"({', '.join(labels)})")
    return photos


class _Stratified:
    """A photo as the split reads it: ``.label`` (NaN: unknown = absent), ``.patient_id`` and ``.source``."""

    def __init__(self, photo: LabelledPhoto) -> None:
        self.photo, self.patient_id, self.source = photo, photo.patient_id, photo.source
        self.label = np.nan_to_num(photo.label) if isinstance(photo.label, np.ndarray) else photo.label
