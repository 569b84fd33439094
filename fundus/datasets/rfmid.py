"""RFMiD (Retinal Fundus Multi-disease Image Dataset): 45 diseases, multilabel; paper 000's 28 categories."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fundus.tasks import MULTILABEL

from .base import DatasetError, FundusDataset, Sample, check_images, parse_int, read_csv
from .registry import DIAGNOSES, register

# The official label columns after ID and Disease_Risk, in file order.
RFMID_DISEASES = (
    "DR", "ARMD", "MH", "DN", "MYA", "BRVO", "TSLN", "ERM", "LS", "MS", "CSR", "ODC", "CRVO", "TV", "AH", "ODP",
    "ODE", "ST", "AION", "PT", "RT", "RS", "CRS", "EDN", "RPEC", "MHL", "RP", "CWS", "CB", "ODPM", "PRH", "MNF",
    "HR", "CRAO", "TD", "CME", "PTCR", "CF", "VH", "MCA", "VS", "BRAO", "PLQ", "HPED", "CL",
)  # fmt: skip
# Paper 000, Table 1: the 27 diseases it classifies by name; the other 18 are merged into "Others".
PAPER000_NAMED = RFMID_DISEASES[:27]
PAPER000_CATEGORIES = PAPER000_NAMED + ("Others",)
_SPLITS = {
    "train": ("Training_Set", "RFMiD_Training_Labels.csv", "Training"),
    "val": ("Evaluation_Set", "RFMiD_Validation_Labels.csv", "Validation"),
    "test": ("Test_Set", "RFMiD_Testing_Labels.csv", "Test"),
}


def to_paper000(row: np.ndarray) -> np.ndarray:
    """Map a 45-disease multi-hot row (or ``(N, 45)`` rows) to paper 000's 28 categories."""
    row = np.asarray(row, np.float32)
    named = row[..., : len(PAPER000_NAMED)]
    others = row[..., len(PAPER000_NAMED) :].max(axis=-1, keepdims=True)
    return np.concatenate([named, others], axis=-1)


@register("rfmid", layout="<Set>/RFMiD_<Training|Validation|Testing>_Labels.csv (ID,Disease_Risk,DR,ARMD,…) + "
                          "<Set>/<Training|Validation|Test>/<ID>.png", annotation=DIAGNOSES,
          licence="CC BY 4.0 (RFMiD, Pachade et al. 2021)", splits=tuple(_SPLITS), title="RFMiD")
def load_rfmid(root: Path, split: str = "train", *, categories: str = "all", missing: str = "error") -> FundusDataset:
    """RFMiD: ``Training_Set/RFMiD_Training_Labels.csv`` (``ID,Disease_Risk,DR,ARMD,…``) +
    ``Training_Set/Training/<ID>.png``; ``Evaluation_Set/…Validation…``; ``Test_Set/…Testing…/Test``.

    Args:
        split: "train", "val" or "test".
        categories: "all" (the 45 disease columns) or "paper000" (paper 000's 27 named diseases +
            "Others").
        missing: "error" or "skip" for images listed but absent.

    ``meta["disease_risk"]`` keeps the Disease_Risk flag. No patient ids: one image, one patient.
    """
    if split not in _SPLITS:
        raise ValueError(f"rfmid: split must be one of {tuple(_SPLITS)}, got {split!r}")
    if categories not in ("all", "paper000"):
        raise ValueError(f"rfmid: categories must be 'all' or 'paper000', got {categories!r}")
    folder, csv_name, image_folder = _SPLITS[split]
    csv_path = root / folder / csv_name
    rows = read_csv(csv_path, ("ID", "Disease_Risk") + RFMID_DISEASES)
    samples = []
    for i, row in enumerate(rows, start=2):
        values = np.array([parse_int(row[d], d, csv_path, i) for d in RFMID_DISEASES], np.float32)
        if not np.isin(values, (0, 1)).all():
            raise DatasetError(f"{csv_name} row {i}: disease columns must be 0 or 1")
        label = to_paper000(values) if categories == "paper000" else values
        samples.append(Sample(root / folder / image_folder / f"{row['ID']}.png", label, patient_id=row["ID"],
                              meta={"disease_risk": parse_int(row["Disease_Risk"], "Disease_Risk", csv_path, i)}))
    samples, excluded = check_images(samples, missing, csv_name)
    labels = PAPER000_CATEGORIES if categories == "paper000" else RFMID_DISEASES
    return FundusDataset("rfmid", root, split, samples, list(labels), MULTILABEL.name, excluded)
