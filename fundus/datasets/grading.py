"""DR grading layouts read from a CSV: APTOS 2019, Kaggle EyePACS 2015, IDRiD "B. Disease Grading"."""
from __future__ import annotations

import re
from pathlib import Path

from fundus.tasks import MULTICLASS, SINGLE_LABEL_TASKS

from .base import DatasetError, FundusDataset, Sample, check_images, check_task, parse_int, read_csv
from .idrid_seg import IDRID_LICENCE
from .labels import DR_GRADES
from .registry import DR_GRADE, register


def _grade(value: str, column: str, path: Path, row: int) -> int:
    grade = parse_int(value, column, path, row)
    if not 0 <= grade <= 4:
        raise DatasetError(f"{path.name} row {row}: {column!r} must be a DR grade 0–4, got {value!r}")
    return grade


APTOS_EXTENSIONS = (".png", ".jpg", ".jpeg")  # the official set is PNG; redistributions are often JPEG


def _aptos_image(folder: Path, id_code: str) -> Path:
    """``<id_code>.png``, else the first of ``APTOS_EXTENSIONS`` present (the PNG path when none is)."""
    for ext in APTOS_EXTENSIONS:
        path = folder / f"{id_code}{ext}"
        if path.is_file():
            return path
    return folder / f"{id_code}{APTOS_EXTENSIONS[0]}"


@register("aptos", layout="<split>.csv (id_code,diagnosis) + <split>_images/<id_code>.png|.jpg", annotation=DR_GRADE,
          licence="APTOS 2019 competition rules (Kaggle)", splits=("train", "test"), title="APTOS 2019")
def load_aptos(
    root: Path, split: str = "train", *, task: str = MULTICLASS.name, missing: str = "error",
    group_duplicates: bool = True,
) -> FundusDataset:
    """APTOS 2019 Blindness Detection: ``{split}.csv`` (``id_code,diagnosis``) + ``{split}_images/<id_code>.png``
    (or ``.jpg`` / ``.jpeg``: ``APTOS_EXTENSIONS``).

    Args:
        split: "train" or "test" (test.csv has no ``diagnosis``: labels are None).
        task: a single-label task (``fundus.tasks.SINGLE_LABEL_TASKS``: a grader or a grade regression; the
            same labels, the grade).
        missing: "error" or "skip" for images listed but absent.
        group_duplicates: near-duplicate photos share a patient id (``fundus.datasets.duplicates``).

    APTOS gives no patient ids, and holds near-duplicate photos of one eye: each group of near-duplicates
    (perceptual hashes, ``near_duplicate_groups``; reads every photo once per process) is one patient, named by
    its first ``id_code`` in sorted order and listed in ``meta["duplicates"]``; a photo without one is its own
    patient.
    """
    check_task(task, SINGLE_LABEL_TASKS, "aptos")
    if split not in ("train", "test"):
        raise ValueError(f"aptos: split must be 'train' or 'test', got {split!r}")
    csv_path = root / f"{split}.csv"
    rows = read_csv(csv_path, ["id_code"] + (["diagnosis"] if split == "train" else []))
    samples = []
    for i, row in enumerate(rows, start=2):
        label = _grade(row["diagnosis"], "diagnosis", csv_path, i) if row.get("diagnosis", "") != "" else None
        samples.append(Sample(_aptos_image(root / f"{split}_images", row["id_code"]), label,
                              patient_id=row["id_code"]))
    samples, excluded = check_images(samples, missing, csv_path.name)
    if group_duplicates:
        _group_near_duplicates(samples)
    return FundusDataset("aptos", root, split, samples, list(DR_GRADES), task, excluded)


def _group_near_duplicates(samples: list[Sample]) -> None:
    """Give each group of near-duplicate photos one patient id (in place; ``load_aptos``)."""
    from .duplicates import near_duplicate_groups

    groups = near_duplicate_groups([s.image for s in samples])
    members: dict[int, list[str]] = {}
    for sample, group in zip(samples, groups.tolist()):
        members.setdefault(group, []).append(sample.patient_id)
    for sample, group in zip(samples, groups.tolist()):
        ids = sorted(members[group])
        if len(ids) > 1:
            sample.patient_id = ids[0]
            sample.meta["duplicates"] = ids


_EYEPACS_NAME = re.compile(r"^(\d+)_(left|right)$")


