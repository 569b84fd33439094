"""Pointing game, energy pointing game, τ-swept IoU/Dice, boxes, baselines and the summary."""
from __future__ import annotations

import numpy as np
import pytest

from explain.metrics import (LocalisationSummary, boxes_to_mask, centred_gaussian, energy_pointing_game,
                             iou_dice_sweep, pointing_game, uniform_map)


def square_mask(size=64, x0=40, y0=10, side=10) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[y0:y0 + side, x0:x0 + side] = True
    return mask


def test_pointing_game_hit_miss_tolerance_and_ties():
    truth = square_mask()
    saliency = np.zeros((64, 64), np.float32)
    saliency[15, 45] = 1.0
    assert pointing_game(saliency, truth) == 1.0
    saliency = np.zeros((64, 64), np.float32)
    saliency[15, 20] = 1.0  # 20 px left of the lesion (x = 40)
    assert pointing_game(saliency, truth, tolerance=0) == 0.0
    assert pointing_game(saliency, truth, tolerance=15) == 0.0
    assert pointing_game(saliency, truth, tolerance=21) == 1.0
    share = pointing_game(uniform_map((64, 64)), truth, tolerance=0)
    assert share == pytest.approx(truth.mean())  # a uniform map scores chance
    saliency[15, 45] = 0.5  # inside the lesion, below the outside peak
    assert pointing_game(saliency, truth, tolerance=0) == 0.0
    fov = np.ones((64, 64), bool)
    fov[:, 15:25] = False  # the outside peak is not in the field of view
    assert pointing_game(saliency, truth, tolerance=0, fov_mask=fov) == 1.0
    assert pointing_game(saliency, np.zeros((64, 64), bool)) is None


def test_energy_pointing_game_share_inside():
    truth = square_mask()
    saliency = np.zeros((64, 64), np.float32)
    saliency[12, 42] = 3.0
    saliency[50, 5] = 1.0
    assert energy_pointing_game(saliency, truth) == pytest.approx(0.75)
    assert energy_pointing_game(uniform_map((64, 64)), truth) == pytest.approx(100 / 64**2)
    assert energy_pointing_game(np.zeros((64, 64)), truth) == 0.0
    assert energy_pointing_game(saliency, np.zeros((64, 64), bool)) is None


def test_iou_dice_sweep_finds_the_perfect_tau():
    truth = square_mask()
    saliency = truth * 0.9 + 0.1 * np.random.default_rng(0).random((64, 64)) * ~truth  # lesion high, noise low
    sweep = iou_dice_sweep(saliency, truth, taus=[0.05, 0.5, 0.95])
    assert sweep.best_tau == 0.5 and sweep.best_iou == pytest.approx(1.0) and sweep.best_dice == pytest.approx(1.0)
    assert sweep.iou[0] < 0.5  # τ = 0.05 lets most of the noise in
    # Dice = 2·IoU / (1 + IoU) at every τ.
    assert np.allclose(sweep.dice, 2 * sweep.iou / (1 + sweep.iou))
    # The uniform baseline predicts the whole field: IoU = lesion area / FOV area at every τ.
    uniform = iou_dice_sweep(uniform_map((64, 64)), truth, taus=[0.1, 0.9])
    assert np.allclose(uniform.iou, truth.sum() / 64**2)
    with pytest.raises(ValueError, match="taus"):
        iou_dice_sweep(saliency, truth, taus=[1.5])
    with pytest.raises(ValueError, match="one size"):
        iou_dice_sweep(saliency[:10], truth)


def test_boxes_to_mask_and_baselines():
    mask = boxes_to_mask([(0.5, 0.25, 0.75, 0.5)], (40, 80))
    assert mask.sum() == 20 * 10 and mask[10, 40] and not mask[9, 40]
    tiny = boxes_to_mask([(0.1, 0.1, 0.1, 0.1)], (10, 10))  # degenerate boxes keep one pixel
    assert tiny.sum() == 1
    with pytest.raises(ValueError, match="normalised"):
        boxes_to_mask([(0.5, 0.5, 1.5, 0.6)], (10, 10))
    gauss = centred_gaussian((32, 32))
    assert gauss.max() == pytest.approx(1.0) and gauss[16, 16] > gauss[0, 0]
    fov = np.zeros((32, 32), bool)
    fov[8:24, 8:24] = True
    assert uniform_map((32, 32), fov_mask=fov).sum() == fov.sum()


def test_summary_means_and_best_tau_over_images():
    summary = LocalisationSummary(taus=[0.25, 0.5, 0.75], tolerance=0)
    truth = square_mask()
    good = truth.astype(np.float32)
    summary.add("gradcam", "EX", good, truth)
    summary.add("gradcam", "EX", np.roll(good, 32, axis=1), truth)  # misses the lesion
    summary.add("gradcam", "HE", good, np.zeros_like(truth))  # no HE in the image: skipped
    result = summary.result()
    assert set(result["gradcam"]) == {"EX"}
    row = result["gradcam"]["EX"]
    assert row["images"] == 2 and row["pointing_game"] == 0.5
    assert row["best_iou"] == pytest.approx(0.5) and row["energy_pointing_game"] == pytest.approx(0.5)
