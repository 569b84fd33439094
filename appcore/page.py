"""The page's server-side state, and what each of its events does, without a UI toolkit.

Each event returns ``{output name: value}``: the names are ``MODEL_OUTPUTS`` / ``PHOTO_OUTPUTS`` /
``VIEW_OUTPUTS`` (the panels are named by their methods), ``SKIP`` leaves an output (or, returned alone, every
output) as it is, ``Menu`` updates a menu's choices, and ``"notes"`` holds the photo's warnings (the status line
shows them). app.py turns the names into its widgets; the front end holds layout and wiring only.

Errors a visitor can cause stay on the page as one status line (every event's last output), never as an "Error"
in every output: ``reports_errors`` turns them into the status line plus the event's own clean-up values.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appcore import photos, presentation as present
from appcore.analysis import Analyser, image_digest, server_analyser
from appcore.catalogue import Catalogue, parse_hub_id
from appcore.charts import prediction_chart
from appcore.examples import Example, shipped_examples
from appcore.exports import write_downloads
from appcore.menu import config_of, default_choice
from appcore.presentation import message_of
from appcore.user_errors import UserInputError
from appcore.views import DownloadFolders
from explain.controls import BY_NAME, CONTROLS, CROP
from explain.methods import panel_methods
from explain.views import ViewParams, render_view
from fundus.tasks import task_of

PHOTO_GONE = "The photo of this session is no longer on the server: upload it again."
PAGE_KEPT = "Nothing on the page was changed."
EXPORT_FIRST = "Upload a photo or click an example first."
PANELS = panel_methods("main") + panel_methods("optional")
CONTROL_NAMES = tuple(c.name for c in CONTROLS)
MODEL_CONTROLS = tuple(c.name for c in CONTROLS if c.config)  # a model sets these to its defaults (θ, τ, t)
DISPLAY_CONTROLS = tuple(c.name for c in CONTROLS if not c.config)  # kept across models
VIEW_OUTPUTS = (*panel_methods("main"), CROP, "regions", "legend", "before_after", "colorbar", *panel_methods("optional"))
PHOTO_OUTPUTS = ("session", "main_result", "photo_view", "model_input", "preprocessing", "timings", "chart",
                 "prediction", *VIEW_OUTPUTS)
MODEL_OUTPUTS = ("model_menu", "target", "card", *MODEL_CONTROLS, "current", "added", *PHOTO_OUTPUTS)
SKIP = type("Skip", (), {"__repr__": lambda self: "SKIP"})()  # leave the output as it is
PICTURES = (*PANELS, CROP)  # the view's pictures that a control redraws or leaves as they are (Control.redraws)


def redraw_outputs(control: str | None = None) -> tuple[str, ...]:
    """The view's outputs of a control's event (None: every control's, ``VIEW_OUTPUTS``): of ``PICTURES`` only those
    the control redraws (``Control.redraws``), every other output always (the before/after view shows the panel
    chosen at the time: ``Page.redraw`` leaves it as it is when that panel is not redrawn)."""
    if control is None:
        return VIEW_OUTPUTS
    redrawn = BY_NAME[control].redraws()
    return tuple(name for name in VIEW_OUTPUTS if name not in PICTURES or name in redrawn)


@dataclass(frozen=True)
class Menu:
    """A menu's new choices ((label, value) pairs) and value."""

    choices: list
    value: Any


def status_of(exc: Exception) -> str:
    """The status line for an exception (``message_of``)."""
    return present.status_error(message_of(exc))


def reports_errors(on_error):
    """An event whose errors become the status line plus ``on_error(page, exc, *args)``'s values."""
    def wrap(event):
        @functools.wraps(event)
        def handler(page, *args, **kwargs):
            try:
                return event(page, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure keeps the page usable
                return {**on_error(page, exc, *args), "status": status_of(exc)}
        return handler
    return wrap


def named_event(event, names, adapt, optional=(), **keywords):
    """``event`` as a function of these parameter names (a front end's API docs read them), its results passed
    through ``adapt``; ``optional``: the trailing names that default to None (an API client may leave them out);
    ``keywords``: trailing parameters with these defaults (a progress tracker), passed to ``event`` by name."""
    def handler(*args):
        given = dict(zip(keywords, args[len(names):]))
        return adapt(event(*args[:len(names)], **given))

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    handler.__signature__ = inspect.Signature(
        [inspect.Parameter(n, kind, **({"default": None} if n in optional else {})) for n in names]
        + [inspect.Parameter(k, kind, default=v) for k, v in keywords.items()])
    return handler


def view_params(values, config=None) -> ViewParams:
    """The controls' values, in ``CONTROLS`` order, as ViewParams (checked). An empty value (None: an API call that
    leaves θ, τ or t out) is the model's own default from its ``config``, as the page shows it: one source of
    defaults for the page and the API.

    Raises:
        UserInputError: (a ValueError) a value out of its control's range or choices.
    """
    return ViewParams.from_config(config, **visitor_values(zip(CONTROL_NAMES, values)))


def visitor_values(named) -> dict[str, Any]:
    """The controls' values a visitor sent ((name, value) pairs; None: not sent), each checked by its control.

    Raises:
        UserInputError: (a ValueError) a value out of its control's range or choices: the visitor's to correct.
    """
    try:
        return {name: BY_NAME[name].check(value) for name, value in named if value is not None}
    except (TypeError, ValueError) as exc:
        raise UserInputError(str(exc)) from exc


class Page:
    """The state shared by every session: the catalogue, the model and analysis caches, the examples.

    Args:
        models: folders or hub repo ids the operator offers before the shipped models (``--models``).
        analyser: an ``appcore.Analyser`` to use (tests pass one to count network passes); its model cache
            gets this page's catalogue.
        examples: the example photos and the index of the one the page opens on (default
            ``appcore.examples.shipped_examples()``: the real photos in ``assets/examples``).
    """

    def __init__(self, models: list[str] | None = None, analyser: Analyser | None = None,
                 examples: tuple[list[Example], int] | None = None) -> None:
        self.catalogue = Catalogue(models)
        self.analyser = analyser or server_analyser(self.catalogue)
        self.analyser.models.catalogue = self.catalogue
        self.examples, self.start = examples if examples is not None else shipped_examples()
        # An example is recognised by its pixels, whichever way it reached the server (click or upload).
        self._example_digests = {image_digest(photos.load_photo(e.path)): e for e in self.examples}
        self.choices = self.catalogue.menu()  # grouped by paper (appcore.menu)
        self.default = default_choice(self.choices)  # dr-grade-classifier when offered
        self.downloads = DownloadFolders()

    # -- state --------------------------------------------------------------------------------------------

    def example_of(self, digest: str) -> Example | None:
        """The example photo with these pixels, if it is one (its known diagnosis goes in the main result)."""
        return self._example_digests.get(digest)

    def default_targets(self) -> list[tuple[str, str]]:
        """The default model's targets, from its config.json (no weights): the page has them before it loads."""
        config = config_of(self.default) if self.default else None
        return task_of(config.task).target_menu(config.labels) if config else []

    def warm_up(self) -> None:
        """Load the default model and analyse the example the page opens on, so the first visitor waits for
        neither (errors are left for the page to report)."""
        if self.default is None or not self.examples:
            return
        key = self.default.key
        self.analyser.models.get(key)
        self.analyser.analyse(photos.load_photo(self.examples[self.start].path), key, "")

    def menu(self, added: list[str] = ()) -> list[tuple[str, str]]:
        """The model menu of a session, (label, value) pairs grouped by paper: the app's models and the ones this
        session added."""
        choices = self.catalogue.menu(added) if added else self.choices
        return [(choice.label, choice.key) for choice in choices]

    def model(self, key: str):
        """The loaded model; raises ``ModelNotOffered`` / ``ModelUnavailable`` with the page's message."""
        return self.analyser.models.get(key)[0]

    def analysis(self, source: dict, model_key: str, target: str, rgb=None):
        """The analysis of a session's photo: cached, else one network pass (the photo re-read if needed)."""
        found = None if rgb is not None else self.analyser.cached(source["digest"], model_key, target)
        if found is not None:  # the usual case for a slider move: no decoding, no network
            return found
        if rgb is None:
            try:
                rgb = photos.load_photo(source["path"])
            except photos.PhotoRejected:
                raise photos.PhotoRejected(PHOTO_GONE) from None
        return self.analyser.analyse(rgb, model_key, target, digest=source["digest"])

    # -- what the events show -----------------------------------------------------------------------------

    @staticmethod
    def view_values(view, params: ViewParams, grid: str = "") -> dict:
        """The panels, crop, regions, summary, before/after and colour bar of a view (an optional panel not asked
        for is empty). Plain pictures: API clients get the file paths the API docs promise (an unavailable method's
        reason is written on its picture)."""
        return {**{m: view.panels.get(m) for m in PANELS}, CROP: view.crop, "regions": view.regions,
                "legend": present.legend_html(view.legend, view.regions), "before_after": view.compare,
                "colorbar": present.colorbar_html(params.colormap, grid, notes=view.notes)}

    def cleared_view(self, exc=None, *_args) -> dict:
        values = {**dict.fromkeys(VIEW_OUTPUTS), "legend": "", "colorbar": SKIP}
        if isinstance(exc, photos.PhotoRejected):  # the session's photo is gone: forget it
            values["session"] = None
        return values

    def cleared_photo(self, *_args) -> dict:
        return {**self.cleared_view(), "session": None, "main_result": "", "photo_view": None, "model_input": None,
                "preprocessing": "", "timings": "", "chart": None, "prediction": None}

    def explained(self, source: dict, model_key: str, target: str, params, rgb=None) -> dict:
        """Everything about the session's photo: one network pass unless cached, then the view. ``params``: a
        ViewParams, or the controls' values (``view_params``: empty ones are the model's defaults)."""
        analysis = self.analysis(source, model_key, target, rgb)
        if not isinstance(params, ViewParams):
            params = view_params(params, analysis.config)
        view = render_view(analysis, params)
        notes = present.warnings_of(analysis)
        return {"notes": notes, "session": source,
                "main_result": present.main_result(analysis, self.example_of(source["digest"])),
                "photo_view": present.photo_with_crop(analysis), "model_input": present.model_input_with_fov(analysis),
                "preprocessing": present.preprocessing_markdown(analysis, photos.describe_file(source["path"])),
                "timings": present.timings_line(analysis, view.render_seconds),
                "chart": prediction_chart(analysis.prediction), "prediction": analysis.prediction,
                "status": present.status_warnings(notes),
                **self.view_values(view, params, grid=present.map_grid_caption(analysis.config))}

    def model_failed(self, exc, key, previous, session_added, *_args, **_kwargs) -> dict:
        """The menu goes back to the session's last working model (the view still shows it)."""
        back = previous if previous != key else None
        return {"model_menu": Menu(self.menu(session_added), back), "current": back}

    # -- the events ----------------------------------------------------------------------------------------

    @reports_errors(model_failed)
    def select_model(self, key, previous, session_added, source, *display, progress=None) -> dict:
        """Select a model (a menu value or a typed hub id): load it, show its card, targets and θ/τ/t defaults,
        and explain the session's photo with it. ``display``: the values of ``DISPLAY_CONTROLS``."""
        choice = self.catalogue.resolve(key)  # nothing else is loaded, whatever the value
        if progress is not None:
            progress(0, desc=f"loading {choice.key}")
        config = self.model(choice.key).config
        session_added = self.catalogue.session_added(session_added, choice.key)
        options = task_of(config.task).target_menu(config.labels)
        params = ViewParams.from_config(config, **visitor_values(zip(DISPLAY_CONTROLS, display)))
        values = {"model_menu": Menu(self.menu(session_added), choice.key), "target": Menu(options, options[0][1]),
                  "card": present.card_markdown(config, choice.key), "current": choice.key, "added": session_added,
                  "status": "", **{name: getattr(params, name) for name in MODEL_CONTROLS}}
        if source:
            try:
                values.update(self.explained(source, choice.key, options[0][1], params))
            except Exception as exc:  # noqa: BLE001 - the model stays; the photo's outputs say why
                values.update({**self.cleared_view(exc), "status": status_of(exc)})
        return values

    @reports_errors(model_failed)
    def load_hub_model(self, repo_id, previous, session_added, source, *display, progress=None) -> dict:
        """A typed hub repo id: download it (cached by huggingface_hub), add it to this session's menu, select it."""
        return self.select_model(parse_hub_id(repo_id).key, previous, session_added, source, *display,
                                 progress=progress)

    @reports_errors(cleared_photo)
    def photo(self, path, model_key, target, *controls) -> dict:
        """A new photo (upload or example): validate, preprocess, one network pass, draw everything. An emptied
        photo box (its ×, or an upload the browser refused) and a photo over the size limits leave the page as it
        was: the last result stays, and for a photo too large the status line says why until the next action."""
        if not path:
            return SKIP
        view_params(controls)  # a bad value is refused before the network pass
        try:
            rgb = photos.load_photo(path)
        except photos.PhotoTooLarge as exc:
            return {"status": present.status_error(f"{exc} {PAGE_KEPT}")}
        source = {"path": str(path), "name": Path(path).name, "digest": image_digest(rgb)}
        return self.explained(source, model_key, target, controls, rgb)

    @reports_errors(cleared_view)
    def target(self, source, model_key, target, *controls) -> dict:
        """Another target for the session's photo: one network pass (unless cached)."""
        if not source:
            return SKIP
        return self.explained(source, model_key, target, controls)

    def redraw(self, control: str | None = None):
        """The event of a control (None: every control): redraw from the cached maps (no network pass), sending
        only ``redraw_outputs(control)``, "session" and "status": no picture the control leaves as it was, and no
        before/after view when its panel is not one the control redraws (unless the control chooses that panel).
        On an error it clears those outputs only: the other panels stay as they were, the status line says why."""
        outputs = frozenset((*redraw_outputs(control), "session", "status"))
        keeps_compare = control not in (None, "compare")  # "compare": the control that chooses its panel

        @reports_errors(Page.cleared_view)
        def event(page, source, model_key, target, *controls) -> dict:
            if not source:
                return SKIP
            analysis = page.analysis(source, model_key, target)
            params = view_params(controls, analysis.config)
            values = page.view_values(render_view(analysis, params), params,
                                      grid=present.map_grid_caption(analysis.config))
            if keeps_compare and params.compare not in outputs:
                values["before_after"] = SKIP
            return values

        def sent(*args) -> dict:
            values = event(self, *args)
            return values if values is SKIP else {k: v for k, v in values.items() if k in outputs}

        return sent

    @reports_errors(lambda page, *_: {"downloads": None})
    def export(self, source, model_key, target, *controls) -> dict:
        """Write the panel grid (PNG), the raw maps (.npy) and the view's JSON for download."""
        if not source:
            return {"downloads": None, "status": present.status_error(EXPORT_FIRST)}
        analysis = self.analysis(source, model_key, target)
        params = view_params(controls, analysis.config)
        files = write_downloads(analysis, params, render_view(analysis, params), self.downloads.new(),
                                image_name=source["name"])
        return {"downloads": [str(p) for p in files], "status": SKIP}

    def example(self, index: int) -> str:
        return str(self.examples[index].path)

    def start_photo(self, source) -> str:
        """A new page: the example it opens on goes into the photo box, which analyses it."""
        if source or not self.examples:
            return SKIP
        return self.example(self.start)
