"""LayerCAM (Jiang et al. 2021, IEEE TIP 30): every location weighted by its own positive gradient."""
from __future__ import annotations

from explain.methods import register
from explain.methods.base import HIGH_GRADIENTS, Method
from explain.methods.formulas import layer_map


@register
class LayerCAM(Method):
    name = "layercam"
    title = "LayerCAM"
    needs = frozenset({HIGH_GRADIENTS})
    panel = "optional"
    order = 70
    help = "Grad-CAM with each location weighted by its own positive gradient: finer regions."

    def compute(self, selection, **params):
        activations, gradients = selection.activations("high"), selection.gradients("high")
        return layer_map((gradients.clamp(min=0) * activations).sum(dim=1), selection.size)
