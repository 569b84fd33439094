"""Pure saliency formulas over captured tensors, shared by the method files: weights, weighted sums, the GMSM
gate, normalisation and upsampling.

Activations ``A`` are (N, K, h, w), gradients the same; maps are (N, h, w). No hooks, no model, no registry.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def grad_cam_weights(grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM neuron importance (paper 000 eq. 1): w_k^c = 1/Z Σ_ij ∂y^c/∂A^k_ij.

    Args:
        grads: (N, K, h, w) gradients of the class score with respect to the layer's activations.

    Returns:
        (N, K) weights.
    """
    return grads.mean(dim=(2, 3))


def grad_cam_pp_weights(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ weights (Chattopadhay et al. 2018, eq. 19; used by paper 004 eq. 1).

    Written as pytorch-grad-cam computes them (exponential-score closed form), so maps agree on the layers
    it is made for. That closed form assumes non-negative (post-ReLU) activations: for a layer with signed
    ones (EfficientNet's linear-bottleneck block outputs, GMSM's low layers here) a channel's ΣA < 0 puts a
    pole in α's denominator, 2g² + ΣA·g³ = 0 at g = -2/ΣA, and the weights blow up to inf / NaN (the shipped
    ``dr-lesions``' ``blocks.2`` on an IDRiD photo: ΣA = -27,839, a denominator of -1e-4, an all-NaN GMSM
    map). So ΣA is clamped at 0 (α = 1/2 there, Grad-CAM's even weighting: nothing changes for post-ReLU
    layers, tests/test_explain_reference.py) and α is kept only where ReLU(g) > 0 (elsewhere it multiplies 0).

    Args:
        activations: (N, K, h, w) layer activations A.
        grads: (N, K, h, w) gradients ∂y^c/∂A.

    Returns:
        (N, K) weights Σ_ij α_ij^kc ReLU(∂y^c/∂A^k_ij).
    """
    grads_2 = grads * grads
    grads_3 = grads_2 * grads
    sum_activations = activations.sum(dim=(2, 3), keepdim=True).clamp(min=0)
    alpha = grads_2 / (2 * grads_2 + sum_activations * grads_3 + 1e-6)
    alpha = torch.where(grads > 0, alpha, torch.zeros_like(alpha))
    return (grads.clamp(min=0) * alpha).sum(dim=(2, 3))


def weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k A^k (paper 000 eq. 2 and paper 004 eq. 1 before the gate).

    Args:
        weights: (N, K).
        activations: (N, K, h, w).

    Returns:
        (N, h, w).
    """
    return torch.einsum("nk,nkhw->nhw", weights, activations)


def gate(saliency: torch.Tensor, t: float) -> torch.Tensor:
    """GMSM gate relu (paper 004 eq. 2): max(Σ_k w_k A_k, t); t = 0 is the ordinary ReLU of eq. 1."""
    return saliency.clamp(min=float(t))


def normalise01(maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Min-max normalise each map to [0, 1], optionally only inside a mask (0 outside).

    Args:
        maps: (N, h, w).
        mask: optional (N, h, w) or (h, w) bool; statistics are taken inside it.

    Returns:
        (N, h, w) float maps; a constant map becomes all zeros.
    """
    if mask is None:
        flat = maps.flatten(1)
        low = flat.min(dim=1).values[:, None, None]
        shifted = maps - low
        return _divide_by_max(shifted)
    outside = ~mask.expand_as(maps)
    low = maps.masked_fill(outside, float("inf")).flatten(1).amin(dim=1)
    low = torch.nan_to_num(low, posinf=0.0)[:, None, None]  # an empty mask: nothing to normalise
    shifted = (maps - low).masked_fill_(outside, 0.0)
    return _divide_by_max(shifted)


def _divide_by_max(shifted: torch.Tensor) -> torch.Tensor:
    # No additive epsilon: guided-backprop gradients of an untrained net can be ~1e-6 in size.
    high = shifted.flatten(1).amax(dim=1)[:, None, None]
    return shifted / torch.where(high > 0, high, torch.ones_like(high))


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (N, h, w) -> (N, H, W), half-pixel centres like cv2.resize(INTER_LINEAR)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def layer_map(saliency: torch.Tensor, size: tuple[int, int], t: float = 0.0) -> torch.Tensor:
    """Gate (ReLU when t = 0), normalise at the layer's resolution, upsample to the input size.

    The order (normalise, then resize) is pytorch-grad-cam's, so the maps can be compared exactly.
    """
    return upsample(normalise01(gate(saliency, t)), size)


def gmsm(low_saliency: torch.Tensor, high_saliency: torch.Tensor, size: tuple[int, int], t: float) -> torch.Tensor:
    """Gated multi-layer saliency map (paper 004 eq. 3): ½ (norm(L_l) + norm(L_h)), each gated by eq. 2.

    Args:
        low_saliency: (N, h_l, w_l) Σ_k w_k A_k of the lower layer (Grad-CAM++ weights).
        high_saliency: (N, h_h, w_h) the same for the higher layer.
        size: input (H, W) both maps are brought to before averaging.
        t: gate threshold; t = 0 gives the mean of two ordinary Grad-CAM++ maps.

    Returns:
        (N, H, W) map, not yet renormalised.
    """
    return 0.5 * (layer_map(low_saliency, size, t) + layer_map(high_saliency, size, t))


def guided_saliency(input_grads: torch.Tensor) -> torch.Tensor:
    """One value per pixel from guided-backprop input gradients (N, 3, H, W): the largest |channel|."""
    return input_grads.abs().amax(dim=1)
