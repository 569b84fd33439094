"""Guided Grad-CAM (paper 000 eq. 3): guided backpropagation times Grad-CAM."""
from __future__ import annotations

from explain.methods import register
from explain.methods.base import HIGH_GRADIENTS, INPUT_GRADIENTS, Method


@register
class GuidedGradCAM(Method):
    name = "guided_gradcam"
    title = "Guided Grad-CAM"
    needs = frozenset({HIGH_GRADIENTS, INPUT_GRADIENTS})
    panel = "main"
    order = 50
    help = "The fine details (spots, edges) behind the output. Green box: the θ attention crop."
    regions = frozenset({"crop", "outlines"})  # paper 000 eq. 5 crops it; paper 001 Fig. 6c outlines it

    def compute(self, selection, **params):
        return selection.map_of("guided_backprop") * selection.map_of("gradcam")
