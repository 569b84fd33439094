"""Field of view (FOV): the illuminated circular retina inside a fundus photograph.

Paper 001 removes "the meaningless contents of a normative fundus image, such as black
background" before resizing; that needs the field's circle. Cameras differ: a full circle on
black, a circle cut at top and bottom (IDRiD, Canon: the area alone would under-estimate the
radius), a small orientation notch, a field filling the whole frame, dark or bright exposures.
So the circle is fitted by least squares to the visible field boundary only, ignoring boundary
points that lie on the photo's edges or on straight cuts, with outliers (notches) trimmed.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DETECT_SIDE = 256  # the FOV is found on a copy downscaled to this longest side (fast, and precise enough)
_CORNER_FRAC = 0.04  # corner patches that tell the background level
# Field thresholds tried in turn: background + this fraction of (field level - background).
_FIELD_FRACTIONS = (0.06, 0.15, 0.3)


@dataclass
class FieldOfView:
    """The fundus field of a photo.

    Attributes:
        center: circle centre ``(cx, cy)`` in pixels of the photo (may lie outside it).
        radius: circle radius in pixels.
        mask: ``(H, W)`` bool, the field (circle ∩ photo); the whole photo when not found.
        found: False when no field could be detected (the caller should warn).
        fills_frame: True when the field covers the whole photo (no dark surround at all).
    """

    center: tuple[float, float]
    radius: float
    mask: np.ndarray
    found: bool
    fills_frame: bool = False


def detect_fov(rgb: np.ndarray) -> FieldOfView:
    """Detect the circular field of view of a fundus photo.

    Args:
        rgb: ``(H, W, 3) uint8`` RGB photo.

    Returns:
        The :class:`FieldOfView`; ``found=False`` (mask = whole photo) when there is none, e.g. a
        blank or noise image. Never raises on image content.

    Raises:
        TypeError: ``rgb`` is not a uint8 array.
        ValueError: ``rgb`` is not ``(H, W, 3)``.
    """
    cx, cy, radius, found, fills = fit_fov_circle(rgb)
    height, width = rgb.shape[:2]
    return FieldOfView((cx, cy), radius, circle_mask((height, width), (cx, cy), radius, found), found, fills)


def circle_mask(shape: tuple[int, int], center: tuple[float, float], radius: float, found: bool = True) -> np.ndarray:
    """``(H, W)`` bool disc: the pixels whose centre lies within the circle (all True when not found).

    Row by row (one slice per row), so a 10-megapixel mask costs a few milliseconds; exact at any
    size, unlike a rasterised ``cv2.circle`` which adds about half a pixel all round.
    """
    height, width = shape
    if not found:
        return np.ones(shape, bool)
    mask = np.zeros(shape, bool)
    cx, cy = center
    rows = np.arange(max(0, int(np.ceil(cy - radius))), min(height, int(np.floor(cy + radius)) + 1))
    half = np.sqrt(np.maximum(radius**2 - (rows - cy) ** 2, 0.0))
    starts = np.clip(np.ceil(cx - half), 0, width).astype(int)
    stops = np.clip(np.floor(cx + half) + 1, 0, width).astype(int)
    for row, start, stop in zip(rows.tolist(), starts.tolist(), stops.tolist()):
        mask[row, start:stop] = True
    return mask


def fit_fov_circle(rgb: np.ndarray) -> tuple[float, float, float, bool, bool]:
    """The field circle ``(cx, cy, radius, found, fills_frame)`` in pixels of ``rgb`` (no mask).

    Args:
        rgb: ``(H, W, 3) uint8`` RGB photo.

    Raises:
        TypeError: ``rgb`` is not a uint8 array.
        ValueError: ``rgb`` is not ``(H, W, 3)``.
    """
    _check_rgb(rgb)
    height, width = rgb.shape[:2]
    not_found = ((width - 1) / 2.0, (height - 1) / 2.0, float(np.hypot(width, height) / 2.0), False, False)
    small, factor = _downscale(rgb)
    # Lightness = max channel: the fundus is red, so red carries the field even when under-exposed.
    light = small.max(axis=2).astype(np.float32)
    h, w = light.shape
    k = max(2, int(round(_CORNER_FRAC * min(h, w))))
    corners = [light[:k, :k], light[:k, -k:], light[-k:, :k], light[-k:, -k:]]
    background = float(min(np.median(c) for c in corners))
    field_level = float(np.percentile(light, 95))
    if field_level - background < 12:  # blank, or nothing brighter than the surround
        return not_found
    if background > 0.35 * field_level:
        # No dark surround anywhere: the field fills the frame, or this is not a fundus at all.
        if _looks_like_fundus(small):
            return ((width - 1) / 2.0, (height - 1) / 2.0, float(np.hypot(width, height) / 2.0), True, True)
        return not_found

    # Noise floor of the surround: the darkest corner's own spread (JPEG noise, sensor offset).
    darkest = min(corners, key=np.median)
    floor = float(np.percentile(darkest, 99)) + 4.0
    # Lowest threshold first, to keep a strongly vignetted periphery in the field; a higher one
    # when the low one also takes in glare or a halo outside the field (the blob is then not round).
    for fraction in _FIELD_FRACTIONS:
        threshold = max(floor, background + fraction * (field_level - background))
        circle = _field_circle(light > threshold)
        if circle is not None:
            break
    else:
        return not_found
    cx, cy, r = circle
    # Pixel centres: small-image coordinate u maps to (u + 0.5) * factor - 0.5 in the photo.
    return ((cx + 0.5) * factor - 0.5, (cy + 0.5) * factor - 0.5, r * factor, True, False)


def _field_circle(above: np.ndarray) -> tuple[float, float, float] | None:
    """Circle of the largest bright blob in a thresholded small image, or None when implausible."""
    h, w = above.shape
    field = cv2.morphologyEx(above.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))  # specks, text
    n, labels, stats, _ = cv2.connectedComponentsWithStats(field, connectivity=8)
    if n < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < 0.08 * h * w:
        return None
    field = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(field, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    circle = _fit_boundary_circle(max(contours, key=len)[:, 0, :].astype(np.float64), (h, w))
    if circle is None:
        return None
    cx, cy, r, residual = circle
    # Plausibility: a real field is a big, round blob that fills its circle (inside the photo).
    disc = circle_mask((h, w), (cx, cy), r)
    overlap = float((field.view(bool) & disc).sum()) / max(1.0, float(disc.sum()))
    if r < 0.15 * min(h, w) or residual > 0.04 * r or overlap < 0.85:
        return None
    return cx, cy, r


def _fit_boundary_circle(points: np.ndarray, shape: tuple[int, int]):
    """Least-squares circle through the field boundary, ignoring frame edges, straight cuts, notches."""
    h, w = shape
    x, y = points[:, 0], points[:, 1]
    keep = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)  # the photo's edge is not the field's edge
    # Straight horizontal/vertical cuts inside the photo lie on the blob's extreme rows/columns.
    keep &= (y > y.min() + 1) & (y < y.max() - 1) & (x > x.min() + 1) & (x < x.max() - 1)
    pts = points[keep]
    if len(pts) < 20:
        return None
    for _ in range(4):
        circle = _kasa_fit(pts)
        if circle is None:
            return None
        cx, cy, r = circle
        residuals = np.hypot(pts[:, 0] - cx, pts[:, 1] - cy) - r
        mad = float(np.median(np.abs(residuals)))
        inliers = np.abs(residuals) <= max(1.5, 3.0 * mad)
        if inliers.all() or inliers.sum() < 20:
            break
        pts = pts[inliers]  # trim the notch tab and other bumps, refit
    # The kept arc must span enough of the circle to pin it down (not one short segment).
    angles = np.arctan2(pts[:, 1] - cy, pts[:, 0] - cx)
    if np.histogram(angles, bins=12, range=(-np.pi, np.pi))[0].astype(bool).sum() < 4:
        return None
    return cx, cy, r, mad


def _kasa_fit(pts: np.ndarray):
    """Algebraic circle fit x² + y² + D x + E y + F = 0 (Kåsa 1976), linear least squares."""
    x, y = pts[:, 0], pts[:, 1]
    a = np.column_stack([x, y, np.ones_like(x)])
    b = -(x**2 + y**2)
    (d, e, f), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = -d / 2.0, -e / 2.0
    r2 = cx**2 + cy**2 - f
    if not np.isfinite(r2) or r2 <= 0:
        return None
    return float(cx), float(cy), float(np.sqrt(r2))


def _looks_like_fundus(small: np.ndarray) -> bool:
    """A field filling the frame is still a reddish, smooth photo; noise and grey cards are not."""
    mean = small.reshape(-1, 3).astype(np.float32).mean(axis=0)
    reddish = mean[0] > 1.3 * max(mean[2], 1.0) and mean[0] > mean[1]
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    roughness = float(np.median(np.abs(cv2.Laplacian(gray, cv2.CV_32F))))
    return bool(reddish and roughness < 12.0)


def _downscale(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """Shrink by an integer factor f (OpenCV's fast exact area path; the generic one is ~5× slower).

    Small pixel ``u`` averages original pixels ``[u f, (u + 1) f)``; a remainder of fewer than f
    pixels at the right/bottom edge is left out.
    """
    return shrink_by_integer(rgb, max(1, max(rgb.shape[:2]) // DETECT_SIDE))


def shrink_by_integer(image: np.ndarray, factor: int) -> tuple[np.ndarray, float]:
    """Area-average ``factor × factor`` blocks; returns ``(small, factor)``."""
    if factor <= 1:
        return image, 1.0
    height, width = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    small = cv2.resize(image[:height, :width], (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    return small, float(factor)


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise TypeError(f"expected a uint8 numpy array (use fundus.load_image), got {type(rgb).__name__} "
                        f"{getattr(rgb, 'dtype', '')}".rstrip())
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
