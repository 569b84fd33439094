"""Fundus CAM Zoo — the web app (Gradio Blocks; also the Hugging Face Space's ``app_file``).

Upload a fundus photo, pick a zoo model, and compare CAM | Grad-CAM | Guided Grad-CAM | GMSM side by
side with the papers' region tools (θ attention crop, τ lesion mask, lesion outlines). One network pass
per (photo, model, target) is cached on the server (``appcore.Analyser``): the sliders only redraw.

    python app.py [--port 7860] [--host 127.0.0.1] [--models FOLDER_OR_HUB_ID ...]

Research tool, not a medical device: not for clinical use.
"""
from __future__ import annotations

import os

# Offline by default: no analytics and no telemetry; set before gradio / huggingface_hub are imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# A server shares its CPU: idle OpenMP threads must sleep, not spin (2-thread torch ops slow down 10× otherwise).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from appcore import photos, presentation as present  # noqa: E402
from appcore.analysis import PANEL_METHODS, Analyser, image_digest, target_choices  # noqa: E402
from appcore.catalogue import ModelCache, ModelUnavailable, available_models, parse_model_key  # noqa: E402
from appcore.charts import prediction_chart  # noqa: E402
from appcore.examples import ensure_examples  # noqa: E402
from appcore.exports import write_downloads  # noqa: E402
from appcore.views import COLORMAPS, PANEL_TITLES, ViewParams, render_view  # noqa: E402

MAX_FILE_SIZE = "20mb"  # Gradio refuses larger uploads before they reach us; fundus.load_image checks again
ERROR_SECONDS = 20


class FundusApp:
    """The server-side state shared by every session: the model cache and the analysis cache.

    Args:
        models: extra folders or hub repo ids offered before the zoo registry's models.
        analyser: an ``appcore.Analyser`` to use (tests pass one to count network passes).
        example_size: side of the generated example photos.
    """

    def __init__(self, models: list[str] | None = None, analyser: Analyser | None = None,
                 example_size: int = 512) -> None:
        self.extra = list(models or [])
        # At most 3 loaded models and 12 cached analyses (~35 MB each at 512 px) keep the server under 2 GB.
        models_cached = int(os.environ.get("FUNDUS_APP_MODELS_CACHED", 3))
        analyses_cached = int(os.environ.get("FUNDUS_APP_ANALYSES_CACHED", 12))
        self.analyser = analyser or Analyser(ModelCache(capacity=models_cached), capacity=analyses_cached)
        self.examples = ensure_examples(size=example_size)
        self.choices = available_models(self.extra)

    # -- model menu ---------------------------------------------------------------------------
    def menu(self) -> list[tuple[str, str]]:
        return [(choice.label, choice.key) for choice in self.choices]

    def add_model(self, key: str) -> str:
        """Add a typed model id to the menu (after loading it) and return its menu value."""
        choice = parse_model_key(key)
        if choice.key not in {c.key for c in self.choices}:
            self.choices.append(choice)
        return choice.key

    def model(self, key: str):
        if not key:
            raise gr.Error("No model is selected (none shipped in assets/ and none configured).", duration=ERROR_SECONDS)
        try:
            model, _lock = self.analyser.models.get(key)
        except (ModelUnavailable, ValueError) as exc:
            raise gr.Error(str(exc), duration=ERROR_SECONDS) from None
        return model

    # -- photo → analysis ---------------------------------------------------------------------
    def analysis(self, source: dict | None, model_key: str, target: str):
        """The cached analysis of a session's photo (re-run only if it was evicted from the cache)."""
        if not source:
            return None
        self.model(model_key)
        try:
            found = self.analyser.cached(source["digest"], model_key, target)
            if found is not None:  # the usual case for a slider move: no decoding, no network
                return found
            try:
                rgb = photos.load_photo(source["path"])
            except photos.PhotoRejected as exc:
                raise gr.Error(str(exc), duration=ERROR_SECONDS) from None
            return self.analyser.analyse(rgb, model_key, target, digest=source["digest"])
        except ModelUnavailable as exc:
            raise gr.Error(str(exc), duration=ERROR_SECONDS) from None
        except ValueError as exc:  # a target the model does not have
            raise gr.Error(str(exc), duration=ERROR_SECONDS) from None


