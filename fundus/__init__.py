"""Fundus photographs: validated loading, field of view, preprocessing, synthetic images, data sets."""
from .fov import FieldOfView, detect_fov
from .imageio import ImageError, load_image
from .preprocess import Preprocessed, clahe, preprocess, preprocess_batch, remove_black_border
from .synthetic import LESION_TYPES, make_fundus

__all__ = [
    "FieldOfView",
    "ImageError",
    "LESION_TYPES",
    "Preprocessed",
    "clahe",
    "detect_fov",
    "load_image",
    "make_fundus",
    "preprocess",
    "preprocess_batch",
    "remove_black_border",
]
