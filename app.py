"""Fundus CAM Zoo — the web app (Gradio Blocks; also the Hugging Face Space's ``app_file``).

Upload a fundus photo, pick a zoo model, and compare CAM | Grad-CAM | Guided Grad-CAM | GMSM side by
side with the papers' region tools (θ attention crop, τ lesion mask, lesion outlines). One network pass
per (photo, model, target) is cached on the server (``appcore.Analyser``): the sliders only redraw.

The page opens on an analysed example (real photos with known diagnoses: ``assets/examples``), with the
main result in one line at the top; the region tools, display options and technical details are in tabs
below the four maps.

    python app.py [--port 7860] [--host 127.0.0.1] [--models FOLDER_OR_HUB_ID ...]

The app loads only the shipped models, hub repo ids and the folders given with ``--models``; a
model a visitor adds is in that visitor's menu only. Errors stay on the page as one status line
(every endpoint's last output) and never name a file or folder of the server.

Research tool, not a medical device: not for clinical use.
"""
from __future__ import annotations

import os

# Offline by default: no analytics and no telemetry; set before gradio / huggingface_hub are imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# A server shares its CPU: idle OpenMP threads must sleep, not spin (2-thread torch ops slow down 10× otherwise).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_LIBC = None  # glibc, where the heaps could be bounded


def bound_heaps(arenas: int = 2, mmap_threshold: int = 1 << 20) -> bool:
    """Make glibc give freed photos, maps and tensors back to the system (False where it is not glibc).

    By default glibc gives threads heaps of their own (up to 8 per core) and, each time a large buffer is
    freed, raises the size from which buffers are mapped separately, so later large buffers stay in those
    heaps after they are freed: the server's memory grew with every photo (3.3 GB after 30 minutes).
    ``FUNDUS_APP_MALLOC=default`` keeps glibc's defaults (to compare).
    """
    global _LIBC
    if os.environ.get("FUNDUS_APP_MALLOC") == "default":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        if libc.mallopt(-8, arenas) and libc.mallopt(-3, mmap_threshold):  # M_ARENA_MAX, M_MMAP_THRESHOLD
            _LIBC = libc
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to set
        pass
    return _LIBC is not None


def trim_heaps_every(seconds: float = 10.0) -> bool:
    """A daemon thread that hands the heaps' free pages back to the system every ``seconds`` (``malloc_trim``):
    what requests freed (decoded photos, gradients, encoded pictures) otherwise stays resident, ~0.4 GB."""
    if _LIBC is None:
        return False

    def trim() -> None:
        while True:
            time.sleep(seconds)
            _LIBC.malloc_trim(0)

    threading.Thread(target=trim, name="heap-trim", daemon=True).start()
    return True


bound_heaps()  # before the threads and the imports that allocate

import argparse  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from appcore import photos, presentation as present  # noqa: E402
from appcore.analysis import PANEL_METHODS, Analyser, image_digest, target_choices  # noqa: E402
from appcore.catalogue import Catalogue, ModelCache, parse_hub_id  # noqa: E402
from appcore.charts import prediction_chart  # noqa: E402
from appcore.examples import Example, shipped_examples  # noqa: E402
from appcore.exports import write_downloads  # noqa: E402
from appcore.menu import config_of, default_choice  # noqa: E402
from appcore.views import COLORMAPS, DownloadFolders, ViewParams, render_view  # noqa: E402
from explain.methods import get_method  # noqa: E402

log = logging.getLogger("fundus_cam_zoo.app")
MAX_FILE_SIZE = "20mb"  # Gradio refuses larger uploads before they reach us; fundus.load_image checks again
NOTE_SECONDS = 20
# Every 10 minutes, the pictures and uploads Gradio wrote more than an hour ago go (disk, and the list of them).
DELETE_CACHE = (600, 3600)
PHOTO_GONE = "The photo of this session is no longer on the server: upload it again."
EXAMPLE_CREDITS = ("<small>Example photos: HRF (Budai et al. 2013) and IDRiD (Porwal et al. 2018), both CC BY 4.0, "
                   "downscaled and re-encoded; IDRiD lesion counts from the CODRAS boxes (C. von Csefalvay, CC BY-SA "
                   "4.0). Details: assets/examples/CREDITS.md.</small>")
