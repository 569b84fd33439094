"""Fundus data sets in their official layouts, patient-level splits, and a skip-safe torch Dataset.

``load_dataset(fmt, root, split)`` → :class:`FundusDataset` of :class:`Sample` rows. Every module of this package
is imported here (``torch_dataset`` on demand), and each format module registers its format with its facts
(``registry``); ``python -m fundus.datasets`` lists them.
"""
from .base import DatasetError, FundusDataset, Sample
from .idrid_seg import IDRID_LESIONS, load_mask
from .labels import DR_GRADES
from .odir import ODIR_LABEL_NAMES, ODIR_LABELS
from .registry import FORMATS, load_dataset, register
from .rfmid import PAPER000_CATEGORIES, RFMID_DISEASES, to_paper000
from .splits import PARTS, SPLIT_SEED, TEST_FRACTION, VAL_FRACTION, patient_kfold, patient_split, source_of, train_val_test_split


FORMATS.discover()


def __getattr__(name: str):
    # torch is imported only by whoever needs the torch Dataset.
    if name in ("ImageDataset", "collate_skip_none", "target_tensor"):
        from . import torch_dataset

        return getattr(torch_dataset, name)
    raise AttributeError(f"module 'fundus.datasets' has no attribute {name!r}")


__all__ = [
    "DR_GRADES",
    "DatasetError",
    "FORMATS",
    "FundusDataset",
    "IDRID_LESIONS",
    "ImageDataset",
    "ODIR_LABELS",
    "ODIR_LABEL_NAMES",
    "PAPER000_CATEGORIES",
    "RFMID_DISEASES",
    "Sample",
    "collate_skip_none",
    "load_dataset",
    "load_mask",
    "patient_kfold",
    "patient_split",
    "PARTS",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "VAL_FRACTION",
    "source_of",
    "train_val_test_split",
    "register",
    "target_tensor",
    "to_paper000",
]
