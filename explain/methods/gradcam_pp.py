"""Grad-CAM++ (Chattopadhay et al. 2018, eq. 19): the weights GMSM also uses (paper 004 eq. 1)."""
from __future__ import annotations

import torch

from explain.methods import register
from explain.methods.base import HIGH_GRADIENTS, Method, Selection
from explain.methods.formulas import grad_cam_pp_weights, layer_map, weighted_sum


def pp_saliency(selection: Selection, layer: str) -> torch.Tensor:
    """Σ_k w_k A_k with Grad-CAM++ weights (paper 004 eq. 1 before the gate), (N, h, w); kept: t-independent."""
    def compute() -> torch.Tensor:
        activations = selection.activations(layer)
        return weighted_sum(grad_cam_pp_weights(activations, selection.gradients(layer)), activations)

    return selection.shared(("gradcam_pp", layer), compute)


@register
class GradCAMPlusPlus(Method):
    name = "gradcam_pp"
    title = "Grad-CAM++"
    needs = frozenset({HIGH_GRADIENTS})
    order = 30
    help = "Grad-CAM with weights that favour every instance of the evidence, not only the largest."

    def compute(self, selection, **params):
        return layer_map(pp_saliency(selection, "high"), selection.size)
