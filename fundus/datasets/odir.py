"""ODIR-5K (Ocular Disease Intelligent Recognition): 8 patient-level labels, age and sex."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fundus.tasks import MULTILABEL

from .base import DatasetError, FundusDataset, Sample, check_images, parse_int, read_csv, require_columns, require_dir
from .registry import DIAGNOSES, register

ODIR_LABELS = ("N", "D", "G", "C", "A", "H", "M", "O")
ODIR_LABEL_NAMES = {
    "N": "Normal", "D": "Diabetes", "G": "Glaucoma", "C": "Cataract", "A": "AMD",
    "H": "Hypertension", "M": "Myopia", "O": "Other diseases/abnormalities",
}  # fmt: skip
ODIR_LICENCE = "ODIR-5K terms, research use (Peking University)"
ODIR_COLUMNS = ("ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus",
                "Left-Diagnostic Keywords", "Right-Diagnostic Keywords") + ODIR_LABELS


def _find(root: Path, names: tuple[str, ...], what: str, is_dir: bool = False) -> Path:
    """The first existing ``root/name`` or ``root/ODIR-5K/name`` (the Kaggle archive nests it)."""
    for base in (root, root / "ODIR-5K", root / "ODIR-5K" / "ODIR-5K"):
        for name in names:
            path = base / name
            if path.is_dir() if is_dir else path.is_file():
                return path
    raise FileNotFoundError(f"ODIR-5K {what} not found in {root} (looked for {', '.join(names)})")


def _read_rows(path: Path) -> list[dict[str, str]]:
    if path.suffix.lower() == ".csv":
        return read_csv(path, ODIR_COLUMNS)
    import pandas as pd  # only the official .xlsx needs it

    frame = pd.read_excel(path, dtype=str).fillna("")
    frame.columns = [str(c).strip() for c in frame.columns]
    require_columns(list(frame.columns), ODIR_COLUMNS, path)
    return [{k: str(v).strip() for k, v in row.items()} for row in frame.to_dict("records")]


@register("odir", layout="full_df.csv (Kaggle) or data.xlsx (official): ID, age, sex, both eyes' files, N D G C A H M O "
                         "+ Training Images/", annotation=DIAGNOSES, licence=ODIR_LICENCE, splits=("train",),
          title="ODIR-5K")
def load_odir(root: Path, split: str = "train", *, annotations: str | Path | None = None,
              images: str | Path | None = None, missing: str = "error") -> FundusDataset:
    """ODIR-5K: ``full_df.csv`` (Kaggle) or ``data.xlsx`` (official) with ``ID,Patient Age,Patient Sex,
    Left-Fundus,Right-Fundus,Left-Diagnostic Keywords,Right-Diagnostic Keywords,N,D,G,C,A,H,M,O``
    + ``Training Images/``.

    One sample per eye; the 8 labels are the patient's (as annotated by ODIR). ``meta`` keeps
    ``age``, ``sex``, ``eye`` and that eye's ``keywords``. Patient id = ``ID``: both eyes stay together.

    Args:
        split: "train" (ODIR-5K published labels for its training set only).
        annotations: path of the annotation file (default: found in ``root``).
        images: the image folder (default ``Training Images``).
        missing: "error" or "skip" for images listed but absent.
    """
    if split != "train":
        raise ValueError(f"odir: only split='train' has published labels, got {split!r}")
    # full_df.csv (Kaggle), data.xlsx (Kaggle's copy of the official file), or the official name.
    table = Path(annotations) if annotations else _find(
        root, ("full_df.csv", "data.xlsx", "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"), "annotation file")
    if not table.is_file():
        raise FileNotFoundError(f"ODIR-5K annotation file not found: {table}")
    if images:
        image_dir = require_dir(Path(images), "ODIR-5K image folder")
    else:
        image_dir = _find(root, ("Training Images",), "image folder", is_dir=True)
    samples, seen = [], set()
    for i, row in enumerate(_read_rows(table), start=2):
        patient = row["ID"]
        if patient in seen:  # full_df.csv repeats a patient's row once per eye
            continue
        seen.add(patient)
        label = np.array([parse_int(row[c], c, table, i) for c in ODIR_LABELS], np.float32)
        if not np.isin(label, (0, 1)).all():
            raise DatasetError(f"{table.name} row {i}: label columns N…O must be 0 or 1")
        age = parse_int(row["Patient Age"], "Patient Age", table, i) if row["Patient Age"] else None
        for eye in ("Left", "Right"):
            name = row[f"{eye}-Fundus"]
            if not name:
                continue
            meta = {"age": age, "sex": row["Patient Sex"], "eye": eye.lower(),
                    "keywords": row[f"{eye}-Diagnostic Keywords"]}
            samples.append(Sample(image_dir / name, label.copy(), patient_id=patient, meta=meta))
    samples, excluded = check_images(samples, missing, table.name)
    return FundusDataset("odir", root, split, samples, list(ODIR_LABELS), MULTILABEL.name, excluded)
