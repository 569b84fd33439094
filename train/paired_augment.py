"""The recipe's augmentation applied to photos and, with the same random draws, to their lesion masks.

A mask must move with its photo: a flipped or rotated photo with an unmoved mask would teach the model
to look beside the lesion. The ops of ``train.augment`` that move pixels (``RandomFlip``,
``RandomAffine``) draw their randomness per sample from torch's global RNG, independent of the channel
count and the image size, and ``RandomAffine`` works in ``affine_grid``'s [-1, 1] coordinates. So each
such op runs on the photos, then the RNG is rewound and the op runs again on the masks (at their own,
smaller resolution): the same flip, the same rotation, the same shift. Ops that only change intensities
(``CameraShift``, ``GaussianNoise``, ``PercentileContrast``) leave the masks as they are. An op this
module does not know is refused, rather than guessed.
"""
from __future__ import annotations

from typing import Callable

import torch

from train import augment as aug

# A moved mask cell counts as lesion from this value on: bilinear weights of one cell sum to 1, so the
# largest is at least about 1/4 and a one-cell lesion (a microaneurysm) survives any rotation.
INSIDE = 0.25
# Ops that move pixels: replayed on the masks with the photos' random draws.
GEOMETRIC: tuple[type, ...] = (aug.RandomFlip, aug.RandomAffine)
# Ops that change intensities only: the masks stay where they are.
PHOTOMETRIC: tuple[type, ...] = (aug.CameraShift, aug.GaussianNoise, aug.PercentileContrast)


def _rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def apply_jointly(op: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                  masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``op`` on a photo batch, and the same geometric transform on its masks.

    Args:
        op: a ``train.augment`` op, a ``Compose`` of them, or ``train.augment.identity``.
        images: (B, 3, S, S) float photos in [0, 1], as the loop augments them.
        masks: (B, L, m, m) float masks in [0, 1] on the same device (any m: the transforms are
            resolution-free); uncovered corners become 0 (outside every lesion), like the photo's black.

    Returns:
        ``(augmented images, moved masks)``; the images are exactly what ``op(images)`` would give with
        the same RNG state, and the RNG ends where ``op(images)`` leaves it.

    Raises:
        TypeError: an op that is neither known geometric nor known photometric.
        ValueError: masks of another batch size or device than the images.
    """
    if masks.shape[0] != images.shape[0] or masks.device != images.device:
        raise ValueError(f"masks {tuple(masks.shape)} on {masks.device} do not match the photos "
                         f"{tuple(images.shape)} on {images.device}")
    if isinstance(op, aug.Compose):
        for part in op.ops:
            images, masks = apply_jointly(part, images, masks)
        return images, masks
    if op is aug.identity or isinstance(op, PHOTOMETRIC):
        return op(images), masks
    if not isinstance(op, GEOMETRIC):
        raise TypeError(f"cannot tell whether augmentation {op!r} moves pixels: add its type to "
                        "train.paired_augment.GEOMETRIC or PHOTOMETRIC to use it with lesion masks")
    before = _rng_state(images.device)
    images = op(images)
    after = _rng_state(images.device)
    _set_rng_state(images.device, before)  # the photos' draws again, for the masks
    masks = op(masks)
    _set_rng_state(images.device, after)
    return images, masks
