"""The Gradio app's widgets and settings, for app.py (with ``appcore.gradio_events`` the only appcore modules that
import gradio; Streamlit never imports them): a view control's widget from its declaration (``explain.controls``),
a typed dropdown, and the Blocks' and server's settings."""
from __future__ import annotations

import os

import gradio as gr

from appcore import presentation as present

DELETE_CACHE = (600, 3600)  # every 10 minutes, Gradio's pictures and uploads older than an hour go
# Gradio keeps each session's page values in memory (~0.5 MB; 10000 sessions by default): the newest 256.
LAUNCH_OPTIONS = dict(max_file_size="20mb", css=present.CSS,  # fundus.load_image checks the size again
                      state_session_capacity=int(os.environ.get("FUNDUS_APP_SESSIONS", 256)))

WIDGETS = {"slider": gr.Slider, "dropdown": gr.Dropdown, "radio": gr.Radio, "checkbox": gr.Checkbox,
           "checkboxes": gr.CheckboxGroup}


def typed_dropdown(choices, accepts: str, **options) -> gr.Dropdown:
    """A dropdown that also takes typed values, and whose API docs say so (``accepts``). The instance's ``api_info``
    is replaced, not subclassed: Gradio writes a ``.pyi`` stub beside any module that defines a component class."""
    dropdown = gr.Dropdown(choices, allow_custom_value=True, **options)
    listed = dropdown.api_info

    def api_info() -> dict:
        known = listed()
        return {"anyOf": [known, {"type": "string"}] if known.get("enum") else [{"type": "string"}],
                "additional_description": accepts}

    dropdown.api_info = api_info
    return dropdown


def widget(control):
    """The Gradio widget of a view control (``explain.controls.Control``)."""
    options = dict(value=list(control.default) if control.kind == "checkboxes" else control.default,
                   label=control.label, elem_id=control.elem_id, min_width=150 if control.kind != "slider" else 200)
    if control.kind == "slider":
        options.update(minimum=control.minimum, maximum=control.maximum, step=control.step)
    if control.choices:
        options["choices"] = list(control.choices)
    return WIDGETS[control.kind](**options)
