"""ELLG lesion generation (paper 004, section 2.3): new pathological images from explained ones.

The pipeline for one generated image, in the paper's order:

1. lesion patch extraction — the binary mask M of eq. 4 (GMSM > τ, ``explain.lesion_mask``) split
   into connected components, each applied over the source image (``extract_lesion_patches``);
2. random shifting — each patch is moved to a random place until it overlaps no other patch, or
   ``max_tries`` (100 in the paper) is reached (``shift_patches``);
3. adaptive colour transfer — Reinhard et al. 2001: the source photo is given the mean and standard
   deviation of the target photo in lαβ space (statistics over both fields of view), and its lesion
   pixels are taken in that tone, so a lesion keeps its contrast to the retina around it
   (``reinhard_transfer``);
4. mixup blending, eq. 5 (``blend_lesions``) and label mixing, eq. 6 (``mix_labels`` + ``classify``).

``generate_lesion_image`` chains the four (the colour transfer is per pixel, so it runs before the
shift on the whole source photo). Everything here is pure numpy/OpenCV over uint8 RGB
arrays, so the recipe (train/recipes/ellg.py) only has to supply images, saliency maps and labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from fundus.tasks import DEFAULT_GRADE_CUTOFFS

__all__ = [
    "LesionPatch",
    "GeneratedImage",
    "rgb_to_lalphabeta",
    "lalphabeta_to_rgb",
    "reinhard_transfer",
    "extract_lesion_patches",
    "shift_patches",
    "compose_lesion_layer",
    "blend_lesions",
    "mix_labels",
    "classify",
    "generate_lesion_image",
]

# Reinhard et al. 2001, eq. 1 (RGB -> LMS cone space) and eq. 4 (log LMS -> lαβ, Ruderman et al.).
_RGB_TO_LMS = np.array(
    [[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]], dtype=np.float64
)
_LMS_TO_LAB = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array(
    [[1, 1, 1], [1, 1, -2], [1, -1, 0]], dtype=np.float64
)
# Exact inverses (the paper's rounded inverse matrix would make the round trip drift by ~1 grey level).
_LMS_TO_RGB = np.linalg.inv(_RGB_TO_LMS)
_LAB_TO_LMS = np.linalg.inv(_LMS_TO_LAB)
# log10 needs LMS > 0: floor at one 8-bit step so black pixels do not dominate the statistics.
_LMS_FLOOR = 1.0 / 255.0


@dataclass
class LesionPatch:
    """One connected lesion region (paper 004: "lesion patch").

    Attributes:
        box: (x0, y0, x1, y1) in pixels of the image it sits in, x1/y1 exclusive.
        mask: (h, w) bool, the region inside ``box``.
        pixels: (h, w, 3) uint8 RGB of the source image inside ``box`` (zero outside ``mask``).
        overlaps: set by ``shift_patches``: True when no free place was found within ``max_tries``.
        origin: the box the patch was cut from (kept through shifts).
    """

    box: tuple[int, int, int, int]
    mask: np.ndarray
    pixels: np.ndarray
    overlaps: bool = False
    origin: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.origin is None:
            self.origin = self.box

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def moved_to(self, x0: int, y0: int) -> "LesionPatch":
        h, w = self.mask.shape
        return LesionPatch((x0, y0, x0 + w, y0 + h), self.mask, self.pixels, self.overlaps, self.origin)


@dataclass
class GeneratedImage:
    """The result of ``generate_lesion_image``.

    Attributes:
        image: (H, W, 3) uint8, the blended image I_b of eq. 5.
        label: the grade l_b of eq. 6 (after ``classify``).
        mixed_value: r·l_s + (1 − r)·l_o before ``classify``.
        r: the blending ratio used.
        patches: the shifted patches (boxes in the generated image's pixels).
        lesion_mask: (H, W) bool, where the lesion layer I_s is non-zero.
    """

    image: np.ndarray
    label: int
    mixed_value: float
    r: float
    patches: list[LesionPatch] = field(default_factory=list)
    lesion_mask: np.ndarray | None = None


def _check_rgb(name: str, image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {image.shape}")


def _check_mask(name: str, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {mask.shape}")
    return mask.astype(bool)


def rgb_to_lalphabeta(rgb: np.ndarray) -> np.ndarray:
    """RGB (uint8 0–255 or float 0–1) → Ruderman's lαβ space as used by Reinhard et al. 2001.

    OpenCV and scikit-image only offer CIE L*a*b*, not lαβ, hence the two matrices here.

    Args:
        rgb: (..., 3) array; uint8 is read as 0–255, floats as 0–1.

    Returns:
        (..., 3) float64 lαβ.

    Raises:
        ValueError: when the last axis is not 3.
    """
    rgb = np.asarray(rgb)
    if rgb.shape[-1] != 3:
        raise ValueError(f"rgb must end with a colour axis of 3, got shape {rgb.shape}")
    scale = 255.0 if rgb.dtype == np.uint8 else 1.0
    lms = (rgb.astype(np.float64) / scale) @ _RGB_TO_LMS.T
    return np.log10(np.maximum(lms, _LMS_FLOOR)) @ _LMS_TO_LAB.T


def lalphabeta_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_lalphabeta``: lαβ → float RGB in 0–1 (not clipped).

    Args:
        lab: (..., 3) lαβ array.

    Raises:
        ValueError: when the last axis is not 3.
    """
    lab = np.asarray(lab, dtype=np.float64)
    if lab.shape[-1] != 3:
        raise ValueError(f"lab must end with a colour axis of 3, got shape {lab.shape}")
    lms = 10.0 ** (lab @ _LAB_TO_LMS.T)
    return lms @ _LMS_TO_RGB.T


def reinhard_transfer(
    source: np.ndarray,
    target: np.ndarray,
    *,
    source_mask: np.ndarray | None = None,
    target_mask: np.ndarray | None = None,
    apply_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Reinhard et al. 2001 colour transfer: give ``source`` the tone of ``target`` (paper 004, 2.3).

    Per lαβ channel: out = (src − μ_src) · σ_tgt / σ_src + μ_tgt, the statistics taken over the masked
    pixels only (e.g. the fields of view), so black borders and empty canvas do not bias them.

    Args:
        source: (H, W, 3) uint8 RGB image whose colours change.
        target: (H', W', 3) uint8 RGB image giving the tone.
        source_mask: (H, W) bool, pixels of ``source`` whose statistics are measured; default all.
        target_mask: (H', W') bool, pixels of ``target`` whose statistics are measured; default all.
        apply_mask: (H, W) bool, pixels of ``source`` that change; default ``source_mask``. Pixels
            outside it are returned unchanged.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        TypeError: when an image is not a numpy array.
        ValueError: on wrong shapes or an empty mask.
    """
    _check_rgb("source", source)
    _check_rgb("target", target)
    src_mask = np.ones(source.shape[:2], bool) if source_mask is None else _check_mask(
        "source_mask", source_mask, source.shape[:2])
    tgt_mask = np.ones(target.shape[:2], bool) if target_mask is None else _check_mask(
        "target_mask", target_mask, target.shape[:2])
    change = src_mask if apply_mask is None else _check_mask("apply_mask", apply_mask, source.shape[:2])
    if not src_mask.any():
        raise ValueError("source_mask selects no pixel")
    if not tgt_mask.any():
        raise ValueError("target_mask selects no pixel")
    src_lab = rgb_to_lalphabeta(source[src_mask])
    tgt_lab = rgb_to_lalphabeta(target[tgt_mask])
    src_mean, src_std = src_lab.mean(axis=0), src_lab.std(axis=0)
    tgt_mean, tgt_std = tgt_lab.mean(axis=0), tgt_lab.std(axis=0)
    # A flat source channel (σ = 0) has no spread to rescale: only its mean moves.
    gain = np.where(src_std > 1e-12, tgt_std / np.maximum(src_std, 1e-12), 1.0)
    moved = (rgb_to_lalphabeta(source[change]) - src_mean) * gain + tgt_mean
    out = source.copy()
    out[change] = np.clip(np.rint(lalphabeta_to_rgb(moved) * 255.0), 0, 255).astype(np.uint8)
    return out


def extract_lesion_patches(image: np.ndarray, mask: np.ndarray, *, min_area: int = 1) -> list[LesionPatch]:
    """Split a lesion mask into connected components and cut each out of ``image``.

    "We then applied these masks over the original image and get corresponding lesion patches"
    (paper 004, 2.3) — one patch per 8-connected component (cv2.connectedComponentsWithStats).
    Black source pixels (the surround outside the field of view) are no lesion pixels: eq. 5 blends
    only where the lesion image is non-zero.

    Args:
        image: (H, W, 3) uint8 RGB source image.
        mask: (H, W) bool lesion mask (eq. 4's M, or a ground-truth mask).
        min_area: components with fewer pixels are dropped (speckle).

    Returns:
        Patches ordered by decreasing area.

    Raises:
        TypeError: when ``image`` is not a numpy array.
        ValueError: on shape mismatches or ``min_area`` < 1.
    """
    _check_rgb("image", image)
    mask = _check_mask("mask", mask, image.shape[:2])
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1, got {min_area}")
    mask = mask & image.any(axis=2)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    patches = []
    for index in range(1, count):  # 0 is the background
        x, y, w, h, area = (int(v) for v in stats[index])
        if area < min_area:
            continue
        region = labels[y:y + h, x:x + w] == index
        pixels = image[y:y + h, x:x + w].copy()
        pixels[~region] = 0
        patches.append(LesionPatch((x, y, x + w, y + h), region, pixels))
    patches.sort(key=lambda p: p.area, reverse=True)
    return patches


def shift_patches(
    patches: Sequence[LesionPatch],
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    max_tries: int = 100,
    allowed: np.ndarray | None = None,
) -> list[LesionPatch]:
    """Randomly shift each patch until it overlaps no already placed patch (paper 004, 2.3).

    "We keep randomly shifting a single lesion patch in the loops (100 in our setting) until there is
    no overlap with other patches or the loop is over." A try is a uniformly random top-left corner
    keeping the patch inside the image (and its pixels inside ``allowed``, e.g. the target's field of
    view). When the loop is over the patch keeps its last try inside ``allowed`` and is flagged
    ``overlaps=True``, as in the paper; with no such try at all it stays where it was cut from (never
    on the black surround).

    Args:
        patches: patches from ``extract_lesion_patches``.
        shape: (H, W) of the image they will be blended into.
        rng: numpy random generator (reproducibility).
        max_tries: tries per patch (100 in the paper).
        allowed: optional (H, W) bool; a try whose pixels leave it counts as failed.

    Returns:
        New patches with moved boxes, in the input order.

    Raises:
        ValueError: when a patch is larger than the image or ``max_tries`` < 1.
    """
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    height, width = int(shape[0]), int(shape[1])
    if allowed is not None:
        allowed = _check_mask("allowed", allowed, (height, width))
    occupied = np.zeros((height, width), bool)
    placed = []
    for patch in patches:
        h, w = patch.mask.shape
        if h > height or w > width:
            raise ValueError(f"patch of size {w}x{h} does not fit into an image of {width}x{height}")
        found = False
        fallback = (min(patch.origin[0], width - w), min(patch.origin[1], height - h))
        for _ in range(max_tries):
            x0 = int(rng.integers(0, width - w + 1))
            y0 = int(rng.integers(0, height - h + 1))
            if allowed is not None and not allowed[y0:y0 + h, x0:x0 + w][patch.mask].all():
                continue
            fallback = (x0, y0)
            if not occupied[y0:y0 + h, x0:x0 + w][patch.mask].any():
                found = True
                break
        x0, y0 = fallback
        moved = patch.moved_to(x0, y0)
        moved.overlaps = not found
        occupied[y0:y0 + h, x0:x0 + w] |= patch.mask
        placed.append(moved)
    return placed


def compose_lesion_layer(patches: Sequence[LesionPatch], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Paint shifted patches onto a black canvas: the lesion image I_s of eq. 5 and its mask.

    Args:
        patches: patches with boxes inside ``shape``.
        shape: (H, W) of the canvas.

    Returns:
        (I_s (H, W, 3) uint8, mask (H, W) bool).
    """
    height, width = int(shape[0]), int(shape[1])
    layer = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), bool)
    for patch in patches:
        x0, y0, x1, y1 = patch.box
        layer[y0:y1, x0:x1][patch.mask] = patch.pixels[patch.mask]
        mask[y0:y1, x0:x1] |= patch.mask
    return layer, mask


def blend_lesions(
    lesion_layer: np.ndarray, other: np.ndarray, r: float, *, lesion_mask: np.ndarray | None = None
) -> np.ndarray:
    """Paper 004 eq. 5 (mixup, Zhang et al. 2017): I_b = r·I_s + (1 − r)·I_o where I_s ≠ 0, else I_o.

    Args:
        lesion_layer: I_s, (H, W, 3) uint8, the colour-transferred lesions on a black canvas.
        other: I_o, (H, W, 3) uint8, the randomly chosen normal image.
        r: blending ratio in [0, 1].
        lesion_mask: where I_s counts as non-zero; default: any channel of I_s ≠ 0.

    Returns:
        I_b, (H, W, 3) uint8 (rounded to the nearest grey level).

    Raises:
        TypeError: when an image is not a numpy array.
        ValueError: on shape mismatches or r outside [0, 1].
    """
    _check_rgb("lesion_layer", lesion_layer)
    _check_rgb("other", other)
    if lesion_layer.shape != other.shape:
        raise ValueError(f"lesion_layer {lesion_layer.shape} and other {other.shape} must have the same shape")
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"r must lie in [0, 1], got {r}")
    if lesion_mask is None:
        lesion_mask = lesion_layer.any(axis=2)
    else:
        lesion_mask = _check_mask("lesion_mask", lesion_mask, other.shape[:2])
    out = other.copy()
    mixed = r * lesion_layer[lesion_mask].astype(np.float64) + (1.0 - r) * other[lesion_mask].astype(np.float64)
    out[lesion_mask] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


