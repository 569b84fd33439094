"""Overlays, boxes, outlines and panels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from explain import draw_boxes, draw_outlines, heatmap, lesion_outlines, overlay, panel_grid, save_png


def gradient_map(size: int = 32) -> np.ndarray:
    return np.tile(np.linspace(0, 1, size, dtype=np.float32), (size, 1))


def test_overlay_blends_with_alpha_and_colormap_and_mask():
    image = np.full((32, 32, 3), 100, np.uint8)
    saliency = gradient_map()
    heat = heatmap(saliency, "jet")
    assert tuple(heat[0, -1]) == (128, 0, 0) or heat[0, -1, 0] > heat[0, -1, 2]  # jet: hot end is red (RGB)
    half = overlay(image, saliency, alpha=0.5, colormap="jet")
    expected = np.rint(0.5 * image.astype(float) + 0.5 * heat.astype(float))
    assert np.abs(half.astype(float) - expected).max() <= 1
    assert np.array_equal(overlay(image, saliency, alpha=0.0), image)
    assert not np.array_equal(overlay(image, saliency, colormap="viridis"), half)
    mask = np.zeros((32, 32), bool)
    mask[:, :16] = True
    masked = overlay(image, saliency, alpha=0.5, mask=mask)
    assert np.array_equal(masked[:, 16:], image[:, 16:]) and np.array_equal(masked[:, :16], half[:, :16])
    assert overlay(np.zeros((64, 64, 3), np.uint8), saliency).shape == (64, 64, 3)  # map resized to image
    with pytest.raises(ValueError, match="colormap"):
        overlay(image, saliency, colormap="rainbowish")
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, saliency, alpha=2)


def test_boxes_outlines_panel_and_png(tmp_path):
    image = np.zeros((40, 40, 3), np.uint8)
    boxed = draw_boxes(image, [(5, 5, 20, 20)], colour=(0, 255, 0), thickness=1)
    assert tuple(boxed[5, 10]) == (0, 255, 0) and tuple(boxed[12, 12]) == (0, 0, 0)
    yy, xx = np.mgrid[:40, :40]
    blob = np.exp(-((xx - 20) ** 2 + (yy - 20) ** 2) / 50.0).astype(np.float32)
    drawn = draw_outlines(image, lesion_outlines({"HE": blob}, 0.5), thickness=1, legend=False)
    red = (drawn[..., 0] > 0) & (drawn[..., 1] == 0) & (drawn[..., 2] == 0)  # anti-aliased red line
    assert red.sum() > 10 and not red[20, 20] and red[:, :20].any() and red[:, 21:].any()  # a ring round HE
    panel = panel_grid([image, blob, boxed], ["photo", "map", "boxes"], columns=2, tile=32)
    assert panel.shape == (2 * (32 + 18), 2 * 32, 3)
    path = save_png(tmp_path / "panel.png", panel)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, panel)
    with pytest.raises(ValueError, match="titles"):
        panel_grid([image], ["a", "b"])