@register("eyepacs", layout="trainLabels.csv (image,level) + train/<image>.jpeg; retinopathy_solution.csv + test/",
          annotation=DR_GRADE, splits=("train", "test"),
          licence="EyePACS photos under the Kaggle Diabetic Retinopathy Detection competition terms, research use",
          title="EyePACS")
def load_eyepacs(
    root: Path, split: str = "train", *, task: str = MULTICLASS.name, missing: str = "error"
) -> FundusDataset:
    """Kaggle Diabetic Retinopathy Detection (EyePACS 2015).

    train: ``trainLabels.csv`` (``image,level``) + ``train/<image>.jpeg``;
    test: ``retinopathy_solution.csv`` (``image,level,Usage``) + ``test/<image>.jpeg``.
    The patient id is the number before ``_left``/``_right``.
    """
    check_task(task, SINGLE_LABEL_TASKS, "eyepacs")
    files = {"train": ("trainLabels.csv", "train"), "test": ("retinopathy_solution.csv", "test")}
    if split not in files:
        raise ValueError(f"eyepacs: split must be 'train' or 'test', got {split!r}")
    csv_name, folder = files[split]
    csv_path = root / csv_name
    rows = read_csv(csv_path, ["image", "level"])
    samples = []
    for i, row in enumerate(rows, start=2):
        match = _EYEPACS_NAME.match(row["image"])
        if match is None:
            raise DatasetError(f"{csv_name} row {i}: image {row['image']!r} is not '<patient>_left|right'")
        meta = {"eye": match.group(2)}
        if "Usage" in row:
            meta["usage"] = row["Usage"]
        samples.append(Sample(root / folder / f"{row['image']}.jpeg", _grade(row["level"], "level", csv_path, i),
                              patient_id=match.group(1), meta=meta))
    samples, excluded = check_images(samples, missing, csv_name)
    return FundusDataset("eyepacs", root, split, samples, list(DR_GRADES), task, excluded)


IDRID_GRADING = "B. Disease Grading"
_IDRID_GRADING_SPLITS = {
    "train": ("a. IDRiD_Disease Grading_Training Labels.csv", "a. Training Set"),
    "test": ("b. IDRiD_Disease Grading_Testing Labels.csv", "b. Testing Set"),
}


@register("idrid-grading", layout="B. Disease Grading/2. Groundtruths/<a|b>. IDRiD_Disease Grading_<…> Labels.csv + "
                                 "1. Original Images/<a. Training|b. Testing> Set/<Image name>.jpg",
          annotation=DR_GRADE, licence=IDRID_LICENCE, splits=tuple(_IDRID_GRADING_SPLITS), title="IDRiD")
def load_idrid_grading(
    root: Path, split: str = "train", *, task: str = MULTICLASS.name, missing: str = "error"
) -> FundusDataset:
    """IDRiD disease grading: ``B. Disease Grading/2. Groundtruths/<a|b>. IDRiD_Disease Grading_<Training|Testing> Labels.csv``
    (``Image name,Retinopathy grade,Risk of macular edema `` — the official header's trailing space
    is tolerated) + ``B. Disease Grading/1. Original Images/<a. Training|b. Testing> Set/<Image name>.jpg``.

    ``root`` is the IDRiD folder or its ``B. Disease Grading`` folder. The macular-oedema risk (0–2)
    goes to ``meta["macular_edema_risk"]``. IDRiD gives no patient ids: one image, one patient.
    """
    check_task(task, SINGLE_LABEL_TASKS, "idrid-grading")
    if split not in _IDRID_GRADING_SPLITS:
        raise ValueError(f"idrid-grading: split must be 'train' or 'test', got {split!r}")
    base = root if root.name == IDRID_GRADING else root / IDRID_GRADING
    csv_name, image_set = _IDRID_GRADING_SPLITS[split]
    csv_path = base / "2. Groundtruths" / csv_name
    rows = read_csv(csv_path, ["Image name", "Retinopathy grade", "Risk of macular edema"])
    samples = []
    for i, row in enumerate(rows, start=2):
        name = row["Image name"]
        if not name:
            continue
        risk = parse_int(row["Risk of macular edema"], "Risk of macular edema", csv_path, i)
        samples.append(Sample(base / "1. Original Images" / image_set / f"{name}.jpg",
                              _grade(row["Retinopathy grade"], "Retinopathy grade", csv_path, i),
                              patient_id=name, meta={"macular_edema_risk": risk}))
    samples, excluded = check_images(samples, missing, csv_name)
    return FundusDataset("idrid-grading", root, split, samples, list(DR_GRADES), task, excluded)
