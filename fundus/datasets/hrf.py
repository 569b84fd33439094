"""HRF (High-Resolution Fundus, Budai et al. 2013): ``images/NN_<h|dr|g>.jpg``, the suffix is the diagnosis."""
from __future__ import annotations

import re
from pathlib import Path

from fundus.tasks import MULTICLASS

from .base import DatasetError, FundusDataset, Sample, list_images, require_dir
from .registry import CLASS, register

HRF_LABELS = ("healthy", "DR", "glaucoma")
_SUFFIX = {"h": 0, "dr": 1, "g": 2}
_NAME = re.compile(r"^(\d+)_(h|dr|g)$", re.IGNORECASE)


@register("hrf", layout="images/NN_<h|dr|g>.jpg: the suffix is the diagnosis", annotation=CLASS,
          licence="CC BY 4.0 (HRF, Budai et al. 2013)", title="HRF")
def load_hrf(root: Path, split: str = "train") -> FundusDataset:
    """HRF: multiclass healthy / DR / glaucoma from the file-name suffix.

    Every HRF photo is of a different person, so the patient id is the file stem. No official
    split: "train"/"all" give every image.

    Raises:
        DatasetError: a file name without a known suffix (named in the message).
    """
    if split not in ("train", "all"):
        raise ValueError(f"hrf has no official splits (use 'all' and patient_split), got {split!r}")
    folder = require_dir(root / "images", "HRF image folder")
    samples = []
    for image in list_images(folder):
        match = _NAME.match(image.stem)
        if match is None:
            raise DatasetError(f"HRF image {image.name!r} does not end in _h, _dr or _g")
        samples.append(Sample(image, _SUFFIX[match.group(2).lower()], patient_id=image.stem,
                              meta={"number": int(match.group(1))}))
    if not samples:
        raise DatasetError(f"no images in {folder}")
    return FundusDataset("hrf", root, split, samples, list(HRF_LABELS), MULTICLASS.name)
