"""The app's UI-independent core, shared by the Gradio app (app.py) and the Streamlit front end.

It wires library calls together and keeps the app's state in few, small places:

- ``catalogue``: which zoo models the app offers, and a lazily filled, thread-safe model cache;
- ``menu``: the model menu grouped by paper (from each model's config) and its default model (``dr-grade-classifier``);
- ``analysis``: one network pass per (image, model, target) through ``explain.pipeline``, cached in a bounded LRU;
- ``page``: the page's state and what each of its events does, as {output name: value} (app.py only lays it out);
- ``gradio_widgets`` / ``gradio_events``: the Gradio widgets and launch settings, and the page's events as Gradio
  handlers (the only modules that import gradio);
- ``views``: the download folders (``explain.views`` draws what a slider changes, no network);
- ``charts``: the plotly probability / grade chart;
- ``exports``: the PNG grid, raw maps and reproducible JSON downloads;
- ``examples``: the shipped real example photos with their known diagnoses (``assets/examples``), and
  generated ones written into a cache folder at start-up;
- ``server``: the server process (bounded heaps, address, command line); it imports nothing heavy.

The names below are imported on first use, so that ``import appcore.server`` stays light.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Analysis": "appcore.analysis", "AnalysisCache": "appcore.analysis", "Analyser": "appcore.analysis",
    "image_digest": "appcore.analysis", "PANEL_METHODS": "appcore.analysis",
    "ModelCache": "appcore.catalogue", "ModelChoice": "appcore.model_choice", "ModelUnavailable": "appcore.catalogue",
    "available_models": "appcore.catalogue",
    "Example": "appcore.examples", "ensure_examples": "appcore.examples", "shipped_examples": "appcore.examples",
    "View": "appcore.views", "ViewParams": "appcore.views", "render_view": "appcore.views",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'appcore' has no attribute {name!r}")
