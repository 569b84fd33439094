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
class CameraShift:
    """What changes between cameras and clinics: exposure, contrast, colour balance, gamma, focus, scale, JPEG.

    Not from the papers (they train on one camera each): added so that models survive photos from other
    cameras (docs/MODELS.md compares it). Each part is drawn per sample:
    brightness × U(1 ± brightness), contrast about the mean × U(1 ± contrast), per-channel gain
    × U(1 ± colour), gamma in U(1/gamma, gamma) (log-uniform), with probability ``p_blur`` a Gaussian
    blur of σ ≤ ``max_blur`` px, with probability ``p_scale`` a down- and up-scale by U(min_scale, 1)
    (a low-resolution photo), with probability ``p_jpeg`` JPEG re-encoding at quality U(jpeg_quality, 95).
    """

    brightness: float = 0.25
    contrast: float = 0.25
    colour: float = 0.12
    gamma: float = 1.4
    p_blur: float = 0.3
    max_blur: float = 1.5
    p_scale: float = 0.4
    min_scale: float = 0.35
    p_jpeg: float = 0.4
    jpeg_quality: int = 25

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x)
        b, dev = x.shape[0], x.device

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(b, *shape, device=dev)

        x = x * uniform(1 - self.brightness, 1 + self.brightness, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * uniform(1 - self.contrast, 1 + self.contrast, 1, 1, 1) + mean
        x = (x * uniform(1 - self.colour, 1 + self.colour, x.shape[1], 1, 1)).clamp_(0.0, 1.0)
        x = x ** torch.exp(uniform(-math.log(self.gamma), math.log(self.gamma), 1, 1, 1))
        out = []
        for i in range(b):  # blur, scale and JPEG differ in size per sample: one image at a time
            out.append(self._degrade(x[i]))
        return torch.stack(out)

    def _degrade(self, img: torch.Tensor) -> torch.Tensor:
        size = img.shape[-1]
        if float(torch.rand(())) < self.p_blur:
            sigma = float(torch.rand(())) * self.max_blur + 1e-3
            radius = max(1, int(math.ceil(2.5 * sigma)))
            t = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
            k = torch.exp(-(t ** 2) / (2 * sigma ** 2))
            k = k / k.sum()
            c = img.shape[0]
            img = F.conv2d(img[None], k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
            img = F.conv2d(img, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)[0]
        if float(torch.rand(())) < self.p_scale:
            small = max(8, int(size * (self.min_scale + (1 - self.min_scale) * float(torch.rand(())))))
            img = F.interpolate(img[None], size=(small, small), mode="area")
            img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)[0]
        if float(torch.rand(())) < self.p_jpeg:
            import cv2
            import numpy as np

            quality = int(self.jpeg_quality + (95 - self.jpeg_quality) * float(torch.rand(())))
            arr = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(arr[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok:
                back = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
                img = torch.from_numpy(back).to(img.device, img.dtype).permute(2, 0, 1) / 255.0
        return img.clamp(0.0, 1.0)


@dataclass
class AspectScale:
    """Squashed and small photos: the field of view squashed or stretched, and the photo at a low resolution.

    Not from the papers: redistributions of APTOS 2019 and EyePACS squash every photo to a square at 224–256 px
    (``../shared/data/README.md``), while clinics send 3:2 photos at full size; a grader should grade both alike
    (``zoo.evaluation.agreement`` measures it). Per sample, with probability ``p_aspect`` the width : height of the
    photo is multiplied by a factor drawn log-uniformly in [``min_aspect``, ``max_aspect``] and the result fitted
    back into the square as the preprocessing's crop does with a squashed photo (a factor below 1 narrows the field,
    above 1 flattens it; the freed border is black); with probability ``p_scale`` the photo is downscaled to a
    side drawn in [``min_side``, ``max_side``] px (area) and scaled back up (bilinear), when that is smaller than
    the batch's side. With ``--frozen-blocks`` it is drawn into the cached views, as every augmentation.
    """

    min_aspect: float = 0.67
    max_aspect: float = 1.5
    p_aspect: float = 0.5
    min_side: int = 224
    max_side: int = 256
    p_scale: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.min_aspect <= self.max_aspect:
            raise ValueError(f"need 0 < min_aspect <= max_aspect, got {self.min_aspect}, {self.max_aspect}")
        if not 8 <= self.min_side <= self.max_side:
            raise ValueError(f"need 8 <= min_side <= max_side, got {self.min_side}, {self.max_side}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x)
        b, dev = x.shape[0], x.device
        apply = _per_sample(self.p_aspect, x)
        low, high = math.log(self.min_aspect), math.log(self.max_aspect)
        aspect = torch.exp(low + (high - low) * torch.rand(b, device=dev))
        aspect = torch.where(apply, aspect, torch.ones_like(aspect))
        # The field's width and height as shares of the square's side: the longer one fills it.
        width, height = aspect.clamp(max=1.0), (1.0 / aspect).clamp(max=1.0)
        zero = torch.zeros_like(aspect)
        # affine_grid maps output to input coordinates: content shrunk by w is read at x / w.
        theta = torch.stack([torch.stack([1.0 / width, zero, zero], 1), torch.stack([zero, 1.0 / height, zero], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        squashed = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = torch.where(apply.view(-1, 1, 1, 1), squashed, x)
        size = x.shape[-1]
        out = []
        for i in range(b):  # each sample at its own resolution
            img = x[i]
            if float(torch.rand(())) < self.p_scale:
                side = int(round(self.min_side + (self.max_side - self.min_side) * float(torch.rand(()))))
                if side < size:
                    img = F.interpolate(img[None], size=(side, side), mode="area")
                    img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)[0]
            out.append(img)
        return torch.stack(out).clamp_(0.0, 1.0)


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
