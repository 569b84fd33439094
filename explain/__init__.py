"""Explanation engine: CAM, Grad-CAM, Grad-CAM++, guided backprop, Guided Grad-CAM and GMSM in one pass,
θ attention crops, τ lesion masks, outlines, overlays and localisation metrics.

    from explain import Explainer, attention_crop, lesion_mask, lesion_outlines, overlay
    with Explainer(model) as ex:
        expl = ex.explain(pre.tensor, target="predicted", fov_mask=pre.fov_mask)
    expl.maps(t=1.0)["gmsm"]
"""
from explain.explainer import ALL_METHODS, Explainer, Explanation, canonical_method
from explain.extra import EXTRA_METHODS, extra_method
from explain.overlay import colormap_names, draw_boxes, draw_outlines, heatmap, overlay, panel_grid, save_png
from explain.regions import (AttentionCrop, LesionMask, LesionOutlines, LesionPatch, attention_crop,
                             lesion_colour, lesion_mask, lesion_outlines, normalise_map)

__all__ = [
    "ALL_METHODS", "EXTRA_METHODS", "Explainer", "Explanation", "canonical_method", "extra_method",
    "AttentionCrop", "LesionMask", "LesionOutlines", "LesionPatch", "attention_crop", "lesion_colour",
    "lesion_mask", "lesion_outlines", "normalise_map",
    "colormap_names", "draw_boxes", "draw_outlines", "heatmap", "overlay", "panel_grid", "save_png",
]
