"""One folder per class (``root/<class>/<image>``), with an optional folder → label mapping and presets."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Union

from fundus.tasks import MULTICLASS, SINGLE_LABEL_TASKS

from .base import DatasetError, FundusDataset, Sample, check_task, list_images, natural_key, patient_from_stem
from .labels import DR_GRADES
from .registry import register

FolderLabel = Union[int, str, None]  # class index, class name, or None = leave the folder out


def _srahim_grade(folder: str) -> int | None:
    """srahim-dr600: folder "1 - No DR" → 0, 2–3 → 1, 4–5 → 2, 6–7 → 3, 8–9 → 4; 10 (ADED) has no grade."""
    match = re.match(r"\s*(\d+)", folder)
    if match is None:
        raise DatasetError(f"srahim-dr600: folder {folder!r} does not start with its class number (1–10)")
    number = int(match.group(1))
    if not 1 <= number <= 10:
        raise DatasetError(f"srahim-dr600: unknown class folder {folder!r} (expected 1–10)")
    return None if number == 10 else number // 2


def _srahim_meta(folder: str, image: Path) -> dict:
    lowered = folder.lower()
    return {
        "folder": folder,
        "maculopathy": "with maculopathy" in lowered,
        "eye": {"L": "left", "R": "right"}.get(image.stem.rsplit("_", 1)[-1].upper(), ""),
    }


PRESETS = {
    "srahim-dr600": {
        "labels": DR_GRADES,
        "grade": _srahim_grade,
        "meta": _srahim_meta,
        "excluded_reason": "ADED (advanced diabetic eye disease) has no DR grade",
    },
}


@register("imagefolder")
def load_imagefolder(
    root: Path,
    split: str = "train",
    *,
    mapping: Mapping[str, FolderLabel] | None = None,
    labels: list[str] | None = None,
    preset: str | None = None,
    task: str = MULTICLASS.name,
) -> FundusDataset:
    """Class folders: ``root/<class name>/<image>``; with ``root/<split>/`` used when it exists.

    Args:
        split: a sub-folder name when the data set has split folders, else "train"/"all" = everything.
        mapping: folder name → class index or class name, or None to leave the folder out. Without
            it, the classes are the folder names in natural order.
        labels: class names (needed when ``mapping`` gives indices).
        preset: "srahim-dr600": folders 1–9 → DR grades 0–4, folder 10 (ADED) left out,
            ``meta["maculopathy"]`` from the folder name.
        task: a single-label task (``fundus.tasks.SINGLE_LABEL_TASKS``: a classifier or a grade regression).

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
    meta_fn = None
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown imagefolder preset {preset!r}; known: {', '.join(PRESETS)}")
        spec = PRESETS[preset]
        labels = list(spec["labels"])
        folder_label = {p.name: spec["grade"](p.name) for p in folders}
        meta_fn = spec["meta"]
        reason = spec["excluded_reason"]
    else:
        reason = "folder mapped to None"
        if mapping is None:
            labels = [p.name for p in folders] if labels is None else list(labels)
            mapping = {p.name: p.name for p in folders}
        folder_label = {}
        for p in folders:
            if p.name not in mapping:
                raise DatasetError(f"class folder {p.name!r} has no entry in the mapping")
            folder_label[p.name] = _class_index(mapping[p.name], labels, p.name)
    samples, excluded = [], []
    for folder in folders:
        index = folder_label[folder.name]
        for image in list_images(folder):
            if index is None:
                excluded.append((image, reason))
                continue
            meta = meta_fn(folder.name, image) if meta_fn else {"folder": folder.name}
            samples.append(Sample(image, index, patient_id=patient_from_stem(image.stem), meta=meta))
    if not samples:
        raise DatasetError(f"no images found under {base}")
    return FundusDataset("imagefolder", root, split, samples, list(labels), task, excluded)


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
