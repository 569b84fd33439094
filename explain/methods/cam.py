"""CAM (Zhou et al. 2016): the class's own weights of a GAP + linear head, or paper 001's class score maps."""
from __future__ import annotations

from explain.methods import register
from explain.methods.base import CAM_WEIGHTS, Method
from explain.methods.formulas import layer_map, weighted_sum


@register
class CAM(Method):
    name = "cam"
    title = "CAM"
    needs = frozenset({CAM_WEIGHTS})
    panel = "main"
    order = 10
    help = "Where the class evidence sits in the last layer: coarse regions, from the classifier's own weights."

    def compute(self, selection, **params):
        if selection.cam_kind == "score_map":  # paper 001: the target layer outputs one score map per class
            saliency = selection.explanation.activations["high"][selection.image][list(selection.classes)]
        else:  # Σ_k w_k^c A^k with the linear head's weights
            saliency = weighted_sum(selection.cam_weights(), selection.activations("high"))
        return layer_map(saliency, selection.size)
