"""What every data set loader returns: ``Sample`` rows in a ``FundusDataset``, plus shared helpers.

Loaders only read annotations and check that files exist; pixels are read later, by
``ImageDataset`` through ``fundus.load_image``.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

import numpy as np

from fundus.tasks import task_of

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")

Label = Union[int, np.ndarray, None]
Box = tuple[str, float, float, float, float]


class DatasetError(ValueError):
    """An annotation file does not follow its data set's layout (the message names what is wrong)."""


@dataclass
class Sample:
    """One photo of a data set.

    Attributes:
        image: path of the photo.
        label: int class/grade (a single-label task: ``fundus.tasks``), float32 multi-hot array
            (multilabel), or None where the split has no labels.
        masks: lesion type → mask path (segmentation layouts), else None.
        boxes: ``(class_name, x0, y0, x1, y1)`` normalised to [0, 1] (box layouts), else None.
        patient_id: splits never put one patient in two parts.
        meta: anything else the layout gives (eye, age, sex, maculopathy, original label…).
    """

    image: Path
    label: Label
    masks: dict[str, Path] | None = None
    boxes: list[Box] | None = None
    patient_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class FundusDataset:
    """Samples of one split of one data set, with its class names and task."""

    format: str
    root: Path
    split: str
    samples: list[Sample]
    labels: list[str]
    task: str
    excluded: list[tuple[Path, str]] = field(default_factory=list)  # (image, reason) left out on purpose

    def __post_init__(self) -> None:
        task_of(self.task)  # raises ValueError for an unknown task

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def targets(self) -> np.ndarray:
        """``(N,)`` int64 grades/classes (-1 = unlabelled) or ``(N, C)`` float32 multi-hot."""
        if not task_of(self.task).single_label:
            empty = np.zeros(len(self.labels), np.float32)
            return np.stack([s.label if s.label is not None else empty for s in self.samples]).astype(np.float32)
        return np.array([-1 if s.label is None else int(s.label) for s in self.samples], np.int64)

    def class_counts(self) -> dict[str, int]:
        """Number of samples per class (multilabel: per label present)."""
        t = self.targets()
        if not task_of(self.task).single_label:
            counts = t.sum(axis=0) if len(t) else np.zeros(len(self.labels))
        else:
            counts = np.bincount(t[t >= 0], minlength=len(self.labels))
        return {name: int(c) for name, c in zip(self.labels, counts)}

    def patients(self) -> list[str]:
        return sorted({s.patient_id for s in self.samples})


def read_csv(path: Path, required: Sequence[str], *, what: str = "annotation file") -> list[dict[str, str]]:
    """Rows of a CSV as dicts keyed by header names stripped of spaces (IDRiD's header has a
    trailing space), skipping empty columns and blank rows.

    Raises:
        FileNotFoundError: naming the missing file.
        DatasetError: naming each missing column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DatasetError(f"{path.name} is empty (expected columns {', '.join(required)})") from None
        require_columns(header, required, path)
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            rows.append({h: v.strip() for h, v in zip(header, values) if h})
    return rows


def require_columns(header: Sequence[str], required: Sequence[str], path: Path) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        found = ", ".join(repr(h) for h in header if h)
        raise DatasetError(
            f"{Path(path).name}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} (found: {found})"
        )


def parse_int(value: str, column: str, path: Path, row: int) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise DatasetError(
            f"{Path(path).name} row {row}: column {column!r} should be a number, got {value!r}"
        ) from None


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def check_images(samples: list[Sample], missing: str, listed_in: str) -> tuple[list[Sample], list[tuple[Path, str]]]:
    """Keep samples whose image exists; ``missing="error"`` raises naming the first missing files.

    Raises:
        FileNotFoundError: some images are missing and ``missing="error"``.
        ValueError: ``missing`` is not "error" or "skip".
    """
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    present, absent = [], []
    for sample in samples:
        (present if sample.image.is_file() else absent).append(sample)
    if absent and missing == "error":
        names = ", ".join(str(s.image) for s in absent[:3])
        raise FileNotFoundError(
            f"{len(absent)} image{'s' if len(absent) > 1 else ''} listed in {listed_in} "
            f"{'are' if len(absent) > 1 else 'is'} missing: {names}{' …' if len(absent) > 3 else ''} "
            "(pass missing='skip' to leave them out)"
        )
    return present, [(s.image, "image file missing") for s in absent]


def check_task(task: str, allowed: Sequence[str], fmt: str) -> str:
    if task not in allowed:
        raise ValueError(f"{fmt}: task must be one of {tuple(allowed)}, got {task!r}")
    return task


def multi_hot(indices: Sequence[int], size: int) -> np.ndarray:
    out = np.zeros(size, np.float32)
    out[list(indices)] = 1.0
    return out


def natural_key(name: str) -> list:
    """Sort "2 - x" before "10 - y"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


_EYE_SUFFIX = re.compile(r"[_\-\s]?(left|right|l|r|od|os)$", re.IGNORECASE)


def patient_from_stem(stem: str) -> str:
    """Patient id of a file name: the stem without a trailing eye marker (``_L``, ``_right``…)."""
    return _EYE_SUFFIX.sub("", stem) or stem


def list_images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: natural_key(p.name))


Loader = Callable[..., FundusDataset]
