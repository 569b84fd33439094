"""Pictures: heat-map overlays (OpenCV colormaps by name), boxes, lesion outlines, PNG panels.

All images are (H, W, 3) uint8 RGB in and out.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from explain.regions import LesionOutlines


def colormap_names() -> list[str]:
    """OpenCV colormap names accepted by ``overlay`` ("jet", "turbo", "viridis", …)."""
    return sorted(n[len("COLORMAP_"):].lower() for n in dir(cv2) if n.startswith("COLORMAP_"))


def _colormap(name: str) -> int:
    code = getattr(cv2, f"COLORMAP_{str(name).upper()}", None)
    if code is None:
        raise ValueError(f"unknown colormap {name!r}; choose from {', '.join(colormap_names())}")
    return code


def _rgb(image, name: str = "image") -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name} must be (H, W, 3) RGB or (H, W) grey, got shape {array.shape}")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    return array


def heatmap(map01, colormap: str = "jet") -> np.ndarray:
    """A [0, 1] map coloured with an OpenCV colormap, as RGB uint8."""
    values = np.clip(np.asarray(map01, dtype=np.float32), 0.0, 1.0)
    if values.ndim != 2:
        raise ValueError(f"map must be 2-D (H, W), got shape {values.shape}")
    coloured = cv2.applyColorMap(np.uint8(np.rint(values * 255)), _colormap(colormap))
    return cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)


def overlay(image, map01, alpha: float = 0.5, colormap: str = "jet", *, mask=None) -> np.ndarray:
    """Blend a coloured saliency map over the image: (1 − α)·image + α·heatmap.

    Args:
        image: (H, W, 3) RGB uint8 (or float in [0, 1]).
        map01: (h, w) map in [0, 1]; resized to the image when sizes differ.
        alpha: heat-map weight in [0, 1].
        colormap: OpenCV colormap name (see ``colormap_names``).
        mask: optional (H, W) bool; outside it the image is left untouched (e.g. the FOV).

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        ValueError: α outside [0, 1], an unknown colormap, bad shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = _rgb(image)
    values = np.asarray(map01, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"map must be 2-D (H, W), got shape {values.shape}")
    if values.shape != base.shape[:2]:
        values = cv2.resize(values, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    blended = cv2.addWeighted(base, 1.0 - alpha, heatmap(values, colormap), alpha, 0.0)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != base.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match the image {base.shape[:2]}")
        blended = np.where(mask[..., None], blended, base)
    return blended


def draw_boxes(image, boxes: Sequence[Sequence[int]], colour=(0, 255, 0), thickness: int = 2,
               labels: Sequence[str] | None = None) -> np.ndarray:
    """Rectangles (x0, y0, x1, y1) in pixels (x1/y1 exclusive) drawn on a copy of the image."""
    canvas = _rgb(image).copy()
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"got {len(labels)} labels for {len(boxes)} boxes")
    for index, box in enumerate(boxes):
        if len(box) != 4:
            raise ValueError(f"a box is (x0, y0, x1, y1), got {box!r}")
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), tuple(int(c) for c in colour), thickness)
        if labels is not None:
            cv2.putText(canvas, str(labels[index]), (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        tuple(int(c) for c in colour), 1, cv2.LINE_AA)
    return canvas


def draw_outlines(image, outlines: LesionOutlines, thickness: int = 2, *, legend: bool = True) -> np.ndarray:
    """Lesion outlines (paper 001 Fig. 6c), one colour per label, with an optional legend box."""
    canvas = _rgb(image).copy()
    for label, contours in outlines.contours.items():
        if contours:
            cv2.drawContours(canvas, contours, -1, outlines.colours[label], thickness, cv2.LINE_AA)
    if legend:
        for row, (label, colour) in enumerate(outlines.legend):
            y = 14 + 16 * row
            cv2.rectangle(canvas, (4, y - 9), (14, y + 1), colour, -1)
            cv2.putText(canvas, label, (18, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def panel_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, *, columns: int | None = None,
               tile: int | None = None) -> np.ndarray:
    """Tiles side by side with a title bar each, as one RGB image for a PNG panel.

    Args:
        images: RGB/grey images or [0, 1] maps (shown with the jet colormap).
        titles: one title per image.
        columns: tiles per row (default all in one row up to 4).
        tile: side of each square tile (default the first image's height).

    Raises:
        ValueError: no images, or titles not matching the images.
    """
    if not images:
        raise ValueError("panel_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    side = tile or int(np.asarray(images[0]).shape[0])
    columns = columns or min(len(images), 4)
    bar = 18
    tiles = []
    for index, item in enumerate(images):
        array = np.asarray(item)
        if array.ndim == 2 and np.issubdtype(array.dtype, np.floating):
            array = heatmap(array)
        array = cv2.resize(_rgb(array), (side, side), interpolation=cv2.INTER_AREA)
        header = np.zeros((bar, side, 3), np.uint8)
        if titles is not None:
            cv2.putText(header, str(titles[index])[: max(4, side // 7)], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(np.vstack([header, array]))
    blank = np.zeros_like(tiles[0])
    rows = []
    for start in range(0, len(tiles), columns):
        row = tiles[start:start + columns]
        row += [blank] * (columns - len(row))
        rows.append(np.hstack(row))
    return np.vstack(rows)


def save_png(path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG (OpenCV writes BGR, hence the swap)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(_rgb(rgb), cv2.COLOR_RGB2BGR)):
        raise ValueError(f"could not write PNG to {path}")
    return path
