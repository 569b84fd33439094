"""GMSM, the gated multi-layer saliency map (paper 004 eq. 1–3): two Grad-CAM++ maps, gated at t, averaged."""
from __future__ import annotations

from explain.methods import register
from explain.methods.base import HIGH_GRADIENTS, LOW_GRADIENTS, Method, Param
from explain.methods.formulas import gmsm
from explain.methods.gradcam_pp import pp_saliency

GATE = Param("t", "t gate: higher hides weak evidence in the GMSM map (paper 004, eq. 2)", default=0.0, config="t",
             minimum=0.0, maximum=5.0, step=0.05, bounded=False)


@register
class GMSM(Method):
    name = "gmsm"
    title = "GMSM"
    needs = frozenset({HIGH_GRADIENTS, LOW_GRADIENTS})
    params = (GATE,)
    panel = "main"
    order = 60
    help = "Lesion-sized evidence from a high and a low layer. White, cyan boxes: the τ lesion mask."
    regions = frozenset({"lesions"})  # paper 004 eq. 4: the τ lesion mask

    def compute(self, selection, *, t: float = GATE.default, **params):
        return gmsm(pp_saliency(selection, "low"), pp_saliency(selection, "high"), selection.size, t)