# The page's own styles: a prominent main result, example captions that wrap, a model card that fits its
# column, the colour bar, and a phone layout (390 px) without horizontal overflow.
CSS = """
#main-result .main-result { padding: 10px 14px; border-radius: 8px; background: var(--block-background-fill);
  border: 1px solid var(--block-border-color); }
#main-result .main-line { font-size: 1.2rem; line-height: 1.45; }
#main-result .answer { font-weight: 700; }
#main-result .model { color: var(--body-text-color-subdued); }
#main-result .low-resolution { color: #b45309; }
#main-result .known { font-size: 0.9rem; margin-top: 4px; }
#main-result .credit { color: var(--body-text-color-subdued); }
#examples .grid-wrap { height: auto !important; max-height: none !important; min-height: 0 !important;
  overflow: visible !important; }
#examples .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important;
  grid-template-rows: none !important; grid-auto-rows: auto !important; padding-top: 30px !important; }
#examples .gallery-item { height: auto !important; }
#examples .thumbnail-item { width: 100% !important; height: auto !important; display: flex !important;
  flex-direction: column; overflow: hidden; }
#examples .thumbnail-item img { width: 100% !important; height: auto !important; aspect-ratio: 1 / 1;
  object-fit: cover; }
#examples .caption-label { position: static !important; white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; max-width: 100% !important; width: 100%; margin: 0 !important;
  border-radius: 0 !important; font-size: 0.75rem; line-height: 1.2; text-align: center; padding: 2px 1px !important; }
#model-card { overflow-wrap: anywhere; }
#model-card pre, #model-card code { white-space: pre-wrap !important; word-break: break-word; }
.panel-head { min-height: 3.4em; }
.panel-head p { margin: 0 !important; font-size: 0.85rem; line-height: 1.3; }
.panel-head strong { font-size: 1rem; }
.colorbar { display: flex; align-items: center; gap: 8px; font-size: 0.85rem; flex-wrap: wrap; }
.colorbar .bar { display: inline-block; width: 220px; max-width: 45vw; height: 12px; border-radius: 3px; }
.region-summary { font-size: 0.95rem; }
.regions-note { font-style: italic; }
@media (max-width: 640px) {
  #main-result .main-line { font-size: 1.05rem; }
  #panels { flex-direction: row !important; flex-wrap: wrap !important; gap: 8px !important; }
  #panels > .column { flex: 1 1 calc(50% - 8px) !important; min-width: calc(50% - 8px) !important;
    max-width: calc(50% - 4px) !important; }
  .panel-head { min-height: 0; }
  .panel-head p { font-size: 0.75rem; }
  .gradio-container { padding-left: 6px !important; padding-right: 6px !important; }
}
"""
# Gradio keeps each session's page values in memory (~0.5 MB; 10000 sessions by default): the newest 256.
LAUNCH_OPTIONS = dict(max_file_size=MAX_FILE_SIZE, css=CSS,
                      state_session_capacity=int(os.environ.get("FUNDUS_APP_SESSIONS", 256)))


def typed_dropdown(choices, accepts: str, **options) -> gr.Dropdown:
    """A dropdown that also takes typed values (``allow_custom_value``), and whose API docs say so: its choices or
    any string, ``accepts`` saying which strings. gr.Dropdown's own API type lists only the choices it was built
    with; the instance's ``api_info`` is replaced rather than subclassed, because Gradio writes a ``.pyi`` stub
    beside any module that defines a component class."""
    dropdown = gr.Dropdown(choices, allow_custom_value=True, **options)
    listed = dropdown.api_info

    def api_info() -> dict:
        known = listed()
        kinds = [known, {"type": "string"}] if known.get("enum") else [{"type": "string"}]
        return {"anyOf": kinds, "additional_description": accepts}

    dropdown.api_info = api_info
    return dropdown


