"""Regions from saliency maps: θ attention crop (paper 000 eq. 5), τ lesion mask (paper 004 eq. 4),
per-lesion outlines (paper 001 Fig. 6c). Pure functions over numpy arrays, OpenCV for the geometry."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

# Paper 001 Fig. 6c: pink BP/MA, red HM/HE, yellow HEX/EX, blue CWS/SE (RGB).
LESION_COLOURS = {
    "BP": (255, 105, 180), "MA": (255, 105, 180), "BP/MA": (255, 105, 180),
    "HM": (255, 0, 0), "HE": (255, 0, 0),
    "HEX": (255, 255, 0), "EX": (255, 255, 0),
    "CWS": (0, 90, 255), "SE": (0, 90, 255),
}
# Other label sets: a distinguishable palette (Tableau 10), in label order.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _as_map(saliency, name: str = "map") -> np.ndarray:
    array = np.asarray(saliency, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def normalise_map(saliency, fov_mask=None) -> np.ndarray:
    """Min-max normalise a map to [0, 1] (inside ``fov_mask`` when given, 0 outside)."""
    array = _as_map(saliency)
    inside = np.ones(array.shape, bool) if fov_mask is None else np.asarray(fov_mask, bool)
    if inside.shape != array.shape:
        raise ValueError(f"fov_mask shape {inside.shape} does not match the map {array.shape}")
    if not inside.any():
        return np.zeros_like(array)
    low, high = array[inside].min(), array[inside].max()
    out = np.where(inside, array - low, 0.0).astype(np.float32)
    return out / (high - low) if high > low else np.zeros_like(out)


@dataclass
class AttentionCrop:
    """Paper 000 Fig. 2: the θ mask, its smallest enclosing box, the crop and its enlargement."""

    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive, in map pixels
    mask: np.ndarray  # (H, W) bool M_C
    crop: np.ndarray | None = None  # the image inside the box (Fig. 2d)
    enlarged: np.ndarray | None = None  # the crop resized back to the input size (Fig. 2f)
    empty: bool = False  # no pixel passed θ: the box is the whole image


def attention_crop(map01, theta: float = 128, image: np.ndarray | None = None, *, size: tuple[int, int] | None = None) -> AttentionCrop:
    """Attention crop of paper 000 eq. 5: M_C = 1 where the (integrated) Guided Grad-CAM, scaled to
    0–255, is > θ; the smallest rectangle enclosing M_C cut from the image and enlarged to its size.

    Also usable as a training augmentation: pass the training image and its map.

    Args:
        map01: (H, W) map in [0, 1] (``Explanation.maps()["guided_gradcam"]``).
        theta: mask threshold θ ∈ [0, 255].
        image: optional (H', W'[, 3]) image; the map is resized to it when the sizes differ.
        size: (width, height) of the enlargement; default the image's own size.

    Returns:
        An ``AttentionCrop`` (crop/enlarged are None without an image).

    Raises:
        ValueError: θ outside [0, 255], a map that is not 2-D or not in [0, 1].
    """
    saliency = _as_map(map01)
    if not 0 <= theta <= 255:
        raise ValueError(f"theta must be in [0, 255] (paper 000 eq. 5), got {theta}")
    if saliency.size and (saliency.min() < -1e-6 or saliency.max() > 1 + 1e-6):
        raise ValueError("map01 must be normalised to [0, 1]; use regions.normalise_map first")
    if image is not None:
        image = np.asarray(image)
        if image.shape[:2] != saliency.shape:
            saliency = cv2.resize(saliency, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    mask = np.rint(saliency * 255.0) > theta  # eq. 5: strictly greater than θ
    height, width = mask.shape
    empty = not mask.any()
    if empty:
        box = (0, 0, width, height)
    else:
        x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
        box = (x, y, x + w, y + h)
    crop = enlarged = None
    if image is not None:
        crop = image[box[1]:box[3], box[0]:box[2]].copy()
        target = size or (image.shape[1], image.shape[0])
        enlarged = cv2.resize(crop, target, interpolation=cv2.INTER_LINEAR)
    return AttentionCrop(box=box, mask=mask, crop=crop, enlarged=enlarged, empty=empty)


@dataclass
class LesionMaskPatch:
    """One connected component of the τ mask."""

    box: tuple[int, int, int, int]  # (x0, y0, x1, y1), exclusive ends
    area: int
    mask: np.ndarray  # (y1-y0, x1-x0) bool, this component only
    centroid: tuple[float, float]  # (x, y)


@dataclass
class LesionMask:
    """Paper 004 eq. 4: M = L_norm > τ, split into connected lesion patches."""

    mask: np.ndarray  # (H, W) bool
    patches: list[LesionMaskPatch] = field(default_factory=list)
    total_area: int = 0


def lesion_mask(saliency, tau: float = 0.6, *, fov_mask=None, min_area: int = 1) -> LesionMask:
    """Lesion mask of paper 004 eq. 4 and its connected components (cv2.connectedComponentsWithStats).

    Args:
        saliency: (H, W) map (any range; normalised to [0, 1] here, inside ``fov_mask`` if given).
        tau: threshold τ ∈ [0, 1] (the paper draws it from [0.5, 0.8]).
        fov_mask: optional (H, W) bool field of view; nothing outside it is a lesion.
        min_area: components smaller than this many pixels are dropped.

    Returns:
        A ``LesionMask`` with patches sorted by decreasing area.

    Raises:
        ValueError: τ outside [0, 1], min_area < 1, or a malformed map.
    """
    if not 0 <= tau <= 1:
        raise ValueError(f"tau must be in [0, 1] (paper 004 eq. 4), got {tau}")
    if min_area < 1:
        raise ValueError(f"min_area must be ≥ 1, got {min_area}")
    norm = normalise_map(saliency, fov_mask)
    mask = norm > tau
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    patches = []
    keep = np.zeros_like(mask)
    for index in range(1, count):  # 0 is the background
        x, y, w, h, area = (int(v) for v in stats[index])
        if area < min_area:
            continue
        component = labels[y:y + h, x:x + w] == index
        keep[y:y + h, x:x + w] |= component
        patches.append(LesionMaskPatch(box=(x, y, x + w, y + h), area=area, mask=component,
                                   centroid=(float(centroids[index][0]), float(centroids[index][1]))))
    patches.sort(key=lambda p: -p.area)
    return LesionMask(mask=keep, patches=patches, total_area=int(keep.sum()))


@dataclass
class LesionOutlines:
    """Paper 001 Fig. 6c: contours per lesion label, one colour each, and the legend."""

    contours: dict[str, list[np.ndarray]]  # label -> OpenCV contours (N, 1, 2) int32, (x, y)
    colours: dict[str, tuple[int, int, int]]  # label -> RGB
    legend: list[tuple[str, tuple[int, int, int]]]  # (label, RGB) for labels that have outlines


def lesion_colour(label: str, index: int = 0) -> tuple[int, int, int]:
    """Paper 001's colour for a lesion label (BP/MA pink, HM/HE red, HEX/EX yellow, CWS/SE blue), else a palette colour."""
    return LESION_COLOURS.get(label.strip().upper(), PALETTE[index % len(PALETTE)])


