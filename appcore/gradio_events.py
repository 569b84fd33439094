"""The page's events as Gradio handlers, for app.py (which only connects them): a ``Page`` event's parameters named
for the API docs, its {name: value} results sent to the widgets of those names, and the few handlers that are
Gradio's own (the gallery's click, the start photo, the extra panels' columns)."""
from __future__ import annotations

import gradio as gr

from appcore.page import SKIP, Menu, named_event

NOTE_SECONDS = 20  # how long a passing warning stays


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


class PageEvents:
    """The handlers app.py connects, for one ``Page`` and the page's widgets by output name (``named``)."""

    def __init__(self, page, named: dict, note_seconds: float = NOTE_SECONDS) -> None:
        self.page, self.named = page, named
        self.shown = outputs_by_name(named, note_seconds)

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