class FundusApp:
    """The server-side state shared by every session: the catalogue, the model and analysis caches.

    Args:
        models: folders or hub repo ids the operator offers before the shipped models (``--models``).
        analyser: an ``appcore.Analyser`` to use (tests pass one to count network passes); its model cache
            gets this app's catalogue.
        examples: the example photos and the index of the one the page opens on (default
            ``appcore.examples.shipped_examples()``: the real photos in ``assets/examples``).
    """

    def __init__(self, models: list[str] | None = None, analyser: Analyser | None = None,
                 examples: tuple[list[Example], int] | None = None) -> None:
        self.catalogue = Catalogue(models)
        # At most 3 loaded models and 12 cached analyses (~15 MB each for the shipped 320 px models, ~35 MB at
        # 512 px) keep the server under 2 GB (benchmarks/app_soak.py).
        models_cached = int(os.environ.get("FUNDUS_APP_MODELS_CACHED", 3))
        analyses_cached = int(os.environ.get("FUNDUS_APP_ANALYSES_CACHED", 12))
        self.analyser = analyser or Analyser(ModelCache(models_cached, catalogue=self.catalogue), analyses_cached)
        self.analyser.models.catalogue = self.catalogue
        self.examples, self.start = examples if examples is not None else shipped_examples()
        # An example is recognised by its pixels, whichever way it reached the server (click or upload).
        self._example_digests = {image_digest(photos.load_photo(e.path)): e for e in self.examples}
        self.choices = self.catalogue.menu()  # grouped by paper (appcore.menu)
        self.default = default_choice(self.choices)  # dr-grading when offered
        self.downloads = DownloadFolders()

    def example_of(self, digest: str) -> Example | None:
        """The example photo with these pixels, if it is one (its known diagnosis goes in the main result)."""
        return self._example_digests.get(digest)

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


def status_of(exc: Exception) -> str:
    """The status line for an exception: a library error's own message (rejected photo, model not offered or
    unavailable, invalid value); anything else is logged and shown as a generic line."""
    message = present.error_message(exc)
    if message is None:
        log.error("unexpected error", exc_info=exc)
        message = present.INTERNAL_ERROR
    return present.status_error(message)


def reports_errors(status, on_error):
    """A handler whose errors become the status line plus ``on_error(exc, *args)``'s outputs, instead of a
    ``gr.Error`` that leaves "Error" in every output and the reason only in a passing toast."""
    def wrap(fn):
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure keeps the page usable
                return {**on_error(exc, *args), status: status_of(exc)}
        return handler
    return wrap


# What a control cannot change, so its redraw skips sending it (gr.skip(): no encoding, no transfer).
UNCHANGED_BY = {
    "theta": {"cam", "gradcam", "gmsm"},
    "tau": {"cam", "gradcam", "crop"},
    "t": {"cam", "gradcam", "guided_gradcam", "crop"},
    "outlines": {"cam", "gradcam", "gmsm", "crop"},
    "compare": {"cam", "gradcam", "guided_gradcam", "gmsm", "crop"},
}


