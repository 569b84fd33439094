"""A map drawn from the photo alone, with no model: a classic dark- and bright-spot filter.

Why it exists: a class activation map earns its place in the localisation table only if it points at lesions better
than what a few lines of 1990s image processing find without any training. Haemorrhages and microaneurysms are dark
spots on the green channel, hard exudates and cotton-wool spots bright ones, and morphological black-hat / top-hat
transforms (closing − image, image − opening; Walter et al. 2002 for exudates, Spencer et al. 1996 for
microaneurysms) pick out exactly such spots smaller than their structuring element. ``python -m explain evaluate``
scores this map beside the CAMs and the blind baselines: if a CAM cannot beat it, users must know.
"""
from __future__ import annotations

import cv2
import numpy as np

SPOT_FILTER = "spot-filter"  # its name in the localisation table
SPOT_SIDE = 1 / 25  # the structuring element's diameter as a share of the photo's side: larger than most lesions
FOV_MARGIN = 1 / 40  # the rim of the field of view left out (the border itself is the strongest "dark spot")


def spot_map(rgb: np.ndarray, fov_mask: np.ndarray | None = None) -> np.ndarray:
    """Dark spots (black-hat) and bright spots (top-hat) of the green channel, each scaled to its maximum, summed.

    Args:
        rgb: (H, W, 3) uint8 photo as the model sees it (``Preprocessed.image``).
        fov_mask: (H, W) bool field of view; the map is 0 outside it and on its rim.

    Returns:
        (H, W) float32 map in [0, 1].
    """
    green = np.ascontiguousarray(np.asarray(rgb)[..., 1])
    height, width = green.shape
    fov = np.ones((height, width), bool) if fov_mask is None else np.asarray(fov_mask, bool)
    if fov.any():  # the surround takes the field's median, so the border makes no step to find
        green = np.where(fov, green, np.uint8(np.median(green[fov])))
    side = max(3, int(round(SPOT_SIDE * max(height, width))) | 1)
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    margin = max(1, int(round(FOV_MARGIN * max(height, width))))
    inner = cv2.erode(fov.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1,) * 2))
    total = np.zeros((height, width), np.float32)
    for operation in (cv2.MORPH_BLACKHAT, cv2.MORPH_TOPHAT):
        response = cv2.morphologyEx(green, operation, element).astype(np.float32) * inner
        peak = float(response.max())
        if peak > 0:
            total += response / peak
    return total / 2
