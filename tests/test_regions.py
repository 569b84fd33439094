"""θ attention crop (paper 000 eq. 5), τ lesion mask (paper 004 eq. 4), lesion outlines (paper 001 Fig. 6c)."""
from __future__ import annotations

import numpy as np
import pytest

from explain import attention_crop, lesion_colour, lesion_mask, lesion_outlines


def blob_map(size: int = 64, centres=((20, 30, 6),)) -> np.ndarray:
    """Sum of Gaussian blobs (x, y, sigma), normalised to [0, 1]."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    total = np.zeros((size, size), np.float32)
    for x, y, sigma in centres:
        total += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return total / total.max()


def test_attention_crop_box_is_smallest_rectangle_over_theta():
    saliency = np.zeros((40, 50), np.float32)
    saliency[10:15, 20:31] = 0.8  # 0.8·255 = 204 > θ
    saliency[12, 33] = 0.5  # 127.5 -> 128: not > 128 (eq. 5 is strict)
    image = np.arange(40 * 50 * 3, dtype=np.uint8).reshape(40, 50, 3)
    crop = attention_crop(saliency, theta=128, image=image)
    assert crop.box == (20, 10, 31, 15)
    assert crop.mask.sum() == 5 * 11 and not crop.empty
    assert np.array_equal(crop.crop, image[10:15, 20:31])
    assert crop.enlarged.shape == image.shape  # Fig. 2f: back to the input size
    lower = attention_crop(saliency, theta=127, image=image)
    assert lower.box == (20, 10, 34, 15)  # the 128 pixel now passes


def test_attention_crop_resizes_map_to_image_and_handles_empty_mask():
    small = blob_map(16, centres=((4, 4, 2),))
    image = np.full((64, 64, 3), 100, np.uint8)
    crop = attention_crop(small, theta=200, image=image, size=(32, 32))
    x0, y0, x1, y1 = crop.box
    assert x1 <= 32 and y1 <= 32 and crop.mask.shape == (64, 64)
    assert crop.enlarged.shape == (32, 32, 3)
    none = attention_crop(np.zeros((8, 8)), theta=10)
    assert none.empty and none.box == (0, 0, 8, 8) and none.crop is None
    with pytest.raises(ValueError, match="theta"):
        attention_crop(small, theta=300)
    with pytest.raises(ValueError, match="normalised"):
        attention_crop(small * 4, theta=10)
    with pytest.raises(ValueError, match="2-D"):
        attention_crop(np.zeros((4, 4, 3)), theta=10)


def test_lesion_mask_components_area_and_fov():
    saliency = blob_map(64, centres=((15, 15, 3), (45, 40, 5)))
    result = lesion_mask(saliency * 7.0 + 2.0, tau=0.5)  # any range: normalised first
    assert len(result.patches) == 2
    big, small = result.patches
    assert big.area > small.area and big.area + small.area == result.total_area == result.mask.sum()
    x0, y0, x1, y1 = big.box
    assert x0 <= 45 < x1 and y0 <= 40 < y1
    assert abs(big.centroid[0] - 45) < 1 and abs(big.centroid[1] - 40) < 1
    assert big.mask.shape == (y1 - y0, x1 - x0)
    # τ higher -> smaller mask; the FOV removes a lesion entirely.
    assert lesion_mask(saliency, tau=0.8).total_area < result.total_area
    fov = np.zeros((64, 64), bool)
    fov[:, 30:] = True
    inside = lesion_mask(saliency, tau=0.5, fov_mask=fov)
    assert len(inside.patches) == 1 and not inside.mask[:, :30].any()
    assert len(lesion_mask(saliency, tau=0.5, min_area=big.area).patches) == 1
    with pytest.raises(ValueError, match="tau"):
        lesion_mask(saliency, tau=1.5)


def test_lesion_outlines_colours_legend_and_contours():
    maps = {"BP/MA": blob_map(64, ((10, 10, 3),)), "HM": blob_map(64, ((50, 50, 4),)),
            "HEX": np.zeros((64, 64), np.float32), "CWS": blob_map(64, ((30, 50, 3),))}
    outlines = lesion_outlines(maps, {"BP/MA": 0.5, "HM": 0.5, "HEX": 0.5, "CWS": 0.9})
    assert outlines.colours["BP/MA"] == (255, 105, 180) and outlines.colours["HM"] == (255, 0, 0)
    assert outlines.colours["HEX"] == (255, 255, 0) and outlines.colours["CWS"] == (0, 90, 255)
    assert [label for label, _ in outlines.legend] == ["BP/MA", "HM", "CWS"]  # HEX has no region
    (contour,) = outlines.contours["HM"]
    xs, ys = contour[:, 0, 0], contour[:, 0, 1]
    assert xs.min() < 50 < xs.max() and ys.min() < 50 < ys.max()
    assert lesion_colour("glaucoma", 0) != lesion_colour("cataract", 1)  # palette for other label sets
    with pytest.raises(ValueError, match="thresholds"):
        lesion_outlines(maps, [0.5, 0.5])
