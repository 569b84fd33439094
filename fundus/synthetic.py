"""Synthetic fundus-like photographs with known geometry and lesion masks.

Not realistic enough to train on; realistic enough to exercise every stage with a known answer:
the field-of-view circle (border, notch, exposure, offset centre), an optic disc, branching
vessels and the four DR lesion types of IDRiD (MA, HE, EX, SE) with exact pixel masks and boxes.
Used by the tests of every package and as the app's example images.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import cv2
import numpy as np

LESION_TYPES = ("MA", "HE", "EX", "SE")
BORDERS = ("black", "none", "notched")
# Lesion count drawn per type when only the type is asked for (low, high inclusive).
_DEFAULT_COUNTS = {"MA": (6, 12), "HE": (2, 5), "EX": (4, 9), "SE": (1, 3)}

Lesions = Union[Sequence[str], int, Mapping[str, int]]


def make_fundus(
    size: int = 512,
    *,
    seed: int = 0,
    radius_frac: float = 0.45,
    center: tuple[float, float] | None = None,
    border: str = "black",
    lesions: Lesions = LESION_TYPES,
    exposure: float = 1.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw a synthetic fundus photograph.

    Args:
        size: width of the photo in pixels (also its height, except ``border="notched"``).
        seed: makes the photo deterministic.
        radius_frac: field-of-view radius as a fraction of ``size`` (``border="none"`` ignores it).
        center: field centre ``(cx, cy)`` in pixels; default the middle of the photo.
        border: ``"black"`` field on a black surround; ``"none"`` field touching all four sides
            (black only in the corners); ``"notched"`` an IDRiD/Canon-like photo, wider than
            tall (height 0.8 × size), the circle cut at top and bottom, a small notch tab on the right.
        lesions: lesion types to draw (each gets a random count), a total count of lesions of
            random types, or a mapping type → count. Types: MA, HE, EX, SE.
        exposure: brightness multiplier (0.3 = under-exposed, 1.5 = over-exposed).

    Returns:
        ``(rgb, info)``: ``rgb`` an ``(H, W, 3) uint8`` array; ``info`` holds ``center`` (cx, cy),
        ``radius``, ``fov_mask`` (H, W) bool, ``optic_disc`` (cx, cy, r), ``masks`` (type → (H, W)
        bool, one per requested type) and ``boxes`` (list of (type, x0, y0, x1, y1) in pixels).

    Raises:
        ValueError: on an unknown border or lesion type, a size below 64, a non-positive exposure
            or radius.
    """
    _check_photo_arguments(size, border, exposure, radius_frac)
    counts_wanted = _lesion_counts(lesions, np.random.default_rng([seed, 1]))
    rng = np.random.default_rng(seed)  # drawn from in this order: retina, disc, vessels, lesions

    width = size
    height = int(round(0.8 * size)) if border == "notched" else size
    radius = size / 2.0 if border == "none" else radius_frac * size
    cx, cy = center if center is not None else ((width - 1) / 2.0, (height - 1) / 2.0)

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    dist = np.hypot(xx - cx, yy - cy) / radius  # 0 at the centre, 1 on the field edge
    img = _retina(rng, dist)
    od_x, od_y, od_r = _disc_and_macula(rng, img, xx, yy, (cx, cy), radius)
    vessels = _draw_vessels(rng, height, width, (od_x, od_y), od_r, radius, (cx, cy))
    img *= 1.0 - vessels[..., None] * np.array([0.35, 0.6, 0.55], np.float32)  # dark red, not brown

    od = np.exp(-(((xx - od_x) ** 2 + (yy - od_y) ** 2) / (2 * (0.8 * od_r) ** 2)))
    img = img * (1 - od[..., None]) + od[..., None] * np.array([250.0, 225.0, 150.0], dtype=np.float32)

    fov = _field_of_view(dist, border, (cx, cy), radius, size)
    masks, boxes = _draw_lesions(img, rng, counts_wanted, (cx, cy), radius, (od_x, od_y, od_r), fov)
    info = {"center": (float(cx), float(cy)), "radius": float(radius), "fov_mask": fov,
            "optic_disc": (float(od_x), float(od_y), float(od_r)), "masks": masks, "boxes": boxes, "border": border,
            "seed": seed}
    return _photographed(img, exposure, fov), info


def _check_photo_arguments(size: int, border: str, exposure: float, radius_frac: float) -> None:
    if size < 64:
        raise ValueError(f"size must be at least 64 px, got {size}")
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    if exposure <= 0:
        raise ValueError(f"exposure must be positive, got {exposure}")
    if radius_frac <= 0:
        raise ValueError(f"radius_frac must be positive, got {radius_frac}")


