"""What one training run is made of, shared by the recipes (``train.recipes``) and the report
(``train.report``): the labelled photos, the prepared data sets, the flags as JSON.

Both import it, it imports neither: the recipes publish through the report, the report never imports
the recipes.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from train.data import CachedImages


@dataclass
class LabelledSample:
    """One training photo as a recipe sees it."""

    image: Path
    target: Any  # class index (multiclass), multi-hot float array (multilabel, NaN = unknown), grade value
    patient_id: str
    source: str = ""  # data set it came from (for the model card)
    meta: np.ndarray | None = None  # e.g. (age, sex) for paper 002's metadata input

    @property
    def label(self) -> Any:
        """The target as ``fundus.datasets.patient_split`` reads it (unknown labels count as absent)."""
        t = self.target
        return np.nan_to_num(np.asarray(t, dtype=np.float32)) if isinstance(t, np.ndarray) else t


@dataclass
class PreparedData:
    """Everything ``fit`` and ``publish`` need about the data."""

    labels: list[str]
    train: CachedImages
    val: CachedImages
    train_samples: list[LabelledSample]
    val_samples: list[LabelledSample]
    unreadable: dict[str, str] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)


def describe_args(args: argparse.Namespace) -> dict[str, Any]:
    """JSON-friendly view of parsed flags (for training/args.json)."""
    return {k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, list) else v)
            for k, v in vars(args).items()}
