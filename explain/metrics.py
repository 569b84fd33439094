"""Localisation metrics of saliency maps against lesion annotations.

pytorch-grad-cam's ``metrics`` module offers perturbation metrics (ROAD, confidence change), none
of these, so they are written here: pointing game (Zhang et al. 2016) with a pixel tolerance,
energy-based pointing game (Wang et al. 2020, Score-CAM), the area under the precision–recall curve of the
map's pixels against the mask (average precision) and IoU / Dice of the τ mask (paper 004 eq. 4) swept over τ.
Maps and masks are (H, W) numpy arrays of one size.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from explain.regions import lesion_mask, normalise_map

DEFAULT_TAUS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))
OPTIC_DISC = "optic_disc"  # the optic-disc row of a method in ``LocalisationSummary.result``


def _pair(saliency, gt_mask, fov_mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = np.asarray(saliency, dtype=np.float32)
    truth = np.asarray(gt_mask, dtype=bool)
    if values.ndim != 2 or values.shape != truth.shape:
        raise ValueError(f"map {values.shape} and ground-truth mask {truth.shape} must be 2-D and of one size")
    fov = np.ones_like(truth) if fov_mask is None else np.asarray(fov_mask, dtype=bool)
    if fov.shape != truth.shape:
        raise ValueError(f"fov_mask {fov.shape} does not match the map {values.shape}")
    return values, truth & fov, fov


def pointing_game(saliency, gt_mask, *, tolerance: int = 15, fov_mask=None) -> float | None:
    """Pointing game: does the map's maximum fall on the lesion (within ``tolerance`` pixels)?

    Args:
        saliency: (H, W) map.
        gt_mask: (H, W) bool lesion mask (boxes: see ``boxes_to_mask``).
        tolerance: pixel radius around the lesion that still counts as a hit (Zhang et al.: 15).
        fov_mask: optional field of view; the maximum is searched inside it.

    Returns:
        1.0 for a hit, 0.0 for a miss (with tied maxima: the share of them that hit, so a uniform
        map scores chance); None when the image has no lesion of this type.

    Raises:
        ValueError: mismatched shapes or a negative tolerance.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be ≥ 0 pixels, got {tolerance}")
    values, truth, fov = _pair(saliency, gt_mask, fov_mask)
    if not truth.any() or not fov.any():
        return None
    inside = np.where(fov, values, -np.inf)
    peaks = inside >= inside.max()
    # Distance of every pixel to the nearest lesion pixel; hits lie within the tolerance.
    distance = cv2.distanceTransform((~truth).astype(np.uint8), cv2.DIST_L2, 5)
    return float((distance[peaks] <= tolerance).mean())


def energy_pointing_game(saliency, gt_mask, *, fov_mask=None) -> float | None:
    """Share of the map's energy (sum of its non-negative values) inside the lesion, within the FOV.

    Returns:
        A value in [0, 1]; None when there is no lesion; 0.0 for an all-zero map.
    """
    values, truth, fov = _pair(saliency, gt_mask, fov_mask)
    if not truth.any():
        return None
    energy = np.clip(values, 0, None) * fov
    total = float(energy.sum())
    return float(energy[truth].sum() / total) if total > 0 else 0.0


PR_AUC_PIXELS = 50_000  # negatives beyond this many are subsampled (weighted back) by ``pixel_average_precision``


def pixel_average_precision(saliency, gt_mask, *, fov_mask=None, max_pixels: int = PR_AUC_PIXELS,
                            seed: int = 0) -> float | None:
    """Area under the precision–recall curve of the map's pixels as scores for the lesion mask, inside the FOV
    (scikit-learn's ``average_precision_score``: Σ (R_n − R_{n−1}) P_n over the thresholds).

    Threshold-free, unlike IoU at τ, and fair to small lesions (a lesion share of 1 % gives chance 0.01, not an
    ROC AUC of 0.5). Every lesion pixel is kept; beyond ``max_pixels`` the other pixels are drawn at random (fixed
    ``seed``) and weighted back by the inverse of their rate, so the estimate stays unbiased. A constant map (the
    uniform baseline) scores the lesion's share of the field of view.

    Returns:
        A value in [0, 1]; None when there is no lesion of this type in the field of view.
    """
    from sklearn.metrics import average_precision_score

    values, truth, fov = _pair(saliency, gt_mask, fov_mask)
    if not truth.any():
        return None
    scores, labels = values[fov], truth[fov]
    weights = None
    negatives = np.flatnonzero(~labels)
    if labels.size > max_pixels and negatives.size:
        keep = max(1, max_pixels - int(labels.sum()))
        rate = min(1.0, keep / negatives.size)
        chosen = np.random.default_rng(seed).choice(negatives, size=min(keep, negatives.size), replace=False)
        index = np.concatenate([np.flatnonzero(labels), chosen])
        scores, labels = scores[index], labels[index]
        weights = np.where(labels, 1.0, 1.0 / rate)
    return float(average_precision_score(labels, scores, sample_weight=weights))


