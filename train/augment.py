"""Batched training augmentations on the device, after the preprocessed-image cache.

Every op takes and returns a float batch ``(B, C, H, W)`` in [0, 1] and draws its randomness per
sample from torch's global RNG (seeded by the loop, so a run is reproducible). Working on whole
batches on the model's device keeps data loading from starving the model (no per-image Python work
in the hot loop).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

BatchOp = Callable[[torch.Tensor], torch.Tensor]


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"augmentations take a torch.Tensor batch, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"augmentations take a (B, C, H, W) batch, got shape {tuple(x.shape)}")


def _per_sample(p: float, x: torch.Tensor) -> torch.Tensor:
    """A (B,) bool mask: which samples get the op (probability p)."""
    return torch.rand(x.shape[0], device=x.device) < p


@dataclass
class RandomFlip:
    """Horizontal and/or vertical flips, each with probability p per sample (papers 001, 003)."""

    horizontal: bool = True
    vertical: bool = False
    p: float = 0.5

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x)
        if self.horizontal:
            m = _per_sample(self.p, x).view(-1, 1, 1, 1)
            x = torch.where(m, x.flip(-1), x)
        if self.vertical:
            m = _per_sample(self.p, x).view(-1, 1, 1, 1)
            x = torch.where(m, x.flip(-2), x)
        return x


@dataclass
class RandomAffine:
    """Random rotation in [-max_rotation, max_rotation] (radians) and shift up to max_shift × size.

    Paper 001: shifts and rotations; paper 002: rotation within ±π/4. Uncovered corners are black,
    like the fundus border.
    """

    max_rotation: float = math.pi / 4
    max_shift: float = 0.0
    p: float = 1.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x)
        b = x.shape[0]
        apply = _per_sample(self.p, x).to(x.dtype)
        angle = (torch.rand(b, device=x.device) * 2 - 1) * self.max_rotation * apply
        # affine_grid works in [-1, 1] coordinates: a shift of s × size is 2s there.
        shift = (torch.rand(b, 2, device=x.device) * 2 - 1) * 2 * self.max_shift * apply[:, None]
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass
class GaussianNoise:
    """Additive Gaussian noise of the given variance (paper 002: 0.01), clipped back to [0, 1]."""

    variance: float = 0.01
    p: float = 1.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x)
        m = _per_sample(self.p, x).view(-1, 1, 1, 1)
        noisy = (x + torch.randn_like(x) * math.sqrt(self.variance)).clamp_(0.0, 1.0)
        return torch.where(m, noisy, x)


def percentile_rescale(x: torch.Tensor, low: float = 0.2, high: float = 99.8) -> torch.Tensor:
    """Stretch each image's intensities so its [low, high] percentiles map to [0, 1] (paper 002).

    Args:
        x: (B, C, H, W) float batch.
        low, high: percentiles in [0, 100], low < high.

    Raises:
        ValueError: percentiles out of order or range.
    """
    _check_batch(x)
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    flat = x.reshape(x.shape[0], -1).float()
    q = torch.quantile(flat, torch.tensor([low / 100, high / 100], device=x.device), dim=1)
    lo, hi = q[0].view(-1, 1, 1, 1), q[1].view(-1, 1, 1, 1)
    return ((x - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0).to(x.dtype)


@dataclass
class PercentileContrast:
    """Paper 002's contrast enhancement: rescale between the 0.2 and 99.8 percentiles."""

    low: float = 0.2
    high: float = 99.8
    p: float = 0.5

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = _per_sample(self.p, x)
        if not bool(m.any()):
            return x
        out = x.clone()
        out[m] = percentile_rescale(x[m], self.low, self.high)
        return out


@dataclass
class Compose:
    """Apply ops in order; ``describe()`` is what the model card lists."""

    ops: Sequence[BatchOp] = field(default_factory=list)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op(x)
        return x

    def describe(self) -> list[str]:
        return [repr(op) for op in self.ops]


def identity(x: torch.Tensor) -> torch.Tensor:
    return x