# What a control cannot change, so its redraw skips sending it (gr.skip(): no encoding, no transfer).
UNCHANGED_BY = {
    "theta": {"cam", "gradcam", "gmsm"},
    "tau": {"cam", "gradcam", "crop"},
    "t": {"cam", "gradcam", "guided_gradcam", "crop"},
    "outlines": {"cam", "gradcam", "gmsm", "crop"},
    "compare": {"cam", "gradcam", "guided_gradcam", "gmsm", "crop"},
}


def _view_values(view, unchanged: set[str] = frozenset()) -> list:
    """Values of the view outputs: the four panels, crop, regions, summary, before/after."""
    panels = [gr.skip() if m in unchanged else gr.Image(value=view.panels[m], label=view.captions[m])
              for m in PANEL_METHODS]
    return panels + [
        gr.skip() if "crop" in unchanged else view.crop,
        view.regions,
        present.legend_html(view.legend, view.regions),
        (view.compare[0], view.compare[1]),
    ]


def _empty_view_values() -> list:
    panels = [gr.Image(value=None, label=PANEL_TITLES[m]) for m in PANEL_METHODS]
    return panels + [None, None, "", None]


def build_demo(models: list[str] | None = None, analyser: Analyser | None = None, example_size: int = 512) -> gr.Blocks:
    """The Gradio Blocks app.

    Args:
        models: extra folders or hub repo ids to offer before the shipped defaults (tests pass tiny models).
        analyser: the ``appcore.Analyser`` to use (default: a new one with a model cache).
        example_size: side of the generated example photos in pixels.

    Returns:
        The Blocks; its ``fundus_app`` attribute is the shared ``FundusApp`` state.
    """
    app = FundusApp(models, analyser, example_size)
    # The examples live in the user's cache folder, outside Gradio's temp dir: serve exactly these files.
    gr.set_static_paths(paths=[str(p) for p in app.examples])
    menu = app.menu()
    default_model = menu[0][1] if menu else None

    with gr.Blocks(title="Fundus CAM Zoo") as demo:
        demo.fundus_app = app
        session = gr.State(None)  # {"path", "digest", "name"} of this session's photo
        gr.Markdown("# Fundus CAM Zoo\nExplainable retinal fundus image classification: CAM, Grad-CAM, "
                    "Guided Grad-CAM and GMSM side by side, with the papers' region tools.")
        gr.Markdown(present.NOTICE, elem_id="clinical-notice")
        status = gr.Markdown("", elem_id="status")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                upload = gr.File(label="Fundus photo — drop a file here or click to choose (JPEG, PNG, TIFF, BMP, "
                                 "WebP; ≤ 20 MB, ≤ 50 MP)", type="filepath", file_count="single", elem_id="photo-upload")
                examples = gr.Gallery(value=[(str(p), present.example_caption(p)) for p in app.examples],
                                      label="Examples (generated fundus-like images and scikit-image's CC0 retina) — click one",
                                      columns=4, height=150, allow_preview=False, elem_id="examples")
                # Custom values: per-session menus change (hub ids, each model's targets); the handlers validate.
                model_menu = gr.Dropdown(menu, value=default_model, label="Model", elem_id="model-menu",
                                         allow_custom_value=True)
                with gr.Row():
                    hub_id = gr.Textbox(label="…or a hub repo id", placeholder="org/name[@revision]", scale=3)
                    hub_load = gr.Button("Load", scale=1)
                with gr.Accordion("Model card: paper, labels, data, metrics", open=False):
                    card = gr.Markdown(present.card_markdown(None), elem_id="model-card")
                target = gr.Dropdown([], label="Explain which output", elem_id="target", allow_custom_value=True)
            with gr.Column(scale=2):
                with gr.Row():
                    photo_view = gr.Image(label="Photo with the crop around the field of view", interactive=False,
                                          format="jpeg", height=260)
                    model_input = gr.Image(label="As the model sees it (crop, CLAHE, resize; FOV outlined)",
                                           interactive=False, format="jpeg", height=260)
                preprocessing = gr.Markdown("", elem_id="preprocessing")
                chart = gr.Plot(label="Classification", elem_id="chart")
                with gr.Accordion("Prediction (JSON)", open=False):
                    prediction = gr.JSON(label="Prediction", elem_id="prediction")
        with gr.Row(equal_height=True):
            panels = [gr.Image(label=PANEL_TITLES[m], interactive=False, format="jpeg", elem_id=f"panel-{m}",
                               buttons=["fullscreen"], height=320) for m in PANEL_METHODS]
        with gr.Row():
            theta = gr.Slider(0, 255, value=128, step=1, label="θ attention crop (paper 000 eq. 5)", elem_id="theta")
            tau = gr.Slider(0, 1, value=0.6, step=0.01, label="τ lesion mask (paper 004 eq. 4)", elem_id="tau")
            gate = gr.Slider(0, 5, value=1.0, step=0.05, label="t GMSM gate (paper 004 eq. 2)", elem_id="gate")
        with gr.Row():
            alpha = gr.Slider(0, 1, value=0.5, step=0.05, label="overlay α", elem_id="alpha")
            colormap = gr.Dropdown(list(COLORMAPS), value="jet", label="colormap")
            outlines = gr.Checkbox(value=True, label="lesion outlines (paper 001's colours)")
            compare = gr.Radio([(PANEL_TITLES[m], m) for m in PANEL_METHODS], value="guided_gradcam",
                               label="before/after panel")
        with gr.Row():
            crop = gr.Image(label="θ crop enlarged to the input size (paper 000 Fig. 2f)", interactive=False,
                            format="jpeg", elem_id="crop", height=320)
            before_after = gr.ImageSlider(label="Photo | overlay", elem_id="compare", format="jpeg", max_height=320)
            with gr.Column():
                legend = gr.HTML("", elem_id="legend")
                regions = gr.JSON(label="Regions: θ crop box, τ lesion patches and area", elem_id="regions",
                                  height=260)
        with gr.Row():
            export = gr.Button("Prepare downloads: panels (PNG), raw maps (.npy), view (JSON)")
            downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads",
                                height=120)

        view_inputs = [theta, tau, gate, alpha, colormap, outlines, compare]
        view_outputs = [*panels, crop, regions, legend, before_after]
        analysis_outputs = [session, photo_view, model_input, preprocessing, chart, prediction, status, *view_outputs]

        def params_of(theta, tau, t, alpha, colormap, outlines, compare) -> ViewParams:
            try:
                return ViewParams(int(theta), float(tau), float(t), float(alpha), colormap, bool(outlines), compare)
            except ValueError as exc:
                raise gr.Error(str(exc), duration=ERROR_SECONDS) from None

        def on_model(model_key, progress=gr.Progress(track_tqdm=True)):
            """Load the chosen model (a hub id downloads with progress), show its card and targets."""
            if not model_key:
                return gr.Dropdown(choices=[], value=None), present.card_markdown(None), 128, 0.6, 1.0
            progress(0, desc=f"loading {model_key}")
            model = app.model(model_key)
            config = model.config
            options = target_choices(config)
            return (gr.Dropdown(choices=options, value=options[0][1]), present.card_markdown(config, model_key),
                    int(config.theta), float(config.tau), float(config.t))

        def on_hub(repo_id, progress=gr.Progress(track_tqdm=True)):
            """A typed hub repo id: download (cached by huggingface_hub) and select it."""
            try:
                key = parse_model_key(repo_id).key
            except ValueError as exc:
                raise gr.Error(str(exc), duration=ERROR_SECONDS) from None
            progress(0, desc=f"downloading {key}")
            app.model(key)
            app.add_model(key)
            return gr.Dropdown(choices=app.menu(), value=key)

        def on_photo(path, model_key, target, theta, tau, t, alpha, colormap, outlines, compare):
            """A new photo (upload or example): validate, preprocess, one network pass, draw everything."""
            if not path:
                return [None, None, None, "", None, None, ""] + _empty_view_values()
            try:
                rgb = photos.load_photo(path)
            except photos.PhotoRejected as exc:
                raise gr.Error(str(exc), duration=ERROR_SECONDS) from None
            source = {"path": str(path), "name": Path(path).name, "digest": image_digest(rgb)}
            app.model(model_key)
            try:
                analysis = app.analyser.analyse(rgb, model_key, target, digest=source["digest"])
            except (ModelUnavailable, ValueError) as exc:
                raise gr.Error(str(exc), duration=ERROR_SECONDS) from None
            view = render_view(analysis, params_of(theta, tau, t, alpha, colormap, outlines, compare))
            notes = present.warnings_of(analysis)
            for note in notes:
                gr.Warning(note, duration=ERROR_SECONDS)
            status_text = "\n".join(f"⚠️ **{note}**" for note in notes)
            return [
                source,
                present.photo_with_crop(analysis),
                present.model_input_with_fov(analysis),
                present.preprocessing_markdown(analysis, photos.describe_file(path)),
                prediction_chart(analysis.prediction, title=present.prediction_title(analysis)),
                analysis.prediction,
                status_text,
            ] + _view_values(view)

        def on_target(source, model_key, target, theta, tau, t, alpha, colormap, outlines, compare):
            """Another model or target for the session's photo: one network pass (unless cached)."""
            if not source:
                return [gr.skip()] * len(analysis_outputs)
            return on_photo(source["path"], model_key, target, theta, tau, t, alpha, colormap, outlines, compare)

        def redraw_for(control: str | None):
            unchanged = UNCHANGED_BY.get(control, frozenset())

            def on_view(source, model_key, target, theta, tau, t, alpha, colormap, outlines, compare):
                """A slider or option moved: redraw from the cached maps (no network pass)."""
                if not source:
                    return [gr.skip()] * len(view_outputs)
                analysis = app.analysis(source, model_key, target)
                view = render_view(analysis, params_of(theta, tau, t, alpha, colormap, outlines, compare))
                return _view_values(view, unchanged)

            return on_view

        def on_export(source, model_key, target, theta, tau, t, alpha, colormap, outlines, compare):
            """Write the panel grid (PNG), the raw maps (.npy) and the view's JSON for download."""
            if not source:
                raise gr.Error("Upload a photo or click an example first.", duration=ERROR_SECONDS)
            analysis = app.analysis(source, model_key, target)
            params = params_of(theta, tau, t, alpha, colormap, outlines, compare)
            view = render_view(analysis, params)
            return [str(p) for p in write_downloads(analysis, params, view, image_name=source["name"])]

        def on_example(evt: gr.SelectData):
            return str(app.examples[evt.index])

        network = dict(concurrency_limit=2, concurrency_id="network")
        redraw = dict(concurrency_limit=8, concurrency_id="redraw", show_progress="hidden")
        model_setup = model_menu.change(on_model, [model_menu], [target, card, theta, tau, gate],
                                        api_name="select_model", **network)
        model_setup.then(on_target, [session, model_menu, target, *view_inputs], analysis_outputs,
                         api_name=False, **network)
        hub_load.click(on_hub, [hub_id], [model_menu], api_name="load_hub_model", **network)
        upload.change(on_photo, [upload, model_menu, target, *view_inputs], analysis_outputs,
                      api_name="analyse", **network)
        examples.select(on_example, None, [upload], api_name=False)
        target.input(on_target, [session, model_menu, target, *view_inputs], analysis_outputs,
                     api_name="explain_target", **network)
        controls = {"theta": theta, "tau": tau, "t": gate, "alpha": alpha, "colormap": colormap,
                    "outlines": outlines, "compare": compare}
        for name, control in controls.items():
            control.input(redraw_for(name), [session, model_menu, target, *view_inputs], view_outputs, api_name=False,
                          trigger_mode="always_last", **redraw)
        # One named endpoint for API clients and tests: the full redraw behind every control.
        redraw_button = gr.Button("Redraw", visible=False)
        redraw_button.click(redraw_for(None), [session, model_menu, target, *view_inputs], view_outputs,
                            api_name="view", **redraw)
        export.click(on_export, [session, model_menu, target, *view_inputs], [downloads], api_name="downloads",
                     concurrency_limit=2)
        demo.load(on_model, [model_menu], [target, card, theta, tau, gate], api_name=False, **network)
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
                        help="extra model folders or hub repo ids (org/name[@revision]) offered before the shipped ones")
    parser.add_argument("--no-preload", action="store_true",
                        help="do not load the default model in the background right after start-up")
    args = parser.parse_args(argv)
    demo = build_demo(models=args.models)
    app = demo.fundus_app
    if app.choices and app.choices[0].kind != "hub" and not args.no_preload:
        # Load the default model after the server is up, so the first photo does not wait for it.
        def preload() -> None:
            time.sleep(1.0)
            try:
                app.analyser.models.get(app.choices[0].key)
            except Exception:  # noqa: BLE001 - the page reports load errors when the model is used
                pass

        threading.Thread(target=preload, daemon=True).start()
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_FILE_SIZE, show_error=True,
                footer_links=["api", "settings"])


if __name__ == "__main__":
    main()