def mix_labels(source_label: float, other_label: float, r: float) -> float:
    """Paper 004 eq. 6 before ``classify``: r·l_s + (1 − r)·l_o.

    Raises:
        ValueError: when r is outside [0, 1].
    """
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"r must lie in [0, 1], got {r}")
    return float(r * source_label + (1.0 - r) * other_label)


def classify(value, cutoffs: Sequence[float] = DEFAULT_GRADE_CUTOFFS):
    """Paper 004 eq. 6's classify(): severity values → grades by cut-offs (grade = cut-offs passed).

    The rule of ``fundus.tasks.GRADE_REGRESSION.decide`` (a model's ``ModelConfig.grade_cutoffs``): the
    grade is the number of cut-offs the value exceeds, so a value equal to a cut-off stays below it.

    Args:
        value: a float or an array of floats.
        cutoffs: increasing cut-offs, len = number of grades − 1.

    Returns:
        int for a scalar, an int64 array otherwise.

    Raises:
        ValueError: when the cut-offs are not strictly increasing.
    """
    cutoffs = np.asarray(cutoffs, dtype=np.float64)
    if cutoffs.ndim != 1 or np.any(np.diff(cutoffs) <= 0):
        raise ValueError(f"cutoffs must be strictly increasing, got {cutoffs.tolist()}")
    grades = np.digitize(np.asarray(value, dtype=np.float64), cutoffs, right=True)
    return int(grades) if np.ndim(grades) == 0 else grades.astype(np.int64)