def _retina(rng: np.random.Generator, dist: np.ndarray) -> np.ndarray:
    """Background: orange-red retina, darker towards the periphery (vignetting), slow texture; (H, W, 3) float32."""
    height, width = dist.shape
    texture = _smooth_noise(rng, height, width, cells=6) * 0.10 + _smooth_noise(rng, height, width, cells=24) * 0.04
    shade = np.clip(1.0 - 0.55 * dist**2.6, 0.25, 1.0) * (1.0 + texture)
    base = np.array([205.0, 92.0, 38.0], dtype=np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    return shade[..., None] * base


def _disc_and_macula(rng: np.random.Generator, img: np.ndarray, xx: np.ndarray, yy: np.ndarray,
                     center: tuple[float, float], radius: float) -> tuple[float, float, float]:
    """Place the optic disc on the nasal side and darken the macula (avascular) on the temporal side of ``img`` in
    place; returns the disc (cx, cy, r), painted once the vessels are drawn."""
    cx, cy = center
    side = 1 if rng.random() < 0.5 else -1
    od_x = cx + side * radius * rng.uniform(0.38, 0.48)
    od_y = cy + radius * rng.uniform(-0.08, 0.08)
    od_r = radius * rng.uniform(0.09, 0.11)
    mac_x, mac_y = cx - side * radius * 0.15, cy + radius * 0.02
    macula = np.exp(-(((xx - mac_x) ** 2 + (yy - mac_y) ** 2) / (2 * (0.12 * radius) ** 2)))
    img *= (1.0 - 0.35 * macula)[..., None]
    return od_x, od_y, od_r


def _field_of_view(dist: np.ndarray, border: str, center: tuple[float, float], radius: float,
                   size: int) -> np.ndarray:
    fov = dist <= 1.0
    if border == "notched":
        # A small tab outside the circle on the right, like the IDRiD/Kowa orientation notch.
        cx, cy = center
        tab_y0 = int(cy - 0.30 * radius)
        tab_x0 = int(cx + radius * np.cos(np.arcsin(0.30)) - 2)
        fov[tab_y0 : tab_y0 + max(3, size // 60), tab_x0 : tab_x0 + max(4, size // 40)] = True
    return fov


def _photographed(img: np.ndarray, exposure: float, fov: np.ndarray) -> np.ndarray:
    """The drawn retina as a camera gives it: exposed, slightly blurred, black outside the field, 8-bit."""
    img = img * exposure
    img = cv2.GaussianBlur(img, (0, 0), 0.6)  # optics: no perfectly sharp edges
    img[~fov] = 0.0
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _lesion_counts(lesions: Lesions, rng: np.random.Generator) -> dict[str, int]:
    if isinstance(lesions, bool):
        raise TypeError("lesions must be a sequence of types, a count or a mapping, not a bool")
    if isinstance(lesions, (int, np.integer)):
        if lesions < 0:
            raise ValueError(f"lesion count must be non-negative, got {lesions}")
        kinds = rng.choice(len(LESION_TYPES), size=int(lesions))
        return {name: int((kinds == i).sum()) for i, name in enumerate(LESION_TYPES) if (kinds == i).any()}
    if isinstance(lesions, Mapping):
        counts = {str(k): int(v) for k, v in lesions.items()}
    elif isinstance(lesions, str):
        raise TypeError(f"lesions must be a sequence of types such as ('MA', 'EX'), got the string {lesions!r}")
    else:
        counts = {}
        for name in map(str, lesions):
            low, high = _DEFAULT_COUNTS.get(name, (1, 1))
            counts[name] = int(rng.integers(low, high + 1))
    unknown = sorted(set(counts) - set(LESION_TYPES))
    if unknown:
        raise ValueError(f"unknown lesion types {unknown}; expected some of {LESION_TYPES}")
    if any(v < 0 for v in counts.values()):
        raise ValueError(f"lesion counts must be non-negative, got {counts}")
    return counts


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Zero-mean noise in about [-1, 1] varying over ``size / cells`` pixels (bicubic upsampling)."""
    coarse = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _draw_vessels(rng, height, width, od_center, od_r, radius, fov_center) -> np.ndarray:
    """Branching random-walk vessels leaving the optic disc: arcades up and down, thinning out."""
    canvas = np.zeros((height, width), np.float32)
    scale = radius / 230.0
    stack = []
    for k in range(rng.integers(5, 7)):
        angle = rng.uniform(0, 2 * np.pi) if k > 3 else (np.pi / 2 if k % 2 else -np.pi / 2) + rng.uniform(-0.4, 0.4)
        stack.append((od_center[0], od_center[1], angle, max(1.0, 4.5 * scale * rng.uniform(0.7, 1.0)), 0))
    while stack:
        x, y, angle, thickness, depth = stack.pop()
        points = [(x, y)]
        for _ in range(int(rng.integers(12, 22))):
            angle += rng.normal(0, 0.22)
            step = radius * 0.045
            x, y = x + step * np.cos(angle), y + step * np.sin(angle)
            if np.hypot(x - fov_center[0], y - fov_center[1]) > radius * 1.02:
                break
            points.append((x, y))
            if depth < 3 and rng.random() < 0.09:
                branch_angle = angle + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9)
                stack.append((x, y, branch_angle, max(1.0, thickness * 0.7), depth + 1))
        if len(points) > 1:
            pts = np.round(np.array(points) * 4).astype(np.int32)  # 2 fractional bits: smooth curves
            width = max(1, int(round(thickness)))
            cv2.polylines(canvas, [pts], False, 1.0, thickness=width, lineType=cv2.LINE_AA, shift=2)
    return np.clip(canvas, 0, 1)


def _draw_lesions(img, rng, counts, fov_center, radius, optic_disc, fov):
    """Draw lesions in place on ``img`` (float RGB); return per-type masks and pixel boxes."""
    height, width = img.shape[:2]
    scale = max(radius / 230.0, 0.3)
    half = int(np.ceil(30 * scale)) + 4  # every lesion fits a (2·half)² window: draw locally, fast
    masks: dict[str, np.ndarray] = {}
    boxes: list[tuple[str, int, int, int, int]] = []
    for name in LESION_TYPES:
        if name not in counts:
            continue
        mask_total = np.zeros((height, width), bool)
        for _ in range(counts[name]):
            x, y = _place(rng, fov_center, radius, optic_disc, fov)
            x0, y0 = max(0, int(x) - half), max(0, int(y) - half)
            x1, y1 = min(width, int(x) + half), min(height, int(y) + half)
            px, py = int(x) - x0, int(y) - y0  # lesion centre inside the window
            blob = np.zeros((y1 - y0, x1 - x0), np.uint8)
            if name == "MA":  # microaneurysm: tiny round dark-red dot
                r = max(1, int(round(rng.uniform(1.5, 2.5) * scale)))
                cv2.circle(blob, (px, py), r, 1, -1)
                colour, alpha = (120.0, 25.0, 20.0), 0.9
            elif name == "HE":  # haemorrhage: dark-red blot, irregular ellipse
                axes = (max(2, int(rng.uniform(4, 9) * scale)), max(2, int(rng.uniform(3, 7) * scale)))
                cv2.ellipse(blob, (px, py), axes, rng.uniform(0, 180), 0, 360, 1, -1)
                colour, alpha = (105.0, 20.0, 15.0), 0.85
            elif name == "EX":  # hard exudates: a cluster of small bright yellow spots
                for _ in range(int(rng.integers(2, 6))):
                    ox, oy = rng.normal(0, 4 * scale, 2)
                    cv2.circle(blob, (int(px + ox), int(py + oy)), max(1, int(rng.uniform(1.5, 3.5) * scale)), 1, -1)
                colour, alpha = (245.0, 215.0, 80.0), 0.9
            else:  # SE, soft exudate (cotton-wool spot): pale, fluffy, soft-edged
                axes = (max(3, int(rng.uniform(7, 12) * scale)), max(3, int(rng.uniform(5, 9) * scale)))
                cv2.ellipse(blob, (px, py), axes, rng.uniform(0, 180), 0, 360, 1, -1)
                colour, alpha = (235.0, 200.0, 170.0), 0.7
            window_fov = fov[y0:y1, x0:x1]
            mask = (blob > 0) & window_fov
            if not mask.any():
                continue
            weight = mask.astype(np.float32) * alpha
            if name == "SE":  # fluffy: feather the edge; the mask stays the drawn ellipse
                weight = cv2.GaussianBlur(weight, (0, 0), 2.0 * scale) * window_fov
            patch = img[y0:y1, x0:x1]
            patch[:] = patch * (1 - weight[..., None]) + weight[..., None] * np.array(colour, np.float32)
            ys, xs = np.nonzero(mask)
            boxes.append((name, x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1))
            mask_total[y0:y1, x0:x1] |= mask
        masks[name] = mask_total
    return masks, boxes


def _place(rng, fov_center, radius, optic_disc, fov) -> tuple[float, float]:
    """A random point well inside the visible field and away from the optic disc."""
    odx, ody, odr = optic_disc
    height, width = fov.shape
    for _ in range(200):
        rho = radius * 0.8 * np.sqrt(rng.random())
        theta = rng.uniform(0, 2 * np.pi)
        x, y = fov_center[0] + rho * np.cos(theta), fov_center[1] + rho * np.sin(theta)
        inside = 8 <= x < width - 8 and 8 <= y < height - 8 and fov[int(y), int(x)]
        if inside and np.hypot(x - odx, y - ody) > 2.2 * odr:
            return x, y
    return fov_center