@dataclass
class TauSweep:
    """IoU and Dice of the τ mask (paper 004 eq. 4) for every τ, and the best τ by IoU."""

    taus: np.ndarray
    iou: np.ndarray
    dice: np.ndarray

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.iou))

    @property
    def best_tau(self) -> float:
        return float(self.taus[self.best_index])

    @property
    def best_iou(self) -> float:
        return float(self.iou[self.best_index])

    @property
    def best_dice(self) -> float:
        return float(self.dice[self.best_index])


def iou_dice_sweep(saliency, gt_mask, *, taus: Sequence[float] = DEFAULT_TAUS, fov_mask=None) -> TauSweep | None:
    """IoU and Dice between ``normalise(map) > τ`` and the lesion mask for each τ.

    Returns:
        ``TauSweep``; None when the image has no lesion of this type.

    Raises:
        ValueError: mismatched shapes, or a τ outside [0, 1].
    """
    values, truth, fov = _pair(saliency, gt_mask, fov_mask)
    taus = np.asarray(taus, dtype=np.float64)
    if taus.ndim != 1 or taus.size == 0 or taus.min() < 0 or taus.max() > 1:
        raise ValueError("taus must be a non-empty list of thresholds in [0, 1]")
    if not truth.any():
        return None
    if _constant(values, fov):  # the uniform baseline marks the whole field at every τ
        predicted = np.broadcast_to(fov, (taus.size, *fov.shape))
    else:
        predicted = normalise_map(values, fov)[None] > taus[:, None, None]
    overlap = (predicted & truth).sum(axis=(1, 2)).astype(np.float64)
    predicted_area = predicted.sum(axis=(1, 2)).astype(np.float64)
    truth_area = float(truth.sum())
    iou = overlap / (predicted_area + truth_area - overlap)
    dice = 2 * overlap / (predicted_area + truth_area)
    return TauSweep(taus=taus, iou=iou, dice=dice)


def _constant(values: np.ndarray, fov: np.ndarray) -> bool:
    """A constant non-zero map inside the field (the uniform baseline): its τ mask is the whole field, not empty."""
    inside = values[fov]
    return bool(inside.size) and inside.min() == inside.max() and inside.max() > 0


def optic_disc_patches(saliency, disc_mask, *, tau: float, fov_mask=None) -> tuple[int, int] | None:
    """How many lesion patches of a map's τ mask (paper 004 eq. 4, ``regions.lesion_mask``) lie on the optic disc.

    A patch lies on the disc when its centroid falls inside the disc's annotation (a box, or a mask): a patch that
    only grazes the disc does not count, one centred on it does. The uniform baseline's mask is the whole field of
    view: one patch, centred on the field.

    Args:
        saliency: (H, W) map.
        disc_mask: (H, W) bool optic disc (e.g. its box rasterised by ``boxes_to_mask``).
        tau: the τ of the lesion mask (the model's ``config.tau``).
        fov_mask: optional field of view; patches and the disc are restricted to it.

    Returns:
        (patches, patches on the disc); None when the disc is not in the field of view.

    Raises:
        ValueError: mismatched shapes, or τ outside [0, 1].
    """
    values, disc, fov = _pair(saliency, disc_mask, fov_mask)
    if not disc.any():
        return None
    if _constant(values, fov):
        ys, xs = np.nonzero(fov)
        centroids = [(float(xs.mean()), float(ys.mean()))]
    else:
        centroids = [p.centroid for p in lesion_mask(values, tau, fov_mask=fov).patches]
    height, width = disc.shape
    on = sum(bool(disc[min(height - 1, int(round(y))), min(width - 1, int(round(x)))]) for x, y in centroids)
    return len(centroids), on