def build_demo(models: list[str] | None = None, analyser: Analyser | None = None,
               examples: tuple[list[Example], int] | None = None) -> gr.Blocks:
    """The Gradio Blocks app; launch it with ``**LAUNCH_OPTIONS``.

    Args:
        models: folders or hub repo ids to offer before the shipped defaults (tests pass tiny models).
        analyser: the ``appcore.Analyser`` to use (default: a new one with a model cache).
        examples: the example photos and the index of the one the page opens on (default: ``assets/examples``).

    Returns:
        The Blocks; its ``fundus_app`` attribute is the shared ``FundusApp`` state.
    """
    app = FundusApp(models, analyser, examples)
    # Serve exactly the example files (they live outside Gradio's temp dir).
    gr.set_static_paths(paths=[str(e.path) for e in app.examples])
    menu = app.menu()
    default_model = app.default.key if app.default else None
    # The default model's targets, read from its config.json (no weights): the page and the API docs have them
    # before the page's load event selects the model.
    default_config = config_of(app.default) if app.default else None
    targets = target_choices(default_config) if default_config else []
    defaults = ViewParams()

    with gr.Blocks(title="Fundus CAM Zoo", delete_cache=DELETE_CACHE) as demo:
        demo.fundus_app = app
        session = gr.State(None)  # {"path", "digest", "name"} of this session's photo
        current = gr.State(default_model)  # this session's last model that loaded
        added = gr.State([])  # hub ids this session added to its menu
        gr.HTML("<h1 style='margin:0'>Fundus CAM Zoo</h1><div>Explainable retinal fundus image classification: "
                "four explanation methods side by side, with the papers' region tools.</div>", elem_id="title")
        gr.Markdown(present.NOTICE, elem_id="clinical-notice")
        status = gr.Markdown("", elem_id="status")
        main_result = gr.HTML("", elem_id="main-result")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                gallery = gr.Gallery(value=[(str(e.path), e.caption) for e in app.examples], columns=4, rows=2,
                                     object_fit="cover", allow_preview=False, elem_id="examples",
                                     label="Examples with known diagnoses: click one",
                                     selected_index=app.start if app.examples else None)
                with gr.Row():
                    # Typed values: a hub id is a model too, and each model has its own targets; the handlers
                    # validate every value.
                    model_menu = typed_dropdown(menu, "a menu value, or a hub repo id: org/name or org/name@revision",
                                                value=default_model, label="Model", elem_id="model-menu",
                                                min_width=180)
                    target = typed_dropdown(targets, "the selected model's targets: 'predicted', 'all predicted' "
                                                     "(multi-label) or 'class:<index>'",
                                            value=targets[0][1] if targets else None, label="Explain which output",
                                            elem_id="target", min_width=180)
            with gr.Column(scale=3, min_width=300):
                with gr.Row(equal_height=False):
                    model_input = gr.Image(label="As the model sees it (field of view outlined)", interactive=False,
                                           format="jpeg", height=240, min_width=200, elem_id="model-input",
                                           buttons=["fullscreen"])
                    chart = gr.Plot(label="Classification: the model's scores and thresholds", elem_id="chart",
                                    min_width=240)
                upload = gr.File(label="Your own photo: drop a file here or click (JPEG, PNG, TIFF, BMP, WebP; "
                                       "≤ 20 MB)", type="filepath", file_count="single", elem_id="photo-upload", height=100)
        with gr.Row(equal_height=True, elem_id="panels"):
            panels = []
            for method in PANEL_METHODS:
                with gr.Column(min_width=170):
                    gr.Markdown(f"**{get_method(method).title}**  \n{present.PANEL_HELP[method]}",
                                elem_classes="panel-head", elem_id=f"head-{method}")
                    panels.append(gr.Image(label=get_method(method).title, show_label=False, interactive=False,
                                           format="jpeg", elem_id=f"panel-{method}", buttons=["fullscreen"]))
        colorbar = gr.HTML(present.colorbar_html(defaults.colormap), elem_id="colorbar")
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Regions: θ crop, τ lesion mask", elem_id="tab-regions"):
                legend = gr.HTML("", elem_id="legend")
                with gr.Row():
                    theta = gr.Slider(0, 255, value=defaults.theta, step=1, label=present.SLIDER_LABELS["theta"],
                                      elem_id="theta", min_width=200)
                    tau = gr.Slider(0, 1, value=defaults.tau, step=0.01, label=present.SLIDER_LABELS["tau"],
                                    elem_id="tau", min_width=200)
                    gate = gr.Slider(0, 5, value=defaults.t, step=0.05, label=present.SLIDER_LABELS["t"],
                                     elem_id="gate", min_width=200)
                with gr.Row():
                    crop = gr.Image(label="θ crop, enlarged (paper 000 Fig. 2f)", interactive=False, format="jpeg",
                                    elem_id="crop", height=300, min_width=200)
                    before_after = gr.ImageSlider(label="Photo | overlay (drag the handle)", elem_id="compare",
                                                  format="jpeg", max_height=300, min_width=200)
            with gr.Tab("Display", elem_id="tab-display"):
                with gr.Row():
                    alpha = gr.Slider(0, 1, value=defaults.alpha, step=0.05, label=present.SLIDER_LABELS["alpha"],
                                      elem_id="alpha", min_width=200)
                    colormap = gr.Dropdown(list(COLORMAPS), value=defaults.colormap, label="Heat-map colours",
                                           min_width=150)
                    outlines = gr.Checkbox(value=defaults.outlines, label="Lesion outlines (paper 001's colours)",
                                           min_width=150)
                    compare = gr.Radio([(get_method(m).title, m) for m in PANEL_METHODS], value=defaults.compare,
                                       label="Panel in the before/after view", min_width=200)
            with gr.Tab("Model card", elem_id="tab-card"):
                card = gr.Markdown(present.card_markdown(None), elem_id="model-card")
                with gr.Row():
                    hub_id = gr.Textbox(label="Another model from the Hugging Face hub", scale=3,
                                        placeholder="org/name[@revision]")
                    hub_load = gr.Button("Load", scale=1)
            with gr.Tab("Details", elem_id="tab-details"):
                timings = gr.Markdown("", elem_id="timings")
                preprocessing = gr.Markdown("", elem_id="preprocessing")
                photo_view = gr.Image(label="The photo, with the square cut around the field of view",
                                      interactive=False, format="jpeg", height=260, elem_id="photo")
                with gr.Row():
                    prediction = gr.JSON(label="Prediction", elem_id="prediction", height=260)
                    regions = gr.JSON(label="Regions: θ crop box, τ lesion patches and area", elem_id="regions",
                                      height=260)
                with gr.Row():
                    export = gr.Button("Prepare downloads: panels (PNG), raw maps (.npy), view (JSON)")
                    downloads = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                        elem_id="downloads", height=120)
        gr.Markdown(EXAMPLE_CREDITS, elem_id="example-credits")

        view_inputs = [theta, tau, gate, alpha, colormap, outlines, compare]
        view_outputs = [*panels, crop, regions, legend, before_after, colorbar]
        photo_outputs = [session, main_result, photo_view, model_input, preprocessing, timings, chart, prediction,
                         *view_outputs]
        model_outputs = [model_menu, target, card, theta, tau, gate, current, added, *photo_outputs]

        def view_values(view, colormap_name: str, unchanged: set[str] = frozenset()) -> dict:
            """The four panels, crop, regions, summary, before/after and colour bar of a view (unchanged ones
            skipped)."""
            # Plain pictures, no updates: API clients get the file paths the API docs promise (an unavailable
            # method's reason is written on its picture).
            values = {panel: gr.skip() if m in unchanged else view.panels[m] for panel, m in zip(panels, PANEL_METHODS)}
            return {**values, crop: gr.skip() if "crop" in unchanged else view.crop, regions: view.regions,
                    legend: present.legend_html(view.legend, view.regions),
                    before_after: (view.compare[0], view.compare[1]), colorbar: present.colorbar_html(colormap_name)}

        def cleared_view(exc=None, *args) -> dict:
            values = {**dict.fromkeys(panels), crop: None, regions: None, legend: "", before_after: None,
                      colorbar: gr.skip()}
            if isinstance(exc, photos.PhotoRejected):  # the session's photo is gone: forget it
                values[session] = None
            return values

        def cleared_photo(*_args) -> dict:
            return {**cleared_view(), session: None, main_result: "", photo_view: None, model_input: None,
                    preprocessing: "", timings: "", chart: None, prediction: None}

        def explained(source: dict, model_key: str, target_value: str, params: ViewParams, rgb=None) -> dict:
            """Everything about the session's photo: one network pass unless cached, then the view."""
            analysis = app.analysis(source, model_key, target_value, rgb)
            view = render_view(analysis, params)
            notes = present.warnings_of(analysis)
            for note in notes:
                gr.Warning(note, duration=NOTE_SECONDS)
            return {session: source, main_result: present.main_result(analysis, app.example_of(source["digest"])),
                    photo_view: present.photo_with_crop(analysis), model_input: present.model_input_with_fov(analysis),
                    preprocessing: present.preprocessing_markdown(analysis, photos.describe_file(source["path"])),
                    timings: present.timings_line(analysis, view.render_seconds),
                    chart: prediction_chart(analysis.prediction), prediction: analysis.prediction,
                    status: present.status_warnings(notes), **view_values(view, params.colormap)}

        def model_failed(exc, key, previous, session_added, *_args, **_kwargs) -> dict:
            """The menu goes back to the session's last working model (the view still shows it)."""
            back = previous if previous != key else None
            return {model_menu: gr.Dropdown(choices=app.menu(session_added), value=back), current: back}

        @reports_errors(status, model_failed)
        def on_model(key, previous, session_added, source, alpha, colormap, outlines, compare,
                     progress=gr.Progress(track_tqdm=True)):
            """Select a model (a menu value or a typed hub id): load it, show its card, targets and θ/τ/t
            defaults, and explain the session's photo with it."""
            choice = app.catalogue.resolve(key)  # nothing else is loaded, whatever the value
            progress(0, desc=f"loading {choice.key}")
            config = app.model(choice.key).config
            session_added = app.catalogue.session_added(session_added, choice.key)
            options = target_choices(config)
            params = ViewParams.from_config(config, alpha=float(alpha), colormap=colormap, outlines=bool(outlines),
                                            compare=compare)
            values = {model_menu: gr.Dropdown(choices=app.menu(session_added), value=choice.key),
                      target: gr.Dropdown(choices=options, value=options[0][1]),
                      card: present.card_markdown(config, choice.key), theta: params.theta, tau: params.tau,
                      gate: params.t, current: choice.key, added: session_added, status: ""}
            if source:
                try:
                    values.update(explained(source, choice.key, options[0][1], params))
                except Exception as exc:  # noqa: BLE001 - the model stays; the photo's outputs say why
                    values.update({**cleared_view(exc), status: status_of(exc)})
            return values

        @reports_errors(status, model_failed)
        def on_hub(repo_id, previous, session_added, source, alpha, colormap, outlines, compare,
                   progress=gr.Progress(track_tqdm=True)):
            """A typed hub repo id: download it (cached by huggingface_hub), add it to this session's menu, select it."""
            key = parse_hub_id(repo_id).key
            return on_model(key, previous, session_added, source, alpha, colormap, outlines, compare, progress)

        @reports_errors(status, cleared_photo)
        def on_photo(path, model_key, target_value, theta, tau, t, alpha, colormap, outlines, compare):
            """A new photo (upload or example): validate, preprocess, one network pass, draw everything."""
            if not path:
                return {**cleared_photo(), status: ""}
            rgb = photos.load_photo(path)
            params = ViewParams(int(theta), float(tau), float(t), float(alpha), colormap, bool(outlines), compare)
            source = {"path": str(path), "name": Path(path).name, "digest": image_digest(rgb)}
            return explained(source, model_key, target_value, params, rgb)

        @reports_errors(status, cleared_view)
        def on_target(source, model_key, target_value, theta, tau, t, alpha, colormap, outlines, compare):
            """Another target for the session's photo: one network pass (unless cached)."""
            if not source:
                return gr.skip()
            params = ViewParams(int(theta), float(tau), float(t), float(alpha), colormap, bool(outlines), compare)
            return explained(source, model_key, target_value, params)

        def redraw_for(control: str | None):
            unchanged = UNCHANGED_BY.get(control, frozenset())

            @reports_errors(status, cleared_view)
            def on_view(source, model_key, target_value, theta, tau, t, alpha, colormap, outlines, compare):
                """A slider or option moved: redraw from the cached maps (no network pass)."""
                if not source:
                    return gr.skip()
                params = ViewParams(int(theta), float(tau), float(t), float(alpha), colormap, bool(outlines), compare)
                view = render_view(app.analysis(source, model_key, target_value), params)
                return view_values(view, params.colormap, unchanged)

            return on_view

        @reports_errors(status, lambda *_: {downloads: None})
        def on_export(source, model_key, target_value, theta, tau, t, alpha, colormap, outlines, compare):
            """Write the panel grid (PNG), the raw maps (.npy) and the view's JSON for download."""
            if not source:
                return {downloads: None, status: present.status_error("Upload a photo or click an example first.")}
            analysis = app.analysis(source, model_key, target_value)
            params = ViewParams(int(theta), float(tau), float(t), float(alpha), colormap, bool(outlines), compare)
            files = write_downloads(analysis, params, render_view(analysis, params), app.downloads.new(),
                                    image_name=source["name"])
            return {downloads: [str(p) for p in files], status: gr.skip()}

        def on_example(evt: gr.SelectData):
            return str(app.examples[evt.index].path)

        def on_start(source):
            """A new page: the example it opens on goes into the photo box, which analyses it (on_photo)."""
            if source or not app.examples:
                return gr.skip()
            return str(app.examples[app.start].path)

        network = dict(concurrency_limit=2, concurrency_id="network")
        redraw = dict(concurrency_limit=8, concurrency_id="redraw", show_progress="hidden")
        controls = [alpha, colormap, outlines, compare]
        # .input, not .change: a value the handlers set (a reverted menu) triggers nothing.
        model_menu.input(on_model, [model_menu, current, added, session, *controls], [*model_outputs, status],
                         api_name="select_model", **network)
        hub_load.click(on_hub, [hub_id, current, added, session, *controls], [*model_outputs, status],
                       api_name="load_hub_model", **network)
        upload.change(on_photo, [upload, model_menu, target, *view_inputs], [*photo_outputs, status],
                      api_name="analyse", **network)
        gallery.select(on_example, None, [upload], api_name=False)
        target.input(on_target, [session, model_menu, target, *view_inputs], [*photo_outputs, status],
                     api_name="explain_target", **network)
        named = {"theta": theta, "tau": tau, "t": gate, "alpha": alpha, "colormap": colormap,
                 "outlines": outlines, "compare": compare}
        for name, control in named.items():
            control.input(redraw_for(name), [session, model_menu, target, *view_inputs], [*view_outputs, session, status],
                          api_name=False, trigger_mode="always_last", **redraw)
        # One named endpoint for API clients and tests: the full redraw behind every control.
        redraw_button = gr.Button("Redraw", visible=False)
        redraw_button.click(redraw_for(None), [session, model_menu, target, *view_inputs], [*view_outputs, session, status],
                            api_name="view", **redraw)
        export.click(on_export, [session, model_menu, target, *view_inputs], [downloads, status], api_name="downloads",
                     concurrency_limit=2)
        # A new page loads the default model (card, targets, θ/τ/t), then opens on the analysed start example.
        demo.load(on_model, [model_menu, current, added, session, *controls], [*model_outputs, status], api_name=False,
                  **network).then(on_start, [session], [upload], api_name=False)
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def server_address() -> tuple[str, int]:
    """(host, port): 0.0.0.0 on a Space (``SPACE_ID`` set), else 127.0.0.1; ``PORT`` / ``GRADIO_SERVER_PORT`` or 7860."""
    host = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    port = int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    return host, port