def _unchanged(other: np.ndarray, other_label: float, r: float, cutoffs: Sequence[float]) -> GeneratedImage:
    """No lesion to move: the other photo as it is, with its own label."""
    value = float(other_label)
    return GeneratedImage(other.copy(), classify(value, cutoffs), value, r, [], np.zeros(other.shape[:2], bool))


def _generation_masks(source: np.ndarray, lesion_mask: np.ndarray, other: np.ndarray,
                      source_fov: np.ndarray | None, other_fov: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """``generate_lesion_image``'s checked inputs: both fields of view (default: the non-black pixels) and the
    lesion mask inside the source's pixels (eq. 5: I_s ≠ 0)."""
    _check_rgb("source", source)
    _check_rgb("other", other)
    if source.shape != other.shape:
        raise ValueError(f"source {source.shape} and other {other.shape} must have the same shape")
    shape = other.shape[:2]
    source_fov = source.any(axis=2) if source_fov is None else _check_mask("source_fov", source_fov, shape)
    other_fov = other.any(axis=2) if other_fov is None else _check_mask("other_fov", other_fov, shape)
    return source_fov, other_fov, _check_mask("lesion_mask", lesion_mask, shape) & source.any(axis=2)


def generate_lesion_image(
    source: np.ndarray,
    lesion_mask: np.ndarray,
    source_label: float,
    other: np.ndarray,
    other_label: float,
    r: float,
    rng: np.random.Generator,
    *,
    source_fov: np.ndarray | None = None,
    other_fov: np.ndarray | None = None,
    max_tries: int = 100,
    min_area: int = 1,
    cutoffs: Sequence[float] = DEFAULT_GRADE_CUTOFFS,
) -> GeneratedImage:
    """One ELLG generated image: extract → shift → Reinhard transfer → blend (eq. 5) → label (eq. 6).

    Args:
        source: (H, W, 3) uint8, a correctly classified image with lesions.
        lesion_mask: (H, W) bool, eq. 4's M on the source's GMSM (``explain.lesion_mask(gmsm, τ).mask``).
        source_label: l_s, the source's grade.
        other: (H, W, 3) uint8, I_o, a randomly chosen normal image (same size as ``source``).
        other_label: l_o, its grade (0 for a normal image).
        r: blending ratio in [0, 1].
        rng: numpy random generator.
        source_fov: (H, W) bool field of view of ``source`` (its colour statistics); default its
            non-black pixels.
        other_fov: (H, W) bool field of view of ``other``: patches are shifted inside it and its colour
            statistics are taken over it; default its non-black pixels.
        max_tries: shifting tries per patch (100 in the paper).
        min_area: drop smaller lesion components.
        cutoffs: grade cut-offs of ``classify``.

    Returns:
        A ``GeneratedImage``; with no patch in the mask the image is ``other`` unchanged and the label
        classify(l_o).

    Raises:
        TypeError, ValueError: as the steps it calls.
    """
    source_fov, other_fov, lesions = _generation_masks(source, lesion_mask, other, source_fov, other_fov)
    if not lesions.any() or not source_fov.any():
        return _unchanged(other, other_label, r, cutoffs)
    # Adaptive colour transfer first (per pixel, so it commutes with the shift): the source photo in
    # the tone of the other photo, measured over both fields of view.
    toned = reinhard_transfer(source, other, source_mask=source_fov, target_mask=other_fov, apply_mask=lesions)
    patches = extract_lesion_patches(toned, lesions, min_area=min_area)
    if not patches:
        return _unchanged(other, other_label, r, cutoffs)
    shape = other.shape[:2]
    shifted = shift_patches(patches, shape, rng, max_tries=max_tries, allowed=other_fov)
    layer, mask = compose_lesion_layer(shifted, shape)
    blended = blend_lesions(layer, other, r, lesion_mask=mask)
    value = mix_labels(source_label, other_label, r)
    return GeneratedImage(blended, classify(value, cutoffs), value, r, shifted, mask)
