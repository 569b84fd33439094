"""Paper 000's Grad-CAM data augmentation: attention crops of the training images (eq. 5, Fig. 2).

"The VGG16-based framework network was trained on the entire fundus image in the first step, and
the local lesion features were extracted and cropped from the original image using Grad-CAM to
obtain amplified data" (paper 000, 4.2). For every training photo the stage-1 model's integrated
Guided Grad-CAM over the photo's *true* labels (eq. 3–4; "the Grad-CAM map is constructed using the
feature map and the real label", section 3) is thresholded at θ (eq. 5), the smallest rectangle
around the mask is cut out and enlarged back to the input size (Fig. 2 d–f). The crops keep their
photo's labels and join the training set of stage 2.

``saliency_maps`` (batched explanations of cached training images) is shared with the ELLG recipe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["AttentionCropImages", "fov_mask_of", "saliency_maps", "attention_crop_images", "positive_labels"]


@dataclass
class AttentionCropImages:
    """Result of ``attention_crop_images``.

    Attributes:
        images: (M, S, S, 3) uint8 enlarged crops (Fig. 2f).
        source_index: for each crop, the index of the photo it was cut from.
        boxes: (x0, y0, x1, y1) of each crop in its photo's pixels.
        skipped_no_label: photos without a positive label (nothing to attend to).
        skipped_empty: photos whose map had no pixel above θ.
    """

    images: np.ndarray
    source_index: list[int] = field(default_factory=list)
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    skipped_no_label: int = 0
    skipped_empty: int = 0

    def __len__(self) -> int:
        return len(self.source_index)


def fov_mask_of(image: np.ndarray) -> np.ndarray:
    """Field-of-view mask of a preprocessed (S, S, 3) uint8 image (``fundus.detect_fov``)."""
    from fundus import detect_fov

    return detect_fov(np.ascontiguousarray(image)).mask


def _as_hwc(images: torch.Tensor | np.ndarray) -> np.ndarray:
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim != 4 or array.dtype != np.uint8:
        raise ValueError(f"images must be a (N, 3, S, S) or (N, S, S, 3) uint8 batch, got {array.shape} {array.dtype}")
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1)) if array.shape[1] == 3 else array


def saliency_maps(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    targets: Sequence[Sequence[int]] | str,
    method: str,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    t: float | None = None,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "explaining",
) -> list[np.ndarray]:
    """One (S, S) map in [0, 1] per image, through ``explain.Explainer`` (one pass per batch).

    Args:
        model: a zoo model (its config names the explanation layers); explained in eval mode, and put
            back into its previous mode afterwards.
        images: (N, 3, S, S) or (N, S, S, 3) uint8 images as the model sees them (before normalisation).
        targets: one list of class indices per image (integrated over them, paper 000 eq. 4), or a
            target word of ``explain`` ("predicted").
        method: a map name of ``Explanation.maps`` ("guided_gradcam", "gmsm", …).
        mean, std: the model's normalisation.
        t: GMSM gate (paper 004 eq. 2); default the model's.
        batch_size: images per explanation pass.
        progress: show a tqdm bar.
        desc: the bar's label.

    Raises:
        ValueError: a target list that does not match the images, or a method the model cannot give.
    """
    from explain import Explainer, canonical_method

    hwc = _as_hwc(images)
    if not isinstance(targets, str) and len(targets) != len(hwc):
        raise ValueError(f"{len(targets)} target lists for {len(hwc)} images")
    key = canonical_method(method)
    mean_t = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
    was_training = model.training
    model.eval()
    maps: list[np.ndarray] = []
    try:
        explainer = Explainer(model)
        for start in tqdm(range(0, len(hwc), batch_size), desc=desc, disable=not progress, leave=False):
            chunk = hwc[start:start + batch_size]
            x = (torch.from_numpy(chunk).permute(0, 3, 1, 2).float() / 255.0 - mean_t) / std_t
            fov = np.stack([fov_mask_of(img) for img in chunk])
            wanted = targets if isinstance(targets, str) else tuple(
                list(tg) for tg in targets[start:start + batch_size])
            expl = explainer.explain(x, target=wanted, fov_mask=fov, methods=(key,))
            if key in expl.unavailable:
                raise ValueError(f"{method} is unavailable for this model: {expl.unavailable[key]}")
            maps += [expl.maps(t=t, image=i)[key] for i in range(len(chunk))]
    finally:
        model.train(was_training)
    return maps


def positive_labels(targets: np.ndarray) -> list[list[int]]:
    """Indices of the positive labels of each multi-hot row (NaN = unknown counts as negative)."""
    rows = np.nan_to_num(np.asarray(targets, dtype=np.float64).reshape(len(targets), -1))
    return [np.flatnonzero(row > 0.5).tolist() for row in rows]


def attention_crop_images(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    targets: np.ndarray,
    theta: float,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 8,
    progress: bool = False,
) -> AttentionCropImages:
    """Attention crops of paper 000 (eq. 5, Fig. 2) from the stage-1 model, one per labelled photo.

    Args:
        model: the stage-1 model (paper: VGG16 trained on whole images).
        images: (N, 3, S, S) or (N, S, S, 3) uint8 training images as the model sees them.
        targets: (N, C) multi-hot true labels: the integrated Guided Grad-CAM is taken over them.
        theta: mask threshold θ ∈ [0, 255] on the map scaled to 0–255.
        mean, std: the model's normalisation.
        batch_size: images per explanation pass.
        progress: show a tqdm bar.

    Returns:
        ``AttentionCropImages``; photos without a positive label, or whose map has no pixel above θ, give
        no crop (a crop of the whole photo would only duplicate it).

    Raises:
        ValueError: θ outside [0, 255] or targets not matching the images.
    """
    from explain import attention_crop

    if not 0 <= theta <= 255:
        raise ValueError(f"theta must lie in [0, 255] (paper 000 eq. 5), got {theta}")
    hwc = _as_hwc(images)
    wanted = positive_labels(targets)
    if len(wanted) != len(hwc):
        raise ValueError(f"{len(wanted)} target rows for {len(hwc)} images")
    labelled = [i for i, w in enumerate(wanted) if w]
    result = AttentionCropImages(np.zeros((0, *hwc.shape[1:]), np.uint8), skipped_no_label=len(hwc) - len(labelled))
    if not labelled:
        return result
    maps = saliency_maps(model, hwc[labelled], [wanted[i] for i in labelled], "guided_gradcam", mean=mean,
                         std=std, batch_size=batch_size, progress=progress, desc="attention crops")
    crops = []
    for index, saliency in zip(labelled, maps):
        crop = attention_crop(saliency, theta, hwc[index])
        if crop.empty:
            result.skipped_empty += 1
            continue
        crops.append(crop.enlarged)
        result.source_index.append(index)
        result.boxes.append(tuple(int(v) for v in crop.box))
    if crops:
        result.images = np.stack(crops).astype(np.uint8)
    return result
