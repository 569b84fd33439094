"""The Gradio app's widgets and outputs, for app.py (the one appcore module that imports gradio; Streamlit never
imports it): a view control's widget from its declaration (``explain.controls``), a typed dropdown, and a page
event's {name: value} results as Gradio outputs."""
from __future__ import annotations

import gradio as gr

from appcore.page import SKIP, Menu, named_event

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


def outputs_by_name(named: dict, note_seconds: float):
    """A function from a page event's results to Gradio outputs: names to the widgets in ``named``, ``SKIP`` to
    ``gr.skip()``, a ``Menu`` to a dropdown update, ``"notes"`` to passing warnings."""
    def shown(values):
        if values is SKIP:
            return gr.skip()
        for note in values.pop("notes", []):
            gr.Warning(note, duration=note_seconds)
        return {named[k]: gr.skip() if v is SKIP else gr.Dropdown(choices=v.choices, value=v.value)
                if isinstance(v, Menu) else v for k, v in values.items()}

    return shown


def handler(event, names, shown, progress: bool = False):
    """A Gradio handler for a page event: parameters named ``names`` (the API docs show them), results through
    ``shown``; ``progress``: a progress tracker goes to the event as ``progress``."""
    return named_event(event, names, shown, **({"progress": gr.Progress(track_tqdm=True)} if progress else {}))
