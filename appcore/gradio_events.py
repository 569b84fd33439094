"""The page's events as Gradio handlers, for app.py (which only connects them): a ``Page`` event's parameters named
for the API docs, its {name: value} results sent to the widgets of those names, and the few handlers that are
Gradio's own (the gallery's click, the start photo, the extra panels' columns)."""
from __future__ import annotations

import gradio as gr
import numpy as np

from appcore.page import MODEL_CONTROLS, SKIP, Menu, named_event
from appcore.views import PictureFiles


def outputs_by_name(named: dict, pictures: PictureFiles | None = None):
    """A function from a page event's results to Gradio outputs: names to the widgets in ``named``, ``SKIP`` to
    ``gr.skip()``, a ``Menu`` to a dropdown update, a picture (array) of an image widget to a file of its own
    (``pictures``: Gradio would rewrite a shared file while another request is sending it). ``"notes"`` are not
    shown as passing toasts: the status line already carries them (``presentation.status_warnings``), and the next
    result replaces it, whereas a toast stayed over the next photo's result."""
    pictures = pictures if pictures is not None else PictureFiles()

    def as_files(name, value):
        widget = named[name]
        if isinstance(widget, gr.ImageSlider) and isinstance(value, (tuple, list)) and all(
                isinstance(v, np.ndarray) for v in value):
            return tuple(pictures.save(v, name) for v in value)
        if isinstance(widget, gr.Image) and isinstance(value, np.ndarray):
            return pictures.save(value, name)
        return value

    def shown(values):
        if values is SKIP:
            return gr.skip()
        values.pop("notes", None)
        values = {k: as_files(k, v) for k, v in values.items()}
        return {named[k]: gr.skip() if v is SKIP else gr.Dropdown(choices=v.choices, value=v.value)
                if isinstance(v, Menu) else v for k, v in values.items()}

    return shown


def handler(event, names, shown, progress: bool = False):
    """A Gradio handler for a page event: parameters named ``names`` (the API docs show them), results through
    ``shown``; ``progress``: a progress tracker goes to the event as ``progress``. The model's controls (θ, τ, t)
    and every parameter after them may be left out of an API call: None, the model's default for θ, τ and t."""
    first = next((i for i, name in enumerate(names) if name in MODEL_CONTROLS), len(names))
    return named_event(event, names, shown, optional=names[first:],
                       **({"progress": gr.Progress(track_tqdm=True)} if progress else {}))


class PageEvents:
    """The handlers app.py connects, for one ``Page`` and the page's widgets by output name (``named``)."""

    def __init__(self, page, named: dict) -> None:
        self.page, self.named = page, named
        self.shown = outputs_by_name(named)

    def endpoint(self, event, *names: str, progress: bool = False):
        """The handler of a page event whose parameters are named ``names`` (the API docs name them)."""
        return handler(event, names, self.shown, progress)

    def outputs(self, names) -> list:
        """The widgets of these outputs, then the status line (every event's last output)."""
        return [self.named[n] for n in (*names, "status")]

    def example_clicked(self, evt: gr.SelectData) -> str:
        """The gallery's click (Gradio passes it by this annotation): the example's file, for the photo box."""
        return self.page.example(evt.index)

    def start_photo(self, source):
        """A new page: the example it opens on, for the photo box (which analyses it); none for a session's photo."""
        photo = self.page.start_photo(source)
        return gr.skip() if photo is SKIP else photo

    @staticmethod
    def columns_shown(columns: dict):
        """The handler of a checkbox group that shows the ``columns`` ({name: column}) of the chosen names."""
        return lambda chosen: [gr.Column(visible=name in chosen) for name in columns]
