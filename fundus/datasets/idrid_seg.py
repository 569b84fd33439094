"""IDRiD "A. Segmentation": pixel masks of MA, HE, EX, SE and the optic disc (OD)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fundus.tasks import MULTILABEL

from .base import DatasetError, FundusDataset, Sample, list_images, multi_hot, require_dir
from .registry import LESION_MASKS, register

IDRID_SEGMENTATION = "A. Segmentation"
# Ground-truth folder and file suffix of each mask type, as in the official archive.
IDRID_MASKS = {
    "MA": "1. Microaneurysms",
    "HE": "2. Haemorrhages",
    "EX": "3. Hard Exudates",
    "SE": "4. Soft Exudates",
    "OD": "5. Optic Disc",
}
IDRID_LESIONS = ("MA", "HE", "EX", "SE")
_SETS = {"train": "a. Training Set", "test": "b. Testing Set"}
_NAME = re.compile(r"^IDRiD_(\d+)$")
IDRID_LICENCE = "CC BY 4.0 (IDRiD, Porwal et al. 2018)"


@register("idrid-seg", layout="A. Segmentation/1. Original Images/<set>/IDRiD_NN.jpg + "
                             "2. All Segmentation Groundtruths/<set>/<k. Name>/IDRiD_NN_<MA|HE|EX|SE|OD>.tif",
          annotation=LESION_MASKS, licence=IDRID_LICENCE, splits=tuple(_SETS), title="IDRiD")
def load_idrid_seg(root: Path, split: str = "train", *, verify_masks: bool = False) -> FundusDataset:
    """IDRiD segmentation layout (multilabel MA, HE, EX, SE).

    ``A. Segmentation/1. Original Images/<a. Training|b. Testing> Set/IDRiD_NN.jpg`` and
    ``A. Segmentation/2. All Segmentation Groundtruths/<set>/<k. Name>/IDRiD_NN_<MA|HE|EX|SE|OD>.tif``.
    A missing mask file means that lesion type is absent from the image, so the image-level
    labels are derived from which masks exist.

    Args:
        root: the IDRiD folder or its ``A. Segmentation`` folder.
        split: "train" or "test".
        verify_masks: also read each mask and count an empty one as absent (slower).

    ``Sample.masks`` holds every mask found (OD included); ``meta["image_number"]`` the NN.
    """
    if split not in _SETS:
        raise ValueError(f"idrid-seg: split must be 'train' or 'test', got {split!r}")
    base = root if root.name == IDRID_SEGMENTATION else root / IDRID_SEGMENTATION
    image_dir = require_dir(base / "1. Original Images" / _SETS[split], "IDRiD image folder")
    truth_dir = require_dir(base / "2. All Segmentation Groundtruths" / _SETS[split], "IDRiD ground-truth folder")
    for kind, folder in IDRID_MASKS.items():
        require_dir(truth_dir / folder, f"IDRiD {kind} mask folder")
    samples = []
    for image in list_images(image_dir):
        match = _NAME.match(image.stem)
        if match is None:
            raise DatasetError(f"unexpected image name {image.name!r} in {image_dir} (expected IDRiD_NN.jpg)")
        masks = {}
        for kind, folder in IDRID_MASKS.items():
            path = truth_dir / folder / f"{image.stem}_{kind}.tif"
            if path.is_file() and (not verify_masks or _mask_has_pixels(path)):
                masks[kind] = path
        present = [i for i, kind in enumerate(IDRID_LESIONS) if kind in masks]
        samples.append(Sample(image, multi_hot(present, len(IDRID_LESIONS)), masks=masks,
                              patient_id=image.stem, meta={"image_number": int(match.group(1))}))
    if not samples:
        raise DatasetError(f"no IDRiD_NN.jpg images in {image_dir}")
    return FundusDataset("idrid-seg", root, split, samples, list(IDRID_LESIONS), MULTILABEL.name)


def load_mask(path: Path) -> np.ndarray:
    """A lesion mask (1-bit, 8-bit or RGB TIFF) as ``(H, W)`` bool."""
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("L"))
    return array > 0


def _mask_has_pixels(path: Path) -> bool:
    return bool(load_mask(path).any())
