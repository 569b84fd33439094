"""Fundus preprocessing as in papers 001 and 003: black-border removal, square crop, CLAHE, resize.

Paper 001: "the meaningless contents ... such as black background ... were eliminated", images
"normalized into fixed range from 0 to 1", "resized to 512×512", then "enhanced by ... CLAHE".
Paper 003: CLAHE, resize to 224/299, "standard normalisation". Here the order is: detect the field
of view, crop a square around it (padding with black where the square leaves the photo), resize,
CLAHE on the L channel of LAB, then normalise with the model's mean/std. The crop box and scale
are kept, so that any (S, S) map (a CAM) can be put back onto the original photo.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

from .fov import FieldOfView, _check_rgb, circle_mask, detect_fov, fit_fov_circle, shrink_by_integer

__all__ = [
    "FieldOfView",
    "Preprocessed",
    "clahe",
    "crop_box_for",
    "detect_fov",
    "preprocess",
    "preprocess_batch",
    "remove_black_border",
]

Box = tuple[int, int, int, int]


@dataclass
class Preprocessed:
    """A photo as a model sees it, plus what is needed to map results back onto the photo.

    Attributes:
        tensor: ``(1, 3, S, S)`` float32 torch tensor, normalised with the config's mean/std.
        image: ``(S, S, 3) uint8`` RGB after crop, resize and CLAHE (overlays go on it).
        fov_mask: ``(S, S)`` bool field of view.
        crop_box: ``(x0, y0, x1, y1)`` in original pixels, a square; may reach outside the photo.
        scale: ``S / crop side``.
        fov_found: False when no fundus field was detected (see ``warnings``).
        warnings: user-facing warnings.
        original_shape: ``(H, W)`` of the original photo.
    """

    tensor: Any
    image: np.ndarray
    fov_mask: np.ndarray
    crop_box: Box
    scale: float
    fov_found: bool
    warnings: list[str] = field(default_factory=list)
    original_shape: tuple[int, int] = (0, 0)

    def to_original(self, map_: np.ndarray, original_shape: Sequence[int] | None = None) -> np.ndarray:
        """Map an ``(S, S)`` map back onto the original photo (inverse of crop + resize).

        Args:
            map_: ``(S, S)`` or ``(S, S, C)`` array (a CAM, a mask, an overlay).
            original_shape: ``(H, W, ...)`` of the photo; default the preprocessed photo's.

        Returns:
            ``(H, W)`` (or ``(H, W, C)``) array of ``map_``'s dtype (bool maps stay bool), zeros
            outside the crop box.

        Raises:
            ValueError: ``map_`` is not ``(S, S[, C])``.
        """
        return map_to_original(map_, self.crop_box, original_shape or self.original_shape)

    def to_model(self, map_: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
        """Map a full-photo map (a ground-truth lesion mask) into the model's ``(S, S)`` frame.

        The same crop (black/zero outside the photo) and area resize as the photo itself.

        Args:
            map_: ``(H, W)`` or ``(H, W, C)`` array of the original photo's size.
            threshold: bool masks come back as bool where the covered area fraction is at least
                this (lower it to keep thin lesions such as microaneurysms after downscaling).

        Raises:
            ValueError: ``map_`` does not have the photo's height and width.
        """
        map_ = np.asarray(map_)
        if map_.shape[:2] != tuple(self.original_shape[:2]):
            raise ValueError(f"expected a map of the photo's size {tuple(self.original_shape[:2])}, got {map_.shape}")
        size = self.image.shape[0]
        if map_.dtype == np.bool_:
            return _crop_resize(map_.astype(np.float32), self.crop_box, size) >= threshold
        work = map_ if map_.dtype in (np.uint8, np.float32) else map_.astype(np.float32)
        out = _crop_resize(work, self.crop_box, size)
        return out.astype(map_.dtype, copy=False) if out.dtype != map_.dtype else out


def clahe(rgb: np.ndarray, clip_limit: float = 2.0, tile: int = 8) -> np.ndarray:
    """Contrast Limited Adaptive Histogram Equalisation on the lightness (L of LAB).

    Papers 001 and 003: CLAHE raises the low local contrast of fundus photos; on L only, so that
    the lesion colours (red haemorrhages, yellow exudates) are kept.

    Args:
        rgb: ``(H, W, 3) uint8`` RGB.
        clip_limit: OpenCV clip limit (contrast amplification cap per tile).
        tile: the image is split into ``tile × tile`` tiles.

    Raises:
        TypeError: ``rgb`` is not uint8.
        ValueError: bad shape, ``clip_limit <= 0`` or ``tile < 1``.
    """
    _check_rgb(rgb)
    if clip_limit <= 0:
        raise ValueError(f"clip_limit must be positive, got {clip_limit}")
    if int(tile) < 1:
        raise ValueError(f"tile must be at least 1, got {tile}")
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    equaliser = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile), int(tile)))
    lab[..., 0] = equaliser.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def local_average_subtraction(rgb: np.ndarray, fov_mask: np.ndarray | None = None, sigma_fraction: float = 1 / 30,
                              gain: float = 4.0) -> np.ndarray:
    """Graham's preprocessing (Kaggle EyePACS DR competition, 2015): subtract the local average colour.

    ``gain · (I − G_σ * I) + 128`` with a Gaussian of σ = ``sigma_fraction`` × the image side: the photo's
    overall colour and illumination (which differ between cameras) drop out, lesion-sized detail stays.
    Outside the field of view the result is a flat 128 grey.

    Args:
        rgb: ``(S, S, 3) uint8`` RGB, cropped to the field of view.
        fov_mask: ``(S, S)`` bool field-of-view mask (None: the whole image).
    """
    _check_rgb(rgb)
    sigma = max(1.0, sigma_fraction * max(rgb.shape[:2]))
    blurred = cv2.GaussianBlur(rgb, (0, 0), sigma)
    out = cv2.addWeighted(rgb, gain, blurred, -gain, 128)
    if fov_mask is not None:
        out[~fov_mask.astype(bool)] = 128
    return out


def crop_box_for(shape: Sequence[int], fov: FieldOfView | tuple) -> Box:
    """The square crop box around a field of view, in original pixels (may leave the photo).

    The square is centred on the field's centre (so the disc sits in the middle of every crop,
    as in the papers' training images) and just large enough to hold the visible field: the
    circle's box cut down to the photo. A circle cut at top and bottom keeps its full width and
    is padded with black above and below; a field larger than the photo keeps the whole photo.

    Args:
        shape: ``(H, W, ...)`` of the photo.
        fov: a :class:`FieldOfView` or ``(cx, cy, radius, found)``; not found → the whole photo.
    """
    height, width = int(shape[0]), int(shape[1])
    cx, cy, radius, found = _circle(fov)
    if not found:  # the whole photo, padded to a square around its middle
        cx, cy, radius = (width - 1) / 2.0, (height - 1) / 2.0, float(max(width, height))
    # Pixel-edge coordinates: pixel i spans [i, i + 1), its centre is i + 0.5.
    ex, ey = cx + 0.5, cy + 0.5
    x0, x1 = max(ex - radius, 0.0), min(ex + radius, float(width))
    y0, y1 = max(ey - radius, 0.0), min(ey + radius, float(height))
    half = max(ex - x0, x1 - ex, ey - y0, y1 - ey, 0.5)
    side = max(1, int(round(2 * half)))
    left = int(round(ex - side / 2.0))
    top = int(round(ey - side / 2.0))
    return left, top, left + side, top + side


def remove_black_border(rgb: np.ndarray, fov: FieldOfView | None = None) -> tuple[np.ndarray, Box]:
    """Crop a photo to the square around its field of view, padding with black where needed.

    Args:
        rgb: ``(H, W, 3) uint8`` RGB.
        fov: a detected field (computed when omitted).

    Returns:
        ``(square crop, crop box (x0, y0, x1, y1) in original pixels)``.
    """
    _check_rgb(rgb)
    box = crop_box_for(rgb.shape, fov if fov is not None else fit_fov_circle(rgb)[:4])
    return _crop_padded(rgb, box), box


def preprocess(rgb: np.ndarray, config: Any) -> Preprocessed:
    """Prepare one photo for a model: FOV crop, resize, CLAHE, normalise.

    Args:
        rgb: ``(H, W, 3) uint8`` RGB (from :func:`fundus.load_image`).
        config: a ``zoo.config.ModelConfig`` or any object with ``input_size``, ``mean``, ``std``
            and ``preprocessing`` (with ``fov_crop``, ``clahe``, ``clahe_clip``, ``clahe_tile``, ``graham``;
            a dict works too).

    Returns:
        A :class:`Preprocessed`.

    Raises:
        TypeError: ``rgb`` is not a uint8 array.
        ValueError: bad ``rgb`` shape or config values.
    """
    _check_rgb(rgb)
    size, mean, std, steps = _read_config(config)
    height, width = rgb.shape[:2]
    cx, cy, radius, found, fills = fit_fov_circle(rgb)
    warnings: list[str] = []
    if not found:
        warnings.append("No fundus field of view was detected: the whole photo is used as it is. "
                        "Is this a retinal fundus photograph?")
    if steps["fov_crop"]:
        box = crop_box_for(rgb.shape, (cx, cy, radius, found))
    else:  # the whole photo, padded to a square so that the aspect ratio is kept
        box = crop_box_for(rgb.shape, (0.0, 0.0, 0.0, False))
    side = box[2] - box[0]
    scale = size / side
    if side < size / 2:
        warnings.append(f"Low resolution: the field of view is {side} px wide, upscaled ×{scale:.1f} to {size} px.")
    image = _crop_resize(rgb, box, size)
    fov_mask = _fov_mask_in_crop(box, size, (height, width), (cx, cy, radius, found))
    if found:
        warnings += exposure_warnings(image, fov_mask)
    if steps["clahe"]:
        image = clahe(image, steps["clahe_clip"], steps["clahe_tile"])
    if steps["graham"]:
        image = local_average_subtraction(image, fov_mask if found else None)
    import torch  # local: fundus stays importable (and fast to import) without torch

    tensor = torch.from_numpy(normalise(image, mean, std)).unsqueeze(0)
    return Preprocessed(tensor, image, fov_mask, box, scale, found, warnings, (height, width))


# Mean lightness (max channel) of the field below / above which a photo is badly exposed: lesions
# (dark red haemorrhages, yellow exudates) lose their contrast in such photos.
DARK_LIGHTNESS, BRIGHT_LIGHTNESS = 45, 225


def exposure_warnings(image: np.ndarray, fov_mask: np.ndarray) -> list[str]:
    """User-facing warnings for an under- or over-exposed field (measured before CLAHE)."""
    if not fov_mask.any():
        return []
    lightness = float(image.max(axis=2)[fov_mask].mean())
    if lightness < DARK_LIGHTNESS:
        return [f"The photo is very dark (mean field brightness {lightness:.0f}/255): lesions may be missed."]
    if lightness > BRIGHT_LIGHTNESS:
        return [f"The photo is over-exposed (mean field brightness {lightness:.0f}/255): lesions may be missed."]
    return []


def preprocess_batch(images: Sequence[np.ndarray], config: Any) -> tuple[Any, list[Preprocessed]]:
    """Preprocess several photos; returns ``(tensor (B, 3, S, S), [Preprocessed, ...])``.

    Raises:
        ValueError: ``images`` is empty.
    """
    if len(images) == 0:
        raise ValueError("preprocess_batch needs at least one image")
    import torch

    items = [preprocess(rgb, config) for rgb in images]
    return torch.cat([p.tensor for p in items], dim=0), items


def normalise(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(S, S, 3) uint8`` → ``(3, S, S) float32`` scaled to [0, 1] then ``(x - mean) / std``."""
    x = image.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def map_to_original(map_: np.ndarray, box: Box, original_shape: Sequence[int]) -> np.ndarray:
    """Resize an ``(S, S[, C])`` map to the crop box and paste it into a zero ``(H, W[, C])`` array.

    Raises:
        ValueError: ``map_`` is not square or ``original_shape`` is empty.
    """
    map_ = np.asarray(map_)
    if map_.ndim not in (2, 3) or map_.shape[0] != map_.shape[1]:
        raise ValueError(f"expected an (S, S) or (S, S, C) map, got shape {map_.shape}")
    if len(original_shape) < 2 or min(original_shape[:2]) < 1:
        raise ValueError(f"original_shape must be (H, W, ...), got {tuple(original_shape)}")
    height, width = int(original_shape[0]), int(original_shape[1])
    x0, y0, x1, y1 = box
    side = x1 - x0
    was_bool = map_.dtype == np.bool_
    work = map_ if map_.dtype in (np.uint8, np.float32) else map_.astype(np.float32)
    interpolation = cv2.INTER_NEAREST if was_bool else cv2.INTER_LINEAR
    big = cv2.resize(work, (side, side), interpolation=interpolation)
    if big.ndim == 2 and map_.ndim == 3:
        big = big[..., None]
    out = np.zeros((height, width) + map_.shape[2:], dtype=big.dtype)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0:iy1, ix0:ix1] = big[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    if was_bool:
        return out > 0.5
    if np.issubdtype(map_.dtype, np.integer) and out.dtype != map_.dtype:
        out = np.round(out)
    return out.astype(map_.dtype, copy=False)


def _crop_resize(rgb: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Crop ``box`` (black outside the photo) and resize it to ``size × size`` (any channel count).

    Small crops: pad, then one area/linear resize. Large crops (a 3872×2592 photo): first shrink
    the part inside the photo by an integer factor (exact, fast area averaging, no padded copy of
    the full-resolution crop), then one sub-pixel-exact affine warp onto the output, which also
    pads. Both map crop pixel edges to output pixel edges exactly (``to_original`` relies on it).
    """
    x0, y0, x1, y1 = box
    height, width = rgb.shape[:2]
    side = x1 - x0
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    factor = side // size
    if factor < 2 or (ix1 - ix0) < 2 * factor or (iy1 - iy0) < 2 * factor:
        inside = x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height
        crop = rgb[y0:y1, x0:x1] if inside else _crop_padded(rgb, box)
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        return cv2.resize(crop, (size, size), interpolation=interpolation)
    small, _ = shrink_by_integer(rgb[iy0:iy1, ix0:ix1], factor)
    scale = size / side
    step = factor * scale  # output pixels per small pixel, in (0.5, 1]
    # Centre of small pixel u ↦ output (ix0 - x0 + (u + 0.5) f) · scale - 0.5.
    matrix = np.array([[step, 0.0, (ix0 - x0) * scale + 0.5 * step - 0.5],
                       [0.0, step, (iy0 - y0) * scale + 0.5 * step - 0.5]])
    return cv2.warpAffine(small, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _crop_padded(rgb: np.ndarray, box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    height, width = rgb.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + rgb.shape[2:], rgb.dtype)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = rgb[iy0:iy1, ix0:ix1]
    return out


def _fov_mask_in_crop(box: Box, size: int, shape: tuple[int, int], circle: tuple) -> np.ndarray:
    """The field (circle ∩ photo) in the (S, S) crop: drawn directly at S, not resized from H×W."""
    cx, cy, radius, found = circle
    x0, y0, x1, y1 = box
    scale = size / (x1 - x0)
    to_crop = lambda u, origin: (u + 0.5 - origin) * scale - 0.5  # noqa: E731 - pixel-centre mapping
    mask = circle_mask((size, size), (to_crop(cx, x0), to_crop(cy, y0)), radius * scale, found)
    # Padding outside the photo is never field.
    inside = np.zeros((size, size), bool)
    ix0, iy0 = int(round((max(x0, 0) - x0) * scale)), int(round((max(y0, 0) - y0) * scale))
    ix1, iy1 = int(round((min(x1, shape[1]) - x0) * scale)), int(round((min(y1, shape[0]) - y0) * scale))
    inside[iy0:iy1, ix0:ix1] = True
    return mask & inside


def _circle(fov: FieldOfView | tuple) -> tuple[float, float, float, bool]:
    if isinstance(fov, FieldOfView):
        return fov.center[0], fov.center[1], fov.radius, fov.found
    cx, cy, radius, found = fov[:4]
    return float(cx), float(cy), float(radius), bool(found)


def _read_config(config: Any) -> tuple[int, tuple, tuple, dict]:
    try:
        size, mean, std, pre = config.input_size, config.mean, config.std, config.preprocessing
    except AttributeError as exc:
        raise TypeError(f"config needs input_size, mean, std and preprocessing attributes ({exc})") from None
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"config.input_size must be an integer >= 8, got {size!r}")
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"config.mean and config.std need 3 values (RGB), got {mean} and {std}")
    if min(std) <= 0:
        raise ValueError(f"config.std must be positive, got {std}")
    get = pre.get if isinstance(pre, dict) else (lambda name, default: getattr(pre, name, default))
    steps = {
        "fov_crop": bool(get("fov_crop", True)),
        "clahe": bool(get("clahe", False)),
        "clahe_clip": float(get("clahe_clip", 2.0)),
        "clahe_tile": int(get("clahe_tile", 8)),
        "graham": bool(get("graham", False)),
    }
    return int(size), mean, std, steps