def boxes_to_mask(boxes: Sequence[Sequence[float]], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise boxes (x0, y0, x1, y1) normalised to [0, 1] into an (H, W) bool mask.

    Raises:
        ValueError: a box that is not 4 numbers in [0, 1] with x0 ≤ x1, y0 ≤ y1.
    """
    height, width = shape
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"a box is (x0, y0, x1, y1), got {box!r}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1):
            raise ValueError(f"box {box!r} must be normalised to [0, 1] with x0 ≤ x1 and y0 ≤ y1")
        c0, r0 = int(np.floor(x0 * width)), int(np.floor(y0 * height))
        c1, r1 = max(c0 + 1, int(np.ceil(x1 * width))), max(r0 + 1, int(np.ceil(y1 * height)))
        mask[r0:r1, c0:c1] = True
    return mask


def centred_gaussian(shape: tuple[int, int], *, sigma: float = 0.25, fov_mask=None) -> np.ndarray:
    """Chance baseline: a Gaussian centred in the image (σ as a fraction of the side), 0 outside the FOV."""
    height, width = shape
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    side = float(max(height, width))
    values = np.exp(-(((xx - (width - 1) / 2) ** 2 + (yy - (height - 1) / 2) ** 2) / (2 * (sigma * side) ** 2)))
    return normalise_map(values.astype(np.float32), fov_mask)


def uniform_map(shape: tuple[int, int], *, fov_mask=None) -> np.ndarray:
    """Chance baseline: 1 everywhere inside the FOV."""
    values = np.ones(shape, dtype=np.float32)
    return values if fov_mask is None else values * np.asarray(fov_mask, dtype=np.float32)


class LocalisationSummary:
    """Accumulates per-image metrics per (method, lesion) and reports means and mean IoU curves."""

    def __init__(self, taus: Sequence[float] = DEFAULT_TAUS, tolerance: int = 15) -> None:
        self.taus = np.asarray(taus, dtype=np.float64)
        self.tolerance = tolerance
        self._rows: dict[tuple[str, str], dict[str, list]] = {}
        self._discs: dict[str, dict[str, float]] = {}

    def add(self, method: str, lesion: str, saliency, gt_mask, fov_mask=None) -> None:
        """Score one map against one lesion mask (images without that lesion are skipped)."""
        sweep = iou_dice_sweep(saliency, gt_mask, taus=self.taus, fov_mask=fov_mask)
        if sweep is None:
            return
        row = self._rows.setdefault((method, lesion), {"pg": [], "epg": [], "ap": [], "iou": [], "dice": []})
        row["pg"].append(pointing_game(saliency, gt_mask, tolerance=self.tolerance, fov_mask=fov_mask))
        row["epg"].append(energy_pointing_game(saliency, gt_mask, fov_mask=fov_mask))
        row["ap"].append(pixel_average_precision(saliency, gt_mask, fov_mask=fov_mask))
        row["iou"].append(sweep.iou)
        row["dice"].append(sweep.dice)

    def add_optic_disc(self, method: str, saliency, disc_mask, *, tau: float, fov_mask=None) -> None:
        """Count one map's τ lesion patches on the optic disc (``optic_disc_patches``; photos whose disc is not in
        the field of view are skipped)."""
        found = optic_disc_patches(saliency, disc_mask, tau=tau, fov_mask=fov_mask)
        if found is None:
            return
        patches, on = found
        row = self._discs.setdefault(method, {"tau": float(tau), "photos": 0, "patches": 0, "patches_on_disc": 0,
                                              "photos_with_a_patch_on_disc": 0})
        row["photos"] += 1
        row["patches"] += patches
        row["patches_on_disc"] += on
        row["photos_with_a_patch_on_disc"] += int(on > 0)

    def result(self) -> dict[str, dict[str, dict[str, float]]]:
        """{method: {lesion: {"pointing_game", "energy_pointing_game", "pr_auc", "best_iou", "best_tau",
        "best_dice", "images"}}} (means over the images with that lesion); best τ is chosen on the mean IoU curve over the data set. A method scored on the
        optic disc (``add_optic_disc``) also has an ``OPTIC_DISC`` row: "tau", "photos", "patches",
        "patches_on_disc", "photos_with_a_patch_on_disc", "patch_share" (of all its τ patches, pooled over the
        photos; None without a patch) and "photo_share" (of the photos)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for (method, lesion), row in self._rows.items():
            iou = np.mean(row["iou"], axis=0)
            dice = np.mean(row["dice"], axis=0)
            best = int(np.argmax(iou))
            out.setdefault(method, {})[lesion] = {
                "pointing_game": float(np.mean(row["pg"])),
                "energy_pointing_game": float(np.mean(row["epg"])),
                "pr_auc": float(np.mean(row["ap"])),
                "best_iou": float(iou[best]),
                "best_tau": float(self.taus[best]),
                "best_dice": float(dice[best]),
                "images": len(row["iou"]),
            }
        for method, row in self._discs.items():
            out.setdefault(method, {})[OPTIC_DISC] = {
                **row, "patch_share": row["patches_on_disc"] / row["patches"] if row["patches"] else None,
                "photo_share": row["photos_with_a_patch_on_disc"] / row["photos"]}
        return out

    def curves(self) -> dict[tuple[str, str], np.ndarray]:
        """(method, lesion) -> mean IoU for each τ in ``self.taus``."""
        return {key: np.mean(row["iou"], axis=0) for key, row in self._rows.items()}
