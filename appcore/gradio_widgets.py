"""The Gradio app's widgets and settings, for app.py (with ``appcore.gradio_events`` the only appcore modules that
import gradio; Streamlit never imports them): a view control's widget from its declaration (``explain.controls``),
a typed dropdown, and the Blocks' and server's settings."""
from __future__ import annotations

import os

import gradio as gr

from appcore import presentation as present

DELETE_CACHE = (600, 3600)  # every 10 minutes, Gradio's pictures and uploads older than an hour go
# Gradio keeps each session's page values in memory (~0.5 MB; 10000 sessions by default): the newest 256.
# Uploads up to 100 MB reach the server, whose check (fundus.load_image: 20 MB) says on the status line why a file is
# refused, and leaves the page as it was; Gradio's own refusal is only a passing toast. Above 100 MB it is that toast.
LAUNCH_OPTIONS = dict(max_file_size="100mb", css=present.CSS,
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


MODEL_DEFAULT = "empty (null): the selected model's own default, from its config, as the page sets it"


def widget(control):
    """The Gradio widget of a view control (``explain.controls.Control``).

    A control whose default is the model's (θ, τ, t: ``Control.config``) starts empty: the page sets it when a model
    is selected, and an API call that leaves it out gets the model's default (``appcore.page.view_params``), not a
    fixed number that differs from the page's."""
    default = list(control.default) if control.kind == "checkboxes" else control.default
    options = dict(value=None if control.config else default, label=control.label, elem_id=control.elem_id,
                   min_width=150 if control.kind != "slider" else 200)
    if control.kind == "slider":
        options.update(minimum=control.minimum, maximum=control.maximum, step=control.step)
    if control.choices:
        options["choices"] = list(control.choices)
    made = WIDGETS[control.kind](**options)
    if control.config:
        _accepts_empty(made)
    return made


def _accepts_empty(component) -> None:
    """Let an empty value through to the page (Gradio's slider would compare None with its minimum), and say so in
    the API docs. The instance's methods are replaced, not subclassed: see ``typed_dropdown``."""
    component.value = None  # Gradio's slider turns an empty start value into its minimum: empty it again
    checked, described = component.preprocess, component.api_info

    def preprocess(payload):
        return None if payload is None else checked(payload)

    def api_info() -> dict:
        return {**described(), "additional_description": MODEL_DEFAULT}

    component.preprocess, component.api_info = preprocess, api_info
