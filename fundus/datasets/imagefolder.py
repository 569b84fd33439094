"""One folder per class (``root/<class>/<image>``), with an optional folder → label mapping."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Union

from fundus.tasks import MULTICLASS, SINGLE_LABEL_TASKS

from .base import DatasetError, FundusDataset, Sample, check_task, list_images, natural_key, patient_from_stem
from .registry import CLASS, register

FolderLabel = Union[int, str, None]  # class index, class name, or None = leave the folder out
FolderMapping = Union[Mapping[str, FolderLabel], Callable[[str], FolderLabel]]


@register("imagefolder", layout="<class name>/<image>, or <split>/<class name>/<image>", annotation=CLASS, licence="")
def load_imagefolder(
    root: Path,
    split: str = "train",
    *,
    mapping: FolderMapping | None = None,
    labels: list[str] | None = None,
    task: str = MULTICLASS.name,
    meta: Callable[[str, Path], dict] | None = None,
    excluded_reason: str = "folder mapped to None",
) -> FundusDataset:
    """Class folders: ``root/<class name>/<image>``; with ``root/<split>/`` used when it exists.

    Args:
        split: a sub-folder name when the data set has split folders, else "train"/"all" = everything.
        mapping: folder name → class index or class name, or None to leave the folder out: a dict, or a function
            of the folder name (srahim-dr600's grade from its number). Without it, the classes are the folder
            names in natural order.
        labels: class names (needed when ``mapping`` gives indices).
        task: a single-label task (``fundus.tasks.SINGLE_LABEL_TASKS``: a classifier or a grade regression).
        meta: ``fn(folder name, image) -> dict``, a photo's ``meta`` (default: its folder's name).
        excluded_reason: why the photos of a folder mapped to None are left out (``FundusDataset.excluded``).

    The patient id is the file stem without an eye marker (``Patient001_L`` → ``Patient001``).

    Raises:
        DatasetError: a folder missing from ``mapping``, an unknown class name or index, no images.
    """
    check_task(task, SINGLE_LABEL_TASKS, "imagefolder")
    base = root / split if split not in ("train", "all") or (root / split).is_dir() else root
    if not base.is_dir():
        raise FileNotFoundError(f"split folder not found: {base} (no official split here: use split='all' "
                                "and fundus.datasets.patient_split)")
    folders = sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
    if not folders:
        raise DatasetError(f"no class folders in {base}")
    if mapping is None:
        labels = [p.name for p in folders] if labels is None else list(labels)
        mapping = {p.name: p.name for p in folders}
    label_of = mapping if callable(mapping) else _entry_of(mapping)
    samples, excluded = [], []
    for folder in folders:
        index = _class_index(label_of(folder.name), labels, folder.name)
        for image in list_images(folder):
            if index is None:
                excluded.append((image, excluded_reason))
                continue
            info = meta(folder.name, image) if meta else {"folder": folder.name}
            samples.append(Sample(image, index, patient_id=patient_from_stem(image.stem), meta=info))
    if not samples:
        raise DatasetError(f"no images found under {base}")
    return FundusDataset("imagefolder", root, split, samples, list(labels), task, excluded)


def _entry_of(mapping: Mapping[str, FolderLabel]) -> Callable[[str], FolderLabel]:
    def entry(folder: str) -> FolderLabel:
        if folder not in mapping:
            raise DatasetError(f"class folder {folder!r} has no entry in the mapping")
        return mapping[folder]

    return entry


def _class_index(value: FolderLabel, labels: list[str] | None, folder: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        if labels is None or value not in labels:
            raise DatasetError(f"folder {folder!r} maps to unknown class {value!r} (labels: {labels})")
        return labels.index(value)
    if labels is None:
        raise DatasetError("a mapping to class indices needs labels=[class names]")
    if not 0 <= int(value) < len(labels):
        raise DatasetError(f"folder {folder!r} maps to class index {value}, outside 0–{len(labels) - 1}")
    return int(value)
