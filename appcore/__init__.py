"""The app's UI-independent core, shared by the Gradio app (app.py) and the Streamlit front end.

It wires library calls together and keeps the app's state in few, small places:

- ``catalogue``: which zoo models the app offers, and a lazily filled, thread-safe model cache;
- ``menu``: the model menu grouped by paper (from each model's config) and its default model (``dr-grading``);
- ``analysis``: one network pass per (image, model, target), cached in a bounded LRU;
- ``views``: everything a slider changes (overlays, θ crop, τ lesion mask, outlines), no network;
- ``charts``: the plotly probability / grade chart;
- ``exports``: the PNG grid, raw maps and reproducible JSON downloads;
- ``examples``: the shipped real example photos with their known diagnoses (``assets/examples``), and
  generated ones written into a cache folder at start-up.
"""
from appcore.analysis import Analysis, AnalysisCache, Analyser, image_digest
from appcore.catalogue import ModelCache, ModelChoice, ModelUnavailable, available_models
from appcore.examples import Example, ensure_examples, shipped_examples
from appcore.analysis import PANEL_METHODS
from appcore.views import View, ViewParams, render_view

__all__ = [
    "Analysis",
    "AnalysisCache",
    "Analyser",
    "Example",
    "ModelCache",
    "ModelChoice",
    "ModelUnavailable",
    "PANEL_METHODS",
    "View",
    "ViewParams",
    "available_models",
    "ensure_examples",
    "image_digest",
    "render_view",
    "shipped_examples",
]
