"""Grad-CAM (Selvaraju et al. 2017; paper 000 eq. 1–2): channels weighted by their mean gradient."""
from __future__ import annotations

from explain.methods import register
from explain.methods.base import HIGH_GRADIENTS, Method
from explain.methods.formulas import grad_cam_weights, layer_map, weighted_sum


@register
class GradCAM(Method):
    name = "gradcam"
    title = "Grad-CAM"
    needs = frozenset({HIGH_GRADIENTS})
    panel = "main"
    order = 20
    help = "Which last-layer regions raise this output, from its gradients: coarse regions."

    def compute(self, selection, **params):
        weights = grad_cam_weights(selection.gradients("high"))
        return layer_map(weighted_sum(weights, selection.activations("high")), selection.size)