def lesion_outlines(maps_by_label: Mapping[str, np.ndarray], thresholds=0.5, *, fov_mask=None) -> LesionOutlines:
    """Threshold segmentation + contours of each label's map (paper 001 Fig. 6c).

    Args:
        maps_by_label: {label: (H, W) map}, e.g. ``expl.maps(target=c)["guided_gradcam"]`` per class.
        thresholds: one τ for all labels, a {label: τ} mapping or a list in label order (maps
            are normalised to [0, 1] first).
        fov_mask: optional field-of-view mask.

    Returns:
        ``LesionOutlines``.

    Raises:
        ValueError: thresholds of the wrong length or missing a label.
    """
    labels = list(maps_by_label)
    if isinstance(thresholds, Mapping):
        missing = [label for label in labels if label not in thresholds]
        if missing:
            raise ValueError(f"thresholds missing for labels: {missing}")
        per_label = {label: float(thresholds[label]) for label in labels}
    elif isinstance(thresholds, Sequence) and not isinstance(thresholds, str):
        if len(thresholds) != len(labels):
            raise ValueError(f"got {len(thresholds)} thresholds for {len(labels)} labels")
        per_label = dict(zip(labels, map(float, thresholds)))
    else:
        per_label = {label: float(thresholds) for label in labels}
    contours, colours, legend = {}, {}, []
    for index, label in enumerate(labels):
        mask = lesion_mask(maps_by_label[label], per_label[label], fov_mask=fov_mask).mask
        found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contours[label] = list(found)
        colours[label] = lesion_colour(label, index)
        if found:
            legend.append((label, colours[label]))
    return LesionOutlines(contours=contours, colours=colours, legend=legend)
