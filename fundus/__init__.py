"""Fundus photographs: validated loading, the fundus check, field of view, preprocessing, synthetic images,
data sets."""
from .check import FundusCheck, NotFundusError, check_fundus, require_fundus
from .fov import FieldOfView, detect_fov
from .imageio import ImageError, load_image
from .preprocess import Preprocessed, clahe, preprocess, preprocess_batch, remove_black_border
from .synthetic import LESION_TYPES, make_fundus

__all__ = [
    "FieldOfView",
    "FundusCheck",
    "ImageError",
    "LESION_TYPES",
    "NotFundusError",
    "Preprocessed",
    "check_fundus",
    "clahe",
    "detect_fov",
    "load_image",
    "make_fundus",
    "preprocess",
    "preprocess_batch",
    "remove_black_border",
    "require_fundus",
]
