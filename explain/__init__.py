"""Explanation engine: CAM, Grad-CAM, Grad-CAM++, guided backprop, Guided Grad-CAM, GMSM and LayerCAM from one
pass (registered methods: ``explain.methods``), θ attention crops, τ lesion masks, outlines, overlays and
localisation metrics.

    from explain import Explainer, Decided, attention_crop, lesion_mask, lesion_outlines, overlay
    with Explainer(model) as ex:
        expl = ex.explain(pre.tensor, target=Decided(), fov_mask=pre.fov_mask, methods=["gradcam", "gmsm"])
    expl.maps(t=1.0)["gmsm"]
"""
from explain.explainer import ALL_METHODS, Explainer, Explanation
from explain.extra import EXTRA_METHODS, extra_method
from explain.methods import Method, Param, canonical_method, get_method, panel_methods, register, registered
from explain.overlay import colormap_names, draw_boxes, draw_outlines, heatmap, overlay, panel_grid, save_png
from explain.regions import (AttentionCrop, LesionMask, LesionMaskPatch, LesionOutlines, attention_crop,
                             lesion_colour, lesion_mask, lesion_outlines, normalise_map)
from explain.targets import AllPredicted, Classes, Decided, PerImage, Predicted, Target

__all__ = [
    "ALL_METHODS", "EXTRA_METHODS", "Explainer", "Explanation", "canonical_method", "extra_method",
    "Method", "Param", "get_method", "panel_methods", "register", "registered",
    "Target", "Predicted", "AllPredicted", "Classes", "PerImage", "Decided",
    "AttentionCrop", "LesionMask", "LesionMaskPatch", "LesionOutlines", "attention_crop", "lesion_colour",
    "lesion_mask", "lesion_outlines", "normalise_map",
    "colormap_names", "draw_boxes", "draw_outlines", "heatmap", "overlay", "panel_grid", "save_png",
]
