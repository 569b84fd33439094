"""srahim-dr600 (Rahim et al. 2025): 600 photos graded on the International Clinical DR scale, with maculopathy,
one folder per class (``imagefolder`` layout)."""
from __future__ import annotations

import re
from pathlib import Path

from fundus.tasks import MULTICLASS

from .base import DatasetError, FundusDataset
from .imagefolder import load_imagefolder
from .labels import DR_GRADES
from .registry import DR_GRADE, register


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


@register("srahim-dr600", base="imagefolder", annotation=DR_GRADE,
          layout="<N - class name>/PatientNNN_{L,R}.jpg: folders 1–9 are DR grades 0–4 without / with maculopathy, "
                 "10 (ADED) has no grade",
          licence="free for academic use, with attribution (Rahim et al. 2025)")
def load_srahim_dr600(root: Path, split: str = "train", *, task: str = MULTICLASS.name) -> FundusDataset:
    """The class folders as DR grades (folder 10, ADED, left out) with ``meta["maculopathy"]`` and ``meta["eye"]``
    from the folder and file names; both eyes of a patient share its number."""
    return load_imagefolder(root, split, mapping=_srahim_grade, labels=list(DR_GRADES), task=task,
                            meta=_srahim_meta, excluded_reason="ADED (advanced diabetic eye disease) has no DR grade")