def main(argv: list[str] | None = None) -> None:
    host, port = server_address()
    parser = argparse.ArgumentParser(description="Fundus CAM Zoo web app (research tool, not for clinical use).")
    parser.add_argument("--host", default=host, help=f"interface to bind (default {host}; 0.0.0.0 when SPACE_ID is set)")
    parser.add_argument("--port", type=int, default=port, help=f"port (default {port}: $PORT, $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--models", nargs="*", default=[], metavar="ID",
                        help="model folders or hub repo ids (org/name[@revision]) offered before the shipped ones; "
                             "the only folders the app will ever load (named hub ids: FUNDUS_ZOO_MODELS)")
    parser.add_argument("--no-preload", action="store_true",
                        help="do not load the default model and analyse the start example in the background "
                             "after start-up")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        demo = build_demo(models=args.models)
    except ValueError as exc:  # a bad --models entry: the operator's console may name it
        parser.error(str(exc))
    app = demo.fundus_app
    if app.default is not None and app.default.kind != "hub" and not args.no_preload:
        # Load the default model and analyse the start example after the server is up, so that the first
        # visitor's page opens without waiting for either.
        def preload() -> None:
            time.sleep(1.0)
            try:
                app.warm_up()
            except Exception:  # noqa: BLE001 - the page reports load errors when the model is used
                pass

        threading.Thread(target=preload, daemon=True).start()
    trim_heaps_every(float(os.environ.get("FUNDUS_APP_TRIM_SECONDS", 10)))
    demo.launch(server_name=args.host, server_port=args.port, show_error=True, footer_links=["api", "settings"],
                **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()
